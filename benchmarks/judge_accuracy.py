"""How well bench_filter's two judges segment the method table's held-out scenes.

The shipped toy labeller (``segment.labeller`` of the demo) and bench_filter's probe judge (one
per seed, trained on the labeller's shifted domain) are scored against exact truth on
bench_method's 500 held-out rendered scenes: mIoU and IoU per class.

Usage: ``python benchmarks/judge_accuracy.py [--work DIR] [--seeds 0 1 2]`` after
bench_method (its held-out scenes) and bench_filter (the judges' training scenes) have run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from bench_filter import probe_judge
from bench_method import REPO, method_config
from probe_segmenter import load_pairs, predict_probe

from freemask.quality import LabelQuality
from freemask.records import read_manifest
from freemask.segment.labeller import load_labeller
from freemask.segment.model import predict
from freemask.storage import LocalStorage


def scored(predictions: list[np.ndarray], truths: np.ndarray, classes: list[str]) -> dict:
    """mIoU and IoU per class of ``predictions`` against ``truths``."""
    quality = LabelQuality(classes)
    for predicted, truth in zip(predictions, truths, strict=True):
        quality.add(predicted, truth)
    summary = quality.summary()
    per_class = {name: round(v["iou"], 3) for name, v in summary["per_class"].items()}
    return {"miou": round(summary["miou"], 4), "per_class_iou": per_class}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=REPO / "build/bench_method")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    test = LocalStorage(args.work / "test")
    images, truths = load_pairs(test, read_manifest(test))
    config = method_config(args.work / f"seed{args.seeds[0]}", args.seeds[0], False)
    labeller = load_labeller(config.segment, config.classes)
    predictions = [
        label
        for start in range(0, len(images), 32)
        for label in predict(labeller, list(images[start : start + 32]))
    ]
    results = {"labeller": scored(predictions, truths, config.classes)}
    for seed in args.seeds:
        seeded = method_config(args.work / f"seed{seed}", seed, False)
        probe = probe_judge(args.work / f"seed{seed}", seeded, seed, False)
        results[f"probe.seed{seed}"] = scored(
            list(predict_probe(probe, images)), truths, config.classes
        )
    for name, result in results.items():
        print(f"{name:<14} mIoU {result['miou']:.3f} {result['per_class_iou']}")
    sys.stdout.write(json.dumps(results) + "\n")


if __name__ == "__main__":
    main()
