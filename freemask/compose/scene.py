"""Multi-object scenes: cut objects out of single-object samples and paste them with exact labels.

A ``Cutout`` is an object's crop: RGB, alpha in [0, 1] from its soft mask (the uncertainty band
fades out, so edges are feathered, but only within a thin band around the certain mask: a
wide attention band would paste the source's background as a halo), and labels (1 object, 255
uncertain, 0 outside; whatever the source mask's bit depth). Where the source has a truth
mask, the cutout carries it and the scene replays it through the same paste and occlusion
(``Scene.truth``), with the classes it names (a drawn object whose truth is another class stays
that class in the composite's truth). ``Scene`` pastes cutouts in z-order; later objects
occlude earlier ones. ``Scene.finish`` resolves occlusion into the semantic mask (class id per
pixel, in the scene's label dtype: uint8 with 255 = ignore, or uint16 with 65535 = ignore for a
run of more than 254 classes) and per-instance masks, and drops an instance whose visible part
is under a minimum fraction of its pasted area: its remaining pixels become ignore, never a
wrong label.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.typing import DTypeLike

from freemask.records import IGNORE_INDEX, ignore_value

# Objects filling nearly the whole image cannot be cut out: there is no object boundary.
MAX_OBJECT_FRACTION = 0.98
MIN_SIDE = 4


class CutoutError(ValueError):
    """An object cannot be cut out (empty mask, mask covering the whole image)."""


@dataclass(frozen=True)
class Cutout:
    """An object's crop: ``image`` HxWx3 uint8, ``alpha`` HxW float32, ``label`` HxW uint8
    (1 object, 255 uncertain, 0 outside); ``truth`` when the source has truth: HxW bool (the
    object's exact pixels, of the pasted class) or uint8/uint16 (their class ids, 0
    background)."""

    image: np.ndarray
    alpha: np.ndarray
    label: np.ndarray
    truth: np.ndarray | None = None

    @property
    def aspect(self) -> float:
        """Width over height."""
        return self.label.shape[1] / self.label.shape[0]

    @property
    def object_height_fraction(self) -> float:
        """The certain object's height over the crop's (the rest is the band): size priors
        are about the object, so a box is this much taller than the object it holds."""
        rows = np.nonzero((self.label == 1).any(axis=1))[0]
        return (rows.max() + 1 - rows.min()) / self.label.shape[0] if rows.size else 1.0


def cut_out(
    image: np.ndarray,
    label: np.ndarray,
    soft: np.ndarray | None,
    band: tuple[float, float],
    band_width: float = 0.04,
    truth: np.ndarray | None = None,
    extent: np.ndarray | None = None,
) -> Cutout:
    """Crop a single-object sample to its object (label 1 or its class id; ignore uncertain:
    255, or 65535 in a 16-bit label).

    Alpha is 1 on object pixels, 0 outside object and band, and on band pixels rises with the
    soft mask from the band's low to high end; band pixels farther than ``band_width`` (a
    fraction of the image's longer side) from the certain mask are cut off. ``extent`` (bool,
    the object's whole extent where known) is pasted too, alpha 1, its pixels beyond the label
    ignore. ``truth`` (bool, the object's exact pixels, or class ids) is cropped alongside.
    Raises CutoutError for an empty mask or one that covers the whole image.
    """
    ignore = ignore_value(label)
    inside = (label != 0) & (label != ignore)
    if not inside.any():
        raise CutoutError("empty object mask")
    if inside.mean() >= MAX_OBJECT_FRACTION:
        raise CutoutError("object mask covers the whole image")
    uncertain = label == ignore
    reach = max(1, round(band_width * max(label.shape)))
    near = cv2.dilate(inside.astype(np.uint8), np.ones((2 * reach + 1,) * 2, np.uint8)) > 0
    uncertain &= near
    alpha = inside.astype(np.float32)
    if soft is not None and uncertain.any():
        low, high = band
        ramp = np.clip((soft.astype(np.float32) - low) / max(high - low, 1e-6), 0.0, 1.0)
        alpha[uncertain] = ramp[uncertain]
    missed = np.zeros_like(inside) if extent is None else extent & ~inside
    alpha[missed] = 1.0
    rows, cols = np.nonzero(alpha > 0)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    unsure = (uncertain & (alpha > 0)) | missed
    labels = np.where(inside, 1, np.where(unsure, IGNORE_INDEX, 0)).astype(np.uint8)
    return Cutout(
        image=image[top:bottom, left:right].copy(),
        alpha=alpha[top:bottom, left:right].copy(),
        label=labels[top:bottom, left:right].copy(),
        truth=None if truth is None else truth[top:bottom, left:right].copy(),
    )


@dataclass
class _Pasted:
    class_name: str
    class_id: int
    object_mask: np.ndarray  # full-image bool: the object's certain pixels
    cover: np.ndarray  # full-image bool: pixels this object hides (alpha >= 0.5)
    uncertain: np.ndarray  # full-image bool: the object's uncertain band
    alpha: np.ndarray  # full-image float32
    truth: np.ndarray | None  # full-image class ids (scene's label dtype) of the object's truth


@dataclass
class Instance:
    """A resolved instance: its class, visible mask, pasted alpha and visible fraction."""

    class_name: str
    class_id: int
    mask: np.ndarray
    alpha: np.ndarray
    visible_fraction: float
    kept: bool


@dataclass
class Scene:
    """A background being composed; ``paste`` objects in z-order, then ``finish``. ``labels``
    is the run's label dtype (``records.label_dtype``) that the semantic and truth masks use."""

    image: np.ndarray
    pasted: list[_Pasted] = field(default_factory=list)
    labels: DTypeLike = np.uint8

    def __post_init__(self) -> None:
        self.image = self.image.astype(np.float32)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.image.shape[0], self.image.shape[1]

    def paste(
        self,
        cutout: Cutout,
        box: tuple[int, int, int, int],
        flip: bool,
        class_name: str,
        class_id: int,
    ) -> None:
        """Paste ``cutout`` resized to ``box`` (x, y, w, h, inside the image), mirrored if ``flip``."""
        x, y, width, height = box
        rows, cols = self.size
        if width < MIN_SIDE or height < MIN_SIDE or x < 0 or y < 0:
            raise CutoutError(f"box {box} is too small or outside the image")
        if x + width > cols or y + height > rows:
            raise CutoutError(f"box {box} leaves the {cols}x{rows} image")
        image = cv2.resize(cutout.image, (width, height), interpolation=cv2.INTER_LINEAR)
        alpha = cv2.resize(cutout.alpha, (width, height), interpolation=cv2.INTER_LINEAR)
        label = cv2.resize(cutout.label, (width, height), interpolation=cv2.INTER_NEAREST)
        if flip:
            image, alpha, label = image[:, ::-1], alpha[:, ::-1], label[:, ::-1]
        region = self.image[y : y + height, x : x + width]
        region[:] = alpha[..., None] * image + (1.0 - alpha[..., None]) * region
        full_alpha = np.zeros(self.size, dtype=np.float32)
        full_alpha[y : y + height, x : x + width] = alpha
        object_mask = np.zeros(self.size, dtype=bool)
        object_mask[y : y + height, x : x + width] = label == 1
        uncertain = np.zeros(self.size, dtype=bool)
        uncertain[y : y + height, x : x + width] = label == IGNORE_INDEX
        cover = full_alpha >= 0.5
        truth = None
        if cutout.truth is not None:
            ids = cutout.truth.astype(self.labels)
            if cutout.truth.dtype == bool:
                ids *= class_id
            pasted_truth = cv2.resize(ids, (width, height), interpolation=cv2.INTER_NEAREST)
            truth = np.zeros(self.size, dtype=self.labels)
            truth[y : y + height, x : x + width] = pasted_truth[:, ::-1] if flip else pasted_truth
        self.pasted.append(
            _Pasted(class_name, class_id, object_mask, cover, uncertain, full_alpha, truth)
        )

    def truth(self) -> np.ndarray | None:
        """The exact semantic label of the composed image, or None unless every pasted object
        has truth: each pixel shows the topmost layer pasted over it with alpha >= 0.5 (the
        class of that layer's source pixel in its truth, background included)."""
        if not self.pasted or any(item.truth is None for item in self.pasted):
            return None
        semantic = np.zeros(self.size, dtype=self.labels)
        for item in self.pasted:  # bottom of the stack first
            semantic[item.cover] = item.truth[item.cover]
        return semantic

    def finish(self, min_visible_fraction: float) -> tuple[np.ndarray, np.ndarray, list[Instance]]:
        """Resolve occlusion: return the RGB image, semantic mask and every pasted instance.

        Instances with ``kept`` False were dropped for being mostly hidden; their visible
        pixels are ignore (255, or 65535 in a 16-bit scene) in the semantic mask.
        """
        ignore = ignore_value(self.labels)
        semantic = np.zeros(self.size, dtype=self.labels)
        hidden = np.zeros(self.size, dtype=bool)
        instances: list[Instance] = []
        for item in reversed(self.pasted):  # top of the stack first
            visible = item.object_mask & ~hidden
            area = int(item.object_mask.sum())
            fraction = float(visible.sum()) / area if area else 0.0
            kept = area > 0 and fraction >= min_visible_fraction
            semantic[visible] = item.class_id if kept else ignore
            semantic[item.uncertain & ~hidden & ~visible] = ignore
            alpha = np.where(hidden, 0.0, item.alpha).astype(np.float32)
            instances.append(
                Instance(item.class_name, item.class_id, visible, alpha, fraction, kept)
            )
            hidden |= item.cover | item.object_mask
        instances.reverse()
        image = np.clip(np.round(self.image), 0, 255).astype(np.uint8)
        return image, semantic, instances
