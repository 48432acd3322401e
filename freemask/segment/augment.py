"""Training augmentation for the segmenter: flip, scale jitter with crop or pad, colour jitter.

A segmenter trained on a few thousand synthetic scenes memorises them unless each step shows
them at another scale and in another light (Mask2Former's own recipe trains with large-scale
jitter). Zooming out pads with the ImageNet mean colour and the ignore label, so padding is
never taught as a class. Hue is left alone: in most label spaces an object's colour says
something about what it is, and the pasted objects already vary in it. Every draw comes from the
caller's generator, so a resumed training run takes the same augmented batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from freemask.records import ignore_value

PAD_COLOUR = (124, 116, 104)  # the ImageNet mean: zero after normalisation
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class Augmentation:
    """Scale range (relative to the training side; (1, 1) keeps the scale) and the colour
    jitter strength (brightness, contrast and saturation each scaled by 1 +- ``colour``)."""

    scale: tuple[float, float] = (1.0, 1.0)
    colour: float = 0.0


def augment_example(
    image: np.ndarray,
    semantic: np.ndarray,
    size: int,
    rng: np.random.Generator,
    augmentation: Augmentation,
) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` x ``size`` RGB uint8 image and its label map, flipped with probability 0.5,
    rescaled by a log-uniform draw from ``augmentation.scale``, cropped or padded at a random
    offset, then colour-jittered."""
    import cv2

    flip = rng.random() < 0.5
    low, high = augmentation.scale
    factor = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    side = max(1, round(size * factor))
    image = cv2.resize(image, (side, side), interpolation=cv2.INTER_LINEAR)
    semantic = cv2.resize(semantic, (side, side), interpolation=cv2.INTER_NEAREST)
    if flip:
        image, semantic = image[:, ::-1], semantic[:, ::-1]
    image, semantic = _crop_or_pad(image, semantic, size, rng)
    if augmentation.colour > 0:
        image = _jitter_colour(image, rng, augmentation.colour)
    return np.ascontiguousarray(image), np.ascontiguousarray(semantic)


def _crop_or_pad(
    image: np.ndarray, semantic: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    side = image.shape[0]
    if side >= size:
        top, left = (int(value) for value in rng.integers(0, side - size + 1, size=2))
        return image[top : top + size, left : left + size], semantic[
            top : top + size, left : left + size
        ]
    canvas = np.empty((size, size, 3), dtype=np.uint8)
    canvas[:] = PAD_COLOUR
    labels = np.full((size, size), ignore_value(semantic), dtype=semantic.dtype)
    top, left = (int(value) for value in rng.integers(0, size - side + 1, size=2))
    canvas[top : top + side, left : left + side] = image
    labels[top : top + side, left : left + side] = semantic
    return canvas, labels


def _jitter_colour(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    brightness, contrast, saturation = rng.uniform(1 - strength, 1 + strength, size=3)
    pixels = image.astype(np.float32) * brightness
    pixels = (pixels - pixels.mean()) * contrast + pixels.mean()
    grey = (pixels @ LUMA)[..., None]
    pixels = grey + (pixels - grey) * saturation
    return np.clip(pixels + 0.5, 0, 255).astype(np.uint8)
