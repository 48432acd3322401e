"""Refinement gain and cost on real photographs with exact masks (skimage.data).

Shapes cut from one photograph are pasted onto another (exact truth), their masks degraded as
attention masks look (16x16 grid, blur, noise, upsampled), then refined with the image. Rows:
mean IoU before and after for the guided filter and AffinityNet + random walk (trained on the
degraded set itself, as the stage does), and seconds per 512-px image on the CPU. Also the
random walk with a sparse transition matrix against the same walk with a dense one (same
output), at 256 px where the dense matrix still fits.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np
import torch

from freemask.evaluation import degrade_mask, exact_composites, iou, sample_photographs
from freemask.refine import AffinityRefiner, GuidedFilterRefiner, propagate, train_affinity
from freemask.refine.random_walk import transition_matrix

SIZE = 512
IMAGES = 12
EPOCHS = 10


def evaluate(refiner, composites, softs) -> tuple[float, float]:
    """Mean IoU and median seconds per image."""
    scores, seconds = [], []
    for item, soft in zip(composites, softs, strict=True):
        start = time.perf_counter()
        probabilities = refiner.refine(item.image, soft[None])
        seconds.append(time.perf_counter() - start)
        scores.append(iou(probabilities.argmax(0) == 1, item.mask))
    return float(np.mean(scores)), statistics.median(seconds)


def sparse_vs_dense_seconds() -> tuple[float, float, float]:
    """Seconds of a 2^8-step walk on a 64x64 grid (256 px) with sparse and dense matrices."""
    torch.manual_seed(0)
    features = torch.rand(35, 64, 64)
    transition = transition_matrix(features, radius=5, beta=8.0)
    scores = np.random.default_rng(0).random((2, 64 * 64)).astype(np.float32)
    start = time.perf_counter()
    sparse_result = propagate(transition, scores, logt=8)
    sparse_s = time.perf_counter() - start
    dense = transition.toarray()
    start = time.perf_counter()
    walked = scores.T.astype(np.float64)
    for _ in range(2**8):
        walked = dense @ walked
    dense_s = time.perf_counter() - start
    difference = float(np.abs(walked.T - sparse_result).max())
    return sparse_s, dense_s, difference


def main() -> None:
    composites = exact_composites(sample_photographs(), IMAGES, SIZE, seed=0)
    rng = np.random.default_rng(0)
    softs = [degrade_mask(item.mask, rng) for item in composites]
    before = float(np.mean([iou(s > 0.5, c.mask) for s, c in zip(softs, composites, strict=True)]))
    guided = GuidedFilterRefiner(radius_fraction=1 / 16, eps=1e-3)
    guided_iou, guided_s = evaluate(guided, composites, softs)

    def examples():
        return ((item.image, soft[None]) for item, soft in zip(composites, softs, strict=True))

    start = time.perf_counter()
    model, _ = train_affinity(
        examples, epochs=EPOCHS, learning_rate=1e-3, radius=5, thresholds=(0.35, 0.6)
    )
    train_s = time.perf_counter() - start
    affinity_iou, affinity_s = evaluate(
        AffinityRefiner(model, 5, 8.0, 8, guided), composites, softs
    )
    sparse_s, dense_s, difference = sparse_vs_dense_seconds()
    print(
        f"{IMAGES} composites of {SIZE} px, masks degraded to a 16x16 grid; torch threads {torch.get_num_threads()}"
    )
    print(f"{'refiner':<28} {'mean IoU':>9} {'s/image':>9}")
    print(f"{'degraded (no refinement)':<28} {before:>9.3f} {'-':>9}")
    print(f"{'guided filter':<28} {guided_iou:>9.3f} {guided_s:>9.3f}")
    print(f"{'AffinityNet + random walk':<28} {affinity_iou:>9.3f} {affinity_s:>9.3f}")
    print(f"AffinityNet training: {EPOCHS} epochs over {IMAGES} images in {train_s:.1f} s")
    print(
        f"random walk, 64x64 grid, 256 steps: sparse {sparse_s:.2f} s, dense {dense_s:.2f} s, max difference {difference:.1e}"
    )
    figures = {
        "images": IMAGES,
        "size_px": SIZE,
        "iou_degraded": round(before, 4),
        "iou_guided_filter": round(guided_iou, 4),
        "iou_affinity": round(affinity_iou, 4),
        "guided_filter_s_per_image": round(guided_s, 4),
        "affinity_s_per_image": round(affinity_s, 4),
        "affinity_training_s": round(train_s, 2),
        "guided_vs_degraded_iou_ratio": round(guided_iou / before, 4),
        "affinity_vs_degraded_iou_ratio": round(affinity_iou / before, 4),
        "dense_vs_sparse_walk_time_ratio": round(dense_s / sparse_s, 2),
    }
    sys.stdout.write(json.dumps(figures) + "\n")


if __name__ == "__main__":
    main()
