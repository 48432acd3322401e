"""Classical harmonization: match a pasted object's colour statistics to its surroundings.

In Lab space, the object's per-channel mean and spread move towards those of a ring of
background around it (other objects excluded). The spread ratio is clamped to
[1/max_std_ratio, max_std_ratio] so that an object that is naturally more or less colourful
than its surroundings is nudged, not flattened; ``strength`` blends between the original and the
fully matched colours. Edges are feathered with a Gaussian of ``feather_sigma`` px; optional
Poisson blending (OpenCV's seamless clone) then fixes the remaining seam.
"""

from __future__ import annotations

import cv2
import numpy as np

MIN_RING_PIXELS = 16


def background_ring(mask: np.ndarray, others: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` px outside ``mask`` that belong to no other object."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    grown = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)
    return grown & ~mask & ~others


def transfer_colour(
    image: np.ndarray,
    mask: np.ndarray,
    others: np.ndarray,
    *,
    strength: float,
    ring_width: int,
    max_std_ratio: float,
    feather_sigma: float,
) -> np.ndarray:
    """Harmonize one object (``mask``) of an RGB uint8 image; return the new image.

    ``others`` marks other objects, kept out of the background statistics. An object without
    enough background around it is returned unchanged.
    """
    ring = background_ring(mask, others, ring_width)
    if ring.sum() < MIN_RING_PIXELS or mask.sum() < MIN_RING_PIXELS:
        return image
    lab = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    object_mean, object_std = lab[mask].mean(axis=0), lab[mask].std(axis=0) + 1e-6
    ring_mean, ring_std = lab[ring].mean(axis=0), lab[ring].std(axis=0) + 1e-6
    ratio = np.clip(ring_std / object_std, 1.0 / max_std_ratio, max_std_ratio)
    matched = (lab - object_mean) * ratio + ring_mean
    blended = lab + strength * (matched - lab)
    rgb = np.clip(cv2.cvtColor(blended.astype(np.float32), cv2.COLOR_LAB2RGB), 0.0, 1.0) * 255.0
    alpha = mask.astype(np.float32)
    if feather_sigma > 0:
        alpha = np.minimum(cv2.GaussianBlur(alpha, (0, 0), feather_sigma) * 2.0, 1.0) * mask
    result = alpha[..., None] * rgb + (1.0 - alpha[..., None]) * image.astype(np.float32)
    return np.clip(np.round(result), 0, 255).astype(np.uint8)


def poisson_blend(image: np.ndarray, harmonized: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Seamlessly clone the harmonized object into the image (OpenCV, normal clone)."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return harmonized
    centre = (int((cols.min() + cols.max() + 1) // 2), int((rows.min() + rows.max() + 1) // 2))
    clone_mask = (mask * 255).astype(np.uint8)
    try:
        return cv2.seamlessClone(harmonized, image, clone_mask, centre, cv2.NORMAL_CLONE)
    except cv2.error:  # objects touching the border cannot be cloned; keep the feathered result
        return harmonized
