"""Move an init image's label onto its redraw: image-to-image keeps the layout, not the pixels.

A redraw at strength 0.6 moves its object by about a pixel at 128 px (more for small objects),
so the start image's mask, taken as the redraw's truth, is off by that much and counts the
object's rim as label errors. The shift is found from the two images alone, no segmenter: the
integer translation, each axis within ``reach`` pixels, that best correlates the start image's
edges around the object with the redraw's (normalised cross-correlation of colour gradient
magnitude, ``cv2.matchTemplate``). Only a translation: a redraw that reshapes its object is not
registered by this, and its truth stays off by the reshaping.
"""

from __future__ import annotations

import cv2
import numpy as np

from freemask.records import ignore_value

# Around the object, the edges that locate it: its outline and a little of what touches it.
MARGIN = 3


def edge_strength(image: np.ndarray) -> np.ndarray:
    """Colour gradient magnitude (float32 HxW) of an RGB uint8 image."""
    pixels = image.astype(np.float32)
    dx = cv2.Sobel(pixels, cv2.CV_32F, 1, 0, ksize=3)
    dy = cv2.Sobel(pixels, cv2.CV_32F, 0, 1, ksize=3)
    return np.sqrt((dx * dx + dy * dy).sum(axis=-1))


def redraw_shift(
    start: np.ndarray, drawn: np.ndarray, truth: np.ndarray, reach: int
) -> tuple[int, int]:
    """The (rows, cols) shift that best moves ``start``'s object (``truth`` non-zero, not
    ignore) onto ``drawn``, each within ``reach`` pixels; (0, 0) for no object or ``reach`` 0.
    A tie, or edges that do not correlate anywhere, keeps (0, 0)."""
    obj = (truth != 0) & (truth != ignore_value(truth))
    if reach <= 0 or not obj.any():
        return 0, 0
    rows, cols = np.nonzero(obj)
    height, width = truth.shape
    top, bottom = max(rows.min() - MARGIN, 0), min(rows.max() + 1 + MARGIN, height)
    left, right = max(cols.min() - MARGIN, 0), min(cols.max() + 1 + MARGIN, width)
    template = edge_strength(start)[top:bottom, left:right]
    padded = cv2.copyMakeBorder(
        edge_strength(drawn), reach, reach, reach, reach, cv2.BORDER_REFLECT
    )
    window = padded[top : bottom + 2 * reach, left : right + 2 * reach]
    scores = cv2.matchTemplate(window, template, cv2.TM_CCOEFF_NORMED)
    scores = np.nan_to_num(scores, nan=-1.0)
    best = np.unravel_index(int(np.argmax(scores)), scores.shape)
    if scores[best] <= scores[reach, reach]:
        return 0, 0
    return int(best[0]) - reach, int(best[1]) - reach


def shifted(label: np.ndarray, shift: tuple[int, int]) -> np.ndarray:
    """``label`` moved by ``shift`` (rows, cols); uncovered pixels become background (0)."""
    down, right = shift
    moved = np.zeros_like(label)
    height, width = label.shape
    source = label[max(-down, 0) : height - max(down, 0), max(-right, 0) : width - max(right, 0)]
    moved[max(down, 0) : height - max(-down, 0), max(right, 0) : width - max(-right, 0)] = source
    return moved
