"""Classical harmonization: correct a pasted object's lighting to its surroundings, keep its colour.

Lighting, not paint: in Lab space the object's lightness mean and spread (luminance and
contrast) move towards those of a ring of background around it (other objects excluded), the
spread ratio clamped to [1/max_std_ratio, max_std_ratio] so that an object that is naturally
brighter or flatter than its surroundings is nudged, not flattened; ``strength`` blends between
the original and the fully matched lightness. White balance multiplies the object's RGB by the
scene's colour cast (grey world over the background, each gain within [1/MAX_GAIN, MAX_GAIN])
raised to ``white_balance``. The object's own hue and chroma (Lab a, b) are kept unless
``keep_hue`` is off, which moves them towards the ring as well (classical colour transfer:
it makes objects the colour of their surroundings). Only the object's pixels change; its edge
is feathered inwards by ``feather_sigma`` px.
"""

from __future__ import annotations

import cv2
import numpy as np

MIN_RING_PIXELS = 16
MAX_GAIN = 1.15


def background_ring(mask: np.ndarray, others: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` px outside ``mask`` that belong to no other object."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    grown = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)
    return grown & ~mask & ~others


def scene_gains(image: np.ndarray, background: np.ndarray, white_balance: float) -> np.ndarray:
    """Per-channel RGB gains of the scene's colour cast (grey world over ``background``)."""
    means = image[background].astype(np.float64).mean(axis=0) + 1e-6
    gains = np.clip(means / means.mean(), 1.0 / MAX_GAIN, MAX_GAIN)
    return gains**white_balance


def transfer_colour(
    image: np.ndarray,
    mask: np.ndarray,
    others: np.ndarray,
    *,
    strength: float,
    ring_width: int,
    max_std_ratio: float,
    feather_sigma: float,
    white_balance: float = 0.0,
    keep_hue: bool = True,
) -> np.ndarray:
    """Harmonize one object (``mask``) of an RGB uint8 image; return the new image.

    ``others`` marks other objects, kept out of the background statistics. Pixels outside
    ``mask`` are returned as they were. An object without enough background around it is
    returned unchanged.
    """
    ring = background_ring(mask, others, ring_width)
    if ring.sum() < MIN_RING_PIXELS or mask.sum() < MIN_RING_PIXELS:
        return image
    rgb = image.astype(np.float32) / 255.0
    if white_balance > 0:
        gains = scene_gains(image, ~mask & ~others, white_balance).astype(np.float32)
        rgb = np.clip(rgb * gains, 0.0, 1.0)
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    reference = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    channels = [0] if keep_hue else [0, 1, 2]
    object_mean, object_std = lab[mask].mean(axis=0), lab[mask].std(axis=0) + 1e-6
    ring_mean, ring_std = reference[ring].mean(axis=0), reference[ring].std(axis=0) + 1e-6
    ratio = np.clip(ring_std / object_std, 1.0 / max_std_ratio, max_std_ratio)
    matched = (lab - object_mean) * ratio + ring_mean
    blended = lab.copy()
    blended[..., channels] += strength * (matched - lab)[..., channels]
    result_rgb = np.clip(cv2.cvtColor(blended, cv2.COLOR_LAB2RGB), 0.0, 1.0) * 255.0
    alpha = mask.astype(np.float32)
    if feather_sigma > 0:
        alpha = np.minimum(cv2.GaussianBlur(alpha, (0, 0), feather_sigma) * 2.0, 1.0) * mask
    result = alpha[..., None] * result_rgb + (1.0 - alpha[..., None]) * image.astype(np.float32)
    result = np.clip(np.round(result), 0, 255).astype(np.uint8)
    return np.where(mask[..., None], result, image)
