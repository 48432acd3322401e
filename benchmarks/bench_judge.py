"""The active loop's first judge against truth, on the path users run.

1. **Accuracy**: the judge's mIoU and IoU per class on bench_method's 500 held-out rendered
   scenes (exact truth; rendered here when missing, seed 1000, as the demo's relation table
   draws them).
2. **As a filter on the text path**: on each seed's composed pool of ``bench_quality.py`` (objects
   drawn from text, truth from the calibrated proxy ``freemask.toyworld.oracle``), the judge
   pseudo-labels every scene and the demo's keep rule filters it as round 1 does
   (``freemask.active.rounds``). Reported: the discard gap (kept scenes' mean true IoU minus the
   discarded ones'), the gap a filter that knew the truth would reach discarding as many, the
   judge's rank correlation with true quality, the share of clean scenes (true IoU >= 0.85)
   discarded, the kept fraction, and the mIoU against the pool's truth of the judge's
   pseudo-labels beside that of the labels it judges (a judge ranks labels only where it is
   the better of the two). Three seeds, mean +- sd, and the worst seed.

3. **The same filter on redraw pools** (``--pools text-shipped redraws-shipped``): objects the toy
   model redrew image-to-image from renders, whose truth is the render's exact mask, a check of
   the text-path figures that does not lean on the proxy.

Usage: ``python benchmarks/bench_judge.py [--labeller builtin:toy-labeller] [--seeds 0 1 2]
[--quality-work build/bench-quality] [--test build/bench_method/test] [--pools P ...]
[--keep-rule R] [--iou-threshold T]`` (the demo's active settings by default) after
bench_quality has made its pools (``--sources text redraws`` for the redraw pools). The last
line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_method import TEST_SCENES, TEST_SEED
from bench_quality import THESAURUS

from freemask.active.rounds import SCORE, filter_samples, pseudo_label
from freemask.config import RunConfig, load_config
from freemask.quality import LabelQuality, discard_precision
from freemask.records import Sample, read_manifest
from freemask.segment import Segmenter, load_labeller, predict
from freemask.storage import LocalStorage, read_image
from freemask.toyworld.dataset import write_toy_scenes

REPO = Path(__file__).resolve().parents[1]
FILTER_FIGURES = (
    "gap",
    "oracle_gap",
    "judge_rank_correlation",
    "clean_discarded",
    "kept_fraction",
    "judge_miou",
    "label_miou",
)


def judge_config(labeller: str) -> RunConfig:
    """The demo's run config with ``labeller`` as round 1's judge."""
    config = load_config(str(REPO / "configs" / "demo.yaml"))
    config.segment.labeller = labeller
    return config


def accuracy(judge: Segmenter, config: RunConfig, test: Path) -> dict:
    """mIoU and IoU per class of ``judge`` on the held-out rendered scenes under ``test``."""
    write_toy_scenes(
        str(test),
        config.classes,
        TEST_SCENES,
        seed=TEST_SEED,
        objects=(2, 3),
        thesaurus=str(THESAURUS),
    )
    storage = LocalStorage(test)
    samples = read_manifest(storage)
    quality = LabelQuality(config.classes)
    for start in range(0, len(samples), 32):
        chunk = samples[start : start + 32]
        images = [read_image(storage, sample.image, mode="RGB") for sample in chunk]
        for sample, label in zip(chunk, predict(judge, images), strict=True):
            quality.add(label, read_image(storage, sample.truth_mask))
    summary = quality.summary()
    per_class = {name: round(v["iou"], 4) for name, v in summary["per_class"].items()}
    return {"miou": round(summary["miou"], 4), "per_class_iou": per_class}


def judge_against_labels(
    samples: list[Sample], storage: LocalStorage, pseudo: LocalStorage, classes: list[str]
) -> dict[str, float]:
    """mIoU against the pool's truth of the judge's pseudo-labels and of the labels it judges:
    a judge can rank labels only where it is the better of the two."""
    judged, labelled = LabelQuality(classes), LabelQuality(classes)
    for sample in samples:
        truth = read_image(storage, sample.truth_mask)
        judged.add(read_image(pseudo, f"{sample.id}.png"), truth)
        labelled.add(read_image(storage, sample.semantic_mask), truth)
    return {
        "judge_miou": round(judged.summary()["miou"], 4),
        "label_miou": round(labelled.summary()["miou"], 4),
    }


def as_filter(judge: Segmenter, config: RunConfig, pool: Path) -> dict:
    """Round 1's filter on the composed pool under ``pool``, scored against its truth."""
    storage = LocalStorage(pool)
    samples = read_manifest(storage)
    with tempfile.TemporaryDirectory() as temp:
        pseudo = LocalStorage(temp)
        pseudo_label(judge, samples, storage, pseudo)
        selection = filter_samples(samples, storage, pseudo, config.active, 1)
        against = judge_against_labels(samples, storage, pseudo, config.classes)
    labels = len(config.classes) + 1
    figures = discard_precision(
        storage, selection.kept, selection.discarded, labels, score_key=SCORE
    )
    figures["kept_fraction"] = round(len(selection.kept) / len(samples), 4)
    return {**figures, **against}


