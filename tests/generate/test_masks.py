"""From attention aggregates to masks, on stores filled with known maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freemask.config import GenerateConfig
from freemask.errors import FreemaskError
from freemask.generate.attention import AttentionStore
from freemask.generate.masks import masks_from_attention, rejection_reason
from freemask.records import IGNORE_INDEX


def blob(side: int, top: int, left: int, size: int) -> torch.Tensor:
    """A side x side map that is 1 on a square and a faint 0.05 elsewhere."""
    grid = torch.full((side, side), 0.05)
    grid[top : top + size, left : left + size] = 1.0
    return grid


def filled_store(maps: list[torch.Tensor], self_attention: torch.Tensor | None = None):
    """A store as if one step had captured ``maps`` (one per sample) at resolution 32."""
    side = maps[0].shape[-1]
    store = AttentionStore((side, side), [32], 32 if self_attention is not None else None)
    store.begin([[5]] * len(maps), num_steps=1)
    store.cross_sums[32] = torch.stack([m.flatten() for m in maps])[:, None, :]
    store.cross_counts[32] = 1
    if self_attention is not None:
        store.self_sums[32] = self_attention
        store.self_counts[32] = 1
    return store


def settings(**fields) -> GenerateConfig:
    return GenerateConfig(**{"ignore_band": (0.5, 0.5), "min_component_fraction": 0.0, **fields})


def test_mask_covers_the_attended_square_at_image_size() -> None:
    store = filled_store([blob(16, 4, 6, 6)])
    (mask,) = masks_from_attention(store, settings(), (64, 64), ["s0"])
    assert mask.soft.shape == mask.label.shape == (64, 64)
    assert mask.soft.dtype == np.float16 and mask.label.dtype == np.uint8
    truth = np.zeros((64, 64), dtype=bool)
    truth[16:40, 24:48] = True
    foreground = mask.label == 1
    iou = (foreground & truth).sum() / (foreground | truth).sum()
    assert iou > 0.8
    assert mask.scores["attention_confidence"] > 0.5


def test_each_sample_of_a_batch_gets_its_own_mask() -> None:
    store = filled_store([blob(16, 0, 0, 4), blob(16, 10, 10, 4)])
    first, second = masks_from_attention(store, settings(), (32, 32), ["a", "b"])
    assert first.label[:8, :8].all() and not first.label[24:, 24:].any()
    assert second.label[22:26, 22:26].all() and not second.label[:8, :8].any()


def test_uncertainty_band_is_marked_ignore() -> None:
    ramp = torch.linspace(0, 1, 16).repeat(16, 1)
    store = filled_store([ramp])
    (mask,) = masks_from_attention(
        store, settings(ignore_band=(0.3, 0.7), threshold="fixed"), (16, 16), ["s"]
    )
    soft = mask.soft.astype(np.float32)
    assert (mask.label[(soft > 0.3) & (soft < 0.7)] == IGNORE_INDEX).all()
    assert (mask.label[soft > 0.75] == 1).all() and (mask.label[soft < 0.25] == 0).all()
    assert mask.scores["ignored_fraction"] > 0


def test_tiny_components_are_dropped() -> None:
    grid = blob(32, 4, 4, 12)
    grid[28, 28] = 1.0  # a one-cell speck far from the object
    store = filled_store([grid])
    keep = masks_from_attention(store, settings(), (32, 32), ["s"])[0]
    assert keep.label[28, 28] == 1
    drop = masks_from_attention(store, settings(min_component_fraction=0.01), (32, 32), ["s"])[0]
    assert drop.label[28, 28] == 0 and drop.label[8, 8] == 1


def test_fixed_threshold_is_applied() -> None:
    ramp = torch.linspace(0, 1, 16).repeat(16, 1)
    store = filled_store([ramp])
    low = masks_from_attention(
        store, settings(threshold="fixed", fixed_threshold=0.2), (16, 16), ["s"]
    )
    high = masks_from_attention(
        store, settings(threshold="fixed", fixed_threshold=0.8), (16, 16), ["s"]
    )
    assert (low[0].label == 1).sum() > (high[0].label == 1).sum() > 0


def test_self_attention_spreads_the_mask_to_grouped_pixels() -> None:
    side = 8
    cross = torch.full((side, side), 0.0)
    cross[0, 0] = 1.0  # attention found one cell of an object that covers the left half
    group = torch.zeros(side, side, dtype=torch.bool)
    group[:, : side // 2] = True
    flat = group.flatten().float()
    affinity = torch.outer(flat, flat) + torch.outer(1 - flat, 1 - flat)
    self_attention = (affinity / affinity.sum(dim=1, keepdim=True))[None]
    store = filled_store([cross], self_attention)
    (mask,) = masks_from_attention(store, settings(self_attention_power=1), (side, side), ["s"])
    assert (mask.label[:, : side // 2] == 1).all() and (mask.label[:, side // 2 :] == 0).all()


def test_non_finite_attention_names_the_sample() -> None:
    bad = blob(8, 0, 0, 4)
    bad[2, 2] = float("nan")
    store = filled_store([blob(8, 0, 0, 4), bad])
    with pytest.raises(FreemaskError, match="sample-b"):
        masks_from_attention(store, settings(), (16, 16), ["sample-a", "sample-b"])


def test_flat_attention_gives_an_empty_mask() -> None:
    store = filled_store([torch.full((8, 8), 0.3)])
    (mask,) = masks_from_attention(store, settings(), (16, 16), ["s"])
    assert mask.is_empty


def inverted_blob(side: int, top: int, left: int, size: int) -> torch.Tensor:
    """Attention that marks everything but the object: what a model that has not learnt the
    class word draws (the toy model's star and cone)."""
    return 1.05 - blob(side, top, left, size)


def test_a_plausible_object_mask_is_accepted() -> None:
    (mask,) = masks_from_attention(filled_store([blob(16, 4, 6, 6)]), settings(), (64, 64), ["s"])
    assert rejection_reason(mask, settings()) is None


def test_attention_on_the_background_is_rejected_for_area_or_borders() -> None:
    (mask,) = masks_from_attention(
        filled_store([inverted_blob(16, 5, 5, 6)]), settings(), (64, 64), ["s"]
    )
    assert mask.scores["foreground_fraction"] > 0.6 and mask.scores["border_sides"] == 4
    assert rejection_reason(mask, settings()).startswith("area:")
    assert rejection_reason(mask, settings(max_foreground_fraction=1.0)).startswith("borders:")
    assert rejection_reason(mask, settings(reject_implausible=False)) is None


def test_a_self_attention_that_turns_the_map_to_the_background_fails_polarity() -> None:
    # Self-attention in which background pixels attend to the square and square pixels to the
    # background: the refined map marks the background, the class's cross-attention the square.
    side = 8
    square = blob(side, 2, 2, 3)
    inside = (square.flatten() > 0.5).float()
    rows = torch.where(
        inside[:, None] > 0, (1 - inside) / (1 - inside).sum(), inside / inside.sum()
    )
    self_attention = rows[None]
    (mask,) = masks_from_attention(
        filled_store([square], self_attention), settings(), (32, 32), ["s"]
    )
    assert mask.scores["polarity"] < 0
    reason = rejection_reason(mask, settings(max_foreground_fraction=1.0, max_border_sides=4))
    assert reason.startswith("polarity:")
