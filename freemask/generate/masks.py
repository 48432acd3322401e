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
    valid = store.token_valid.to(tokens.dtype)[..., None]
    soft = (tokens * valid).sum(dim=1) / valid.sum(dim=1)  # [batch, h*w]

    # 2. Self-attention refinement: propagate along pixels that attend to each other.
    if self_attention is not None:
        for _ in range(config.self_attention_power):
            soft = torch.bmm(self_attention, soft[..., None])[..., 0]
    soft = _normalise(soft)

    # 3. Upsample to the image.
    soft = F.interpolate(
        soft.reshape(-1, 1, *grid), size=image_size, mode="bilinear", align_corners=False
    )
    soft = soft[:, 0].clamp(0.0, 1.0).cpu().numpy()

    # 4-5. Per sample: label mask and scores.
    return [_label(sample_soft, config) for sample_soft in soft]


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


def _label(soft: np.ndarray, config: GenerateConfig) -> ObjectMask:
    """Binarise one soft mask, mark the uncertain band as ignore, drop tiny components, score."""
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
    contrast = 0.0
    if object_pixels.any() and background_pixels.any():
        contrast = float(soft[object_pixels].mean() - soft[background_pixels].mean())
    scores = {
        "attention_confidence": round(max(contrast, 0.0), 6),
        "foreground_fraction": round(float(object_pixels.mean()), 6),
        "ignored_fraction": round(float((label == IGNORE_INDEX).mean()), 6),
        "threshold": round(float(threshold), 6),
    }
    return ObjectMask(soft=soft.astype(np.float16), label=label, scores=scores)
