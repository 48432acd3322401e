"""From captured attention to masks: soft mask in [0, 1], hard label mask, confidence score."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from freemask.config import GenerateConfig
from freemask.errors import FreemaskError
from freemask.generate.attention import AttentionStore
from freemask.records import IGNORE_INDEX


@dataclass
class ObjectMask:
    """One sample's masks: ``soft`` float in [0, 1]; ``label`` 0 background, 1 object, 255 ignore."""

    soft: np.ndarray
    label: np.ndarray
    scores: dict[str, float]

    @property
    def is_empty(self) -> bool:
        return not (self.label == 1).any()


def masks_from_attention(
    store: AttentionStore,
    config: GenerateConfig,
    image_size: tuple[int, int],
    sample_ids: list[str],
) -> list[ObjectMask]:
    """Turn a store's aggregates into one ObjectMask per sample of the batch.

    1. cross-attention per token, averaged over resolutions on one grid, normalised per token,
       averaged over the class's tokens; 2. refined by self-attention, soft = A_self^tau . A_cross;
    3. upsampled to the image; 4. binarised (Otsu or fixed), uncertainty band -> 255, tiny
    components dropped; 5. a confidence score.
    Raises FreemaskError naming the samples whose attention is not finite.
    """
    cross = store.cross_maps()
    self_attention = store.self_map()
    _check_finite(
        [*cross.values(), *([self_attention] if self_attention is not None else [])], sample_ids
    )

    # 1. Cross-attention on the self-attention grid (or the finest captured grid).
    if self_attention is not None:
        grid = store.grid_of(self_attention.shape[-1])
    else:
        grid = max(
            (tuple(maps.shape[-2:]) for maps in cross.values()), key=lambda size: size[0] * size[1]
        )
    resized = [
        F.interpolate(maps, size=grid, mode="bilinear", align_corners=False)
        for maps in cross.values()
    ]
    tokens = torch.stack(resized).mean(dim=0)  # [batch, tokens, h, w]
    tokens = _normalise(tokens.flatten(2))
    valid = store.token_valid.to(tokens.device, tokens.dtype)[..., None]
    soft = (tokens * valid).sum(dim=1) / valid.sum(dim=1)  # [batch, h*w]
    cross_only = _upsample(soft, grid, image_size)

    # 2. Self-attention refinement: propagate along pixels that attend to each other.
    if self_attention is not None:
        for _ in range(config.self_attention_power):
            soft = torch.bmm(self_attention, soft[..., None])[..., 0]
    soft = _normalise(soft)

    # 3. Upsample to the image.
    soft = _upsample(soft, grid, image_size)

    # 4-5. Per sample: label mask and scores.
    return [
        _label(sample_soft, sample_cross, config)
        for sample_soft, sample_cross in zip(soft, cross_only, strict=True)
    ]


def _upsample(maps: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """[batch, h*w] maps on ``grid`` -> [batch, *size] float arrays in [0, 1]."""
    maps = F.interpolate(
        maps.reshape(-1, 1, *grid), size=size, mode="bilinear", align_corners=False
    )
    return maps[:, 0].clamp(0.0, 1.0).cpu().numpy()


def _normalise(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each map along the last dimension to [0, 1]."""
    low = maps.amin(dim=-1, keepdim=True)
    high = maps.amax(dim=-1, keepdim=True)
    return (maps - low) / (high - low).clamp_min(1e-12)


def _check_finite(tensors: list[torch.Tensor], sample_ids: list[str]) -> None:
    bad: set[int] = set()
    for tensor in tensors:
        finite = torch.isfinite(tensor.flatten(1)).all(dim=1)
        bad.update(int(index) for index in torch.nonzero(~finite).flatten())
    if bad:
        names = ", ".join(sample_ids[index] for index in sorted(bad))
        raise FreemaskError(
            f"non-finite attention values for sample(s) {names}; check the model's dtype and weights"
        )


def _label(soft: np.ndarray, cross: np.ndarray, config: GenerateConfig) -> ObjectMask:
    """Binarise one soft mask, mark the uncertain band as ignore, drop tiny components, score.

    ``cross`` is the class tokens' cross-attention before self-attention refinement: its
    contrast between the mask and the rest (``polarity``) is negative when the refined map
    has turned towards the background."""
    if config.threshold == "otsu":
        threshold, _ = cv2.threshold(
            np.round(soft * 255).astype(np.uint8), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU
        )
        threshold /= 255.0
    else:
        threshold = config.fixed_threshold
    foreground = soft > threshold
    count, components, stats, _ = cv2.connectedComponentsWithStats(
        foreground.astype(np.uint8), connectivity=8
    )
    min_area = config.min_component_fraction * soft.size
    for component in range(1, count):
        if stats[component, cv2.CC_STAT_AREA] < min_area:
            foreground[components == component] = False
    label = foreground.astype(np.uint8)
    low, high = config.ignore_band
    if high > low:
        label[(soft >= low) & (soft <= high)] = IGNORE_INDEX
    object_pixels = label == 1
    background_pixels = label == 0
    contrast = polarity = 0.0
    if object_pixels.any() and background_pixels.any():
        contrast = float(soft[object_pixels].mean() - soft[background_pixels].mean())
        polarity = float(cross[object_pixels].mean() - cross[background_pixels].mean())
    scores = {
        "attention_confidence": round(max(contrast, 0.0), 6),
        "polarity": round(polarity, 6),
        "foreground_fraction": round(float(object_pixels.mean()), 6),
        "ignored_fraction": round(float((label == IGNORE_INDEX).mean()), 6),
        "border_sides": float(border_sides(object_pixels)),
        "threshold": round(float(threshold), 6),
    }
    return ObjectMask(soft=soft.astype(np.float16), label=label, scores=scores)


def border_sides(mask: np.ndarray) -> int:
    """How many of the image's four sides the mask touches."""
    return int(mask[0].any()) + int(mask[-1].any()) + int(mask[:, 0].any()) + int(mask[:, -1].any())


def rejection_reason(mask: ObjectMask, config: GenerateConfig) -> str | None:
    """Why a mask is implausible as one object's, or None: empty, inverted (attention inside
    lower than outside), too large, touching too many image sides, or low confidence."""
    scores = mask.scores
    if mask.is_empty:
        return "empty: no pixel above the threshold"
    if not config.reject_implausible:
        return None
    if scores["polarity"] < config.min_polarity:
        return (
            f"polarity: cross-attention inside the mask minus outside is {scores['polarity']:.3f} "
            f"< {config.min_polarity} (the map marks the background)"
        )
    if scores["foreground_fraction"] > config.max_foreground_fraction:
        return (
            f"area: mask covers {scores['foreground_fraction']:.1%} of the image "
            f"> max_foreground_fraction {config.max_foreground_fraction}"
        )
    if scores["border_sides"] > config.max_border_sides:
        return (
            f"borders: mask touches {int(scores['border_sides'])} image sides "
            f"> max_border_sides {config.max_border_sides}"
        )
    if scores["attention_confidence"] < config.min_attention_confidence:
        return (
            f"confidence: attention_confidence {scores['attention_confidence']:.3f} "
            f"< min_attention_confidence {config.min_attention_confidence}"
        )
    return None
