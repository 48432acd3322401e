"""Refinement on single objects in real photographs with exact masks (skimage.data), easy and hard.

Each case is a single-object image whose mask is exact, with an attention-like soft mask
(16x16 grid, blur, noise, upsampled): ``easy`` large shapes, and the hard cases of real
photographs: objects smaller than one attention cell, thin parts, soft maps that peak at
0.55-0.85, objects of one colour of their own. Every method's soft masks become labels the way
the stage makes them (class above 0.6, background below 0.35, ignore between) and are scored
with label mIoU (background and object, ignore left out) against the exact masks, with the
ignore share beside it. ``threshold`` is the attention mask as it is. AffinityNet trains on the
confident seeds of the attention maps of all cases (as the stage trains on the generate
stage's output). Three seeds (new images, new noise, new training): mean +- sd per case; a
difference inside one sd is no difference. Also seconds per 512-px image and the sparse
against the dense random walk (same output) at 256 px.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np
import torch

from freemask.evaluation import REFINE_CASES, RefineCase, refine_cases, sample_photographs
from freemask.quality import LabelQuality
from freemask.refine import (
    AffinityNet,
    AffinityRefiner,
    GuidedFilterRefiner,
    band_labels,
    propagate,
    refine_soft,
    train_affinity,
)
from freemask.refine.random_walk import transition_matrix

SIZE = 128
PER_CASE = 8
SEEDS = (0, 1, 2)
EPOCHS = 3
THRESHOLDS = (0.35, 0.6)
# (row, method, scope, minimum seed agreement); guided filter in the band is the default.
METHODS = [
    ("guided filter, all", "guided", "all", 0.0),
    ("guided filter, all, gated", "guided", "all", 0.9),
    ("guided filter, band (default)", "guided", "band", 0.9),
    ("AffinityNet, all (old default)", "affinity", "all", 0.0),
    ("AffinityNet, all, gated", "affinity", "all", 0.9),
    ("AffinityNet, band", "affinity", "band", 0.9),
]


def label_quality(cases: list[RefineCase], softs: list[np.ndarray]) -> tuple[float, float]:
    """Label mIoU and ignore share of the soft masks' band labels against the exact masks."""
    quality = LabelQuality(["object"])
    for case, soft in zip(cases, softs, strict=True):
        quality.add(band_labels(soft[None], *THRESHOLDS), case.mask.astype(np.uint8))
    summary = quality.summary()
    return summary["miou"], summary["ignore_share"]


def refined(refiner, cases: list[RefineCase], scope: str, gate: float) -> list[np.ndarray]:
    """Each case's refined soft mask, as the stage makes it."""
    return [
        refine_soft(
            refiner,
            case.image,
            case.soft[None],
            thresholds=THRESHOLDS,
            scope=scope,
            min_seed_agreement=gate,
        )[0][0]
        for case in cases
    ]


def one_seed(seed: int) -> tuple[dict[str, dict[str, tuple[float, float]]], float, AffinityNet]:
    """{case: {row: (label mIoU, ignore share)}}, AffinityNet's training seconds, the model."""
    photographs = sample_photographs()
    by_case = {
        kind: refine_cases(kind, photographs, PER_CASE, SIZE, seed=seed) for kind in REFINE_CASES
    }
    everything = [case for cases in by_case.values() for case in cases]
    start = time.perf_counter()
    model, _ = train_affinity(
        lambda: ((case.image, case.soft[None]) for case in everything),
        epochs=EPOCHS,
        learning_rate=1e-3,
        radius=5,
        thresholds=THRESHOLDS,
        seed=seed,
    )
    train_s = time.perf_counter() - start
    guided = GuidedFilterRefiner()
    refiners = {"guided": guided, "affinity": AffinityRefiner(model, 5, 8.0, 8, guided)}
    rows: dict[str, dict[str, tuple[float, float]]] = {}
    for kind, cases in by_case.items():
        rows[kind] = {"threshold": label_quality(cases, [case.soft for case in cases])}
        for name, method, scope, gate in METHODS:
            rows[kind][name] = label_quality(cases, refined(refiners[method], cases, scope, gate))
    return rows, train_s, model