def mean_sd_worst(values: list[float | None], higher_is_better: bool = True) -> str:
    known = [value for value in values if value is not None]
    if not known:
        return "-"
    worst = min(known) if higher_is_better else max(known)
    per_seed = " / ".join("-" if v is None else f"{v:.3f}" for v in values)
    return f"{np.mean(known):.3f} +- {np.std(known):.3f}  worst {worst:.3f}  ({per_seed})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labeller", default="builtin:toy-labeller")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quality-work", type=Path, default=REPO / "build/bench-quality")
    parser.add_argument("--test", type=Path, default=REPO / "build/bench_method/test")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--pools",
        nargs="+",
        default=["text-shipped"],
        help="bench_quality pools per seed: text-shipped (proxy truth), redraws-shipped and "
        "redraws-test-sizes-shipped (exact truth)",
    )
    parser.add_argument("--keep-rule", default=None, help="active.keep_rule (default: the demo's)")
    parser.add_argument(
        "--iou-threshold", type=float, default=None, help="active.iou_threshold (the demo's)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    config = judge_config(args.labeller)
    if args.keep_rule:
        config.active.keep_rule = args.keep_rule
    if args.iou_threshold is not None:
        config.active.iou_threshold = args.iou_threshold
    judge = load_labeller(config.segment, config.classes)

    held_out = accuracy(judge, config, args.test)
    print(f"judge {args.labeller}")
    print(f"held-out rendered scenes ({TEST_SCENES}, exact truth): mIoU {held_out['miou']:.3f}")
    print("  " + ", ".join(f"{k} {v:.3f}" for k, v in held_out["per_class_iou"].items()))

    filters = {}
    for name in args.pools:
        per_seed = {}
        for seed in args.seeds:
            pool = args.quality_work / f"seed{seed}" / name / "run" / "compose"
            per_seed[seed] = as_filter(judge, config, pool)
        truth = "proxy" if name.startswith("text") else "exact"
        print(
            f"\nas round 1's filter on {name}'s composed pools (truth: {truth}), keep rule "
            f"{config.active.keep_rule}, iou_threshold {config.active.iou_threshold}, seeds "
            f"{args.seeds} (mean +- sd, worst seed, per seed)"
        )
        for figure in FILTER_FIGURES:
            values = [per_seed[seed][figure] for seed in args.seeds]
            better_high = figure != "clean_discarded"
            print(f"  {figure:<24} {mean_sd_worst(values, better_high)}")
        filters[name] = {str(seed): per_seed[seed] for seed in args.seeds}
    result = {
        "labeller": args.labeller,
        "held_out": held_out,
        "filter": filters,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
