"""Refinement parts (pairs, labels, loss, sparse walk) and the measured gain on real photographs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freemask.evaluation import (
    REFINE_CASES,
    degrade_mask,
    exact_composites,
    iou,
    refine_cases,
    sample_photographs,
)
from freemask.quality import LabelQuality
from freemask.refine import (
    AffinityRefiner,
    GuidedFilterRefiner,
    affinity_labels,
    band_labels,
    pair_offsets,
    propagate,
    refine_soft,
    train_affinity,
    transition_matrix,
)
from freemask.refine.affinity import pair_affinity, shifted_pairs


@pytest.fixture(scope="module")
def degraded_set():
    """12 composites with exact masks, and their masks degraded as attention masks look."""
    composites = exact_composites(sample_photographs(), count=12, size=128, seed=0)
    rng = np.random.default_rng(0)
    return composites, [degrade_mask(item.mask, rng) for item in composites]


def test_pair_offsets_cover_each_neighbour_pair_once() -> None:
    offsets = pair_offsets(5)
    disc = [(dy, dx) for dy in range(-5, 6) for dx in range(-5, 6) if 0 < dy * dy + dx * dx <= 25]
    assert len(offsets) * 2 == len(disc)
    assert not any((-dy, -dx) in offsets for dy, dx in offsets)


def test_affinity_labels_mark_confident_cells_only() -> None:
    soft = np.zeros((2, 8, 8), np.float32)
    soft[0, :4, :4] = 0.9
    soft[1, 4:, 4:] = 0.9
    soft[0, :4, 4:] = 0.5  # uncertain
    labels = affinity_labels(soft, (4, 4), low=0.35, high=0.6)
    assert (labels[:2, :2] == 1).all() and (labels[2:, 2:] == 2).all()
    assert (labels[:2, 2:] == 255).all() and (labels[2:, :2] == 0).all()


def test_sparse_transition_matches_the_dense_computation() -> None:
    torch.manual_seed(0)
    features = torch.rand(4, 6, 7)
    sparse_t = transition_matrix(features, radius=2, beta=3.0).toarray()
    flat = features.reshape(4, -1)
    positions = [(r, c) for r in range(6) for c in range(7)]
    dense = np.zeros((42, 42))
    for i, (ri, ci) in enumerate(positions):
        for j, (rj, cj) in enumerate(positions):
            if (ri - rj) ** 2 + (ci - cj) ** 2 <= 4:
                dense[i, j] = float(torch.exp(-(flat[:, i] - flat[:, j]).abs().mean())) ** 3.0
    dense /= dense.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(sparse_t, dense, atol=1e-6)


def test_walk_with_ideal_affinities_snaps_a_coarse_mask_to_the_object(degraded_set) -> None:
    composites, softs = degraded_set
    truth = composites[0].mask
    grid = torch.nn.functional.adaptive_avg_pool2d(
        torch.tensor(truth, dtype=torch.float32)[None], (32, 32)
    )
    transition = transition_matrix(torch.cat([grid * 4, torch.zeros_like(grid)]), 5, 8.0)
    coarse = torch.nn.functional.adaptive_avg_pool2d(torch.tensor(softs[0])[None], (32, 32))
    scores = torch.cat([1 - coarse, coarse]).reshape(2, -1).numpy()
    walked = propagate(transition, scores, logt=6).reshape(2, 32, 32)
    upsampled = torch.nn.functional.interpolate(
        torch.tensor(walked)[None], size=truth.shape, mode="bilinear"
    )[0]
    assert iou(upsampled.argmax(0).numpy() == 1, truth) > iou(softs[0] > 0.5, truth)


def test_shifted_pairs_line_up_neighbours() -> None:
    grid = torch.arange(12).reshape(3, 4)
    first, second = shifted_pairs(grid, (1, -1))
    assert (second - first == 4 - 1).all()
    assert pair_affinity(torch.ones(2, 3, 3), torch.ones(2, 3, 3)).eq(1).all()


def test_training_lowers_the_affinity_loss(degraded_set) -> None:
    composites, softs = degraded_set

    def examples():
        return ((item.image, soft[None]) for item, soft in zip(composites, softs, strict=True))

    _, log = train_affinity(
        examples, epochs=6, learning_rate=1e-3, radius=5, thresholds=(0.35, 0.6)
    )
    assert log.epoch_losses[-1] < 0.8 * log.epoch_losses[0]
    assert set(log.parts) == {"background", "foreground", "negative"}


def test_both_refiners_raise_mean_iou_on_real_photographs(degraded_set) -> None:
    composites, softs = degraded_set
    before = np.mean(
        [iou(soft > 0.5, item.mask) for item, soft in zip(composites, softs, strict=True)]
    )

    def mean_iou(refiner) -> float:
        scores = [
            iou(refiner.refine(item.image, soft[None]).argmax(0) == 1, item.mask)
            for item, soft in zip(composites, softs, strict=True)
        ]
        return float(np.mean(scores))

    guided = mean_iou(GuidedFilterRefiner(radius_fraction=1 / 16, eps=1e-3))

    def examples():
        return ((item.image, soft[None]) for item, soft in zip(composites, softs, strict=True))

    model, _ = train_affinity(
        examples, epochs=30, learning_rate=1e-3, radius=5, thresholds=(0.35, 0.6)
    )
    affinity = mean_iou(AffinityRefiner(model, radius=5, beta=8.0, logt=6))
    print(f"mean IoU: degraded {before:.3f}, guided filter {guided:.3f}, affinity {affinity:.3f}")
    assert guided > before + 0.02
    assert affinity > before + 0.02


@pytest.mark.parametrize("kind", REFINE_CASES)
def test_default_refinement_is_never_worse_than_thresholding(kind: str) -> None:
    cases = refine_cases(kind, sample_photographs(), count=4, size=96, seed=0)

    def label_miou(softs: list[np.ndarray]) -> float:
        quality = LabelQuality(["object"])
        for case, soft in zip(cases, softs, strict=True):
            quality.add(band_labels(soft[None], 0.35, 0.6), case.mask.astype(np.uint8))
        return quality.summary()["miou"]

    refined = [
        refine_soft(
            GuidedFilterRefiner(),
            case.image,
            case.soft[None],
            thresholds=(0.35, 0.6),
            scope="band",
            min_seed_agreement=0.9,
        )[0][0]
        for case in cases
    ]
    assert label_miou(refined) >= label_miou([case.soft for case in cases]) - 0.005