def seconds_per_image(model: AffinityNet) -> dict[str, float]:
    """Median seconds per 512-px image of the default guided filter and of AffinityNet."""
    cases = refine_cases("easy", sample_photographs(), 3, 512, seed=0)
    guided = GuidedFilterRefiner()
    timings = {}
    for name, refiner in [("guided", guided), ("affinity", AffinityRefiner(model, 5, 8.0, 8))]:
        seconds = []
        for case in cases:
            start = time.perf_counter()
            refine_soft(
                refiner,
                case.image,
                case.soft[None],
                thresholds=THRESHOLDS,
                scope="band",
                min_seed_agreement=0.9,
            )
            seconds.append(time.perf_counter() - start)
        timings[name] = statistics.median(seconds)
    return timings


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
    runs, train_seconds, model = [], [], None
    for seed in SEEDS:
        rows, train_s, model = one_seed(seed)
        runs.append(rows)
        train_seconds.append(train_s)
    names = ["threshold", *(name for name, *_ in METHODS)]
    stats: dict[str, dict[str, tuple[float, float, float]]] = {}
    for kind in REFINE_CASES:
        stats[kind] = {}
        for name in names:
            mious = [run[kind][name][0] for run in runs]
            ignores = [run[kind][name][1] for run in runs]
            stats[kind][name] = (
                statistics.mean(mious),
                statistics.stdev(mious),
                statistics.mean(ignores),
            )
    print(
        f"label mIoU (ignore share) against exact masks: {PER_CASE} single objects of {SIZE} px "
        f"per case and seed, seeds {list(SEEDS)}, mean +- sd; torch threads {torch.get_num_threads()}"
    )
    print(f"{'method':<32}" + "".join(f"{kind:>22}" for kind in REFINE_CASES) + f"{'worse':>7}")
    figures: dict[str, float | int | str] = {"cases": ",".join(REFINE_CASES)}
    for name in names:
        cells, worse = [], 0
        for kind in REFINE_CASES:
            mean, sd, ignore = stats[kind][name]
            base_mean, base_sd, _ = stats[kind]["threshold"]
            worse += mean < base_mean - max(sd, base_sd)
            cells.append(f"{mean:.3f}+-{sd:.3f} ({ignore:.2f})")
            key = name.split(" (")[0].replace(",", "").replace(" ", "_").lower()
            figures[f"miou_{kind}_{key}"] = round(mean, 4)
            figures[f"miou_sd_{kind}_{key}"] = round(sd, 4)
            if name != "threshold":
                figures[f"{kind}_{key}_vs_threshold_miou_ratio"] = round(mean / base_mean, 4)
        figures[f"worse_cases_{key}"] = int(worse)
        print(f"{name:<32}" + "".join(f"{cell:>22}" for cell in cells) + f"{worse:>7}")
    print("worse: cases where the mean is below threshold's by more than one sd")
    timings = seconds_per_image(model)
    sparse_s, dense_s, difference = sparse_vs_dense_seconds()
    print(
        f"AffinityNet training: {EPOCHS} epochs over {PER_CASE * len(REFINE_CASES)} images, "
        f"{statistics.mean(train_seconds):.1f} s per seed"
    )
    print(
        f"s per 512-px image (band scope): guided filter {timings['guided']:.3f}, "
        f"AffinityNet {timings['affinity']:.3f}"
    )
    print(
        f"random walk, 64x64 grid, 256 steps: sparse {sparse_s:.2f} s, dense {dense_s:.2f} s, "
        f"max difference {difference:.1e}"
    )
    figures.update(
        {
            "seeds": len(SEEDS),
            "images_per_case": PER_CASE,
            "size_px": SIZE,
            "affinity_training_s": round(statistics.mean(train_seconds), 2),
            "guided_filter_s_per_image": round(timings["guided"], 4),
            "affinity_s_per_image": round(timings["affinity"], 4),
            "dense_vs_sparse_walk_time_ratio": round(dense_s / sparse_s, 2),
        }
    )
    sys.stdout.write(json.dumps(figures) + "\n")


if __name__ == "__main__":
    main()
