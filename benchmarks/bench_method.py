"""The method's table on the toy world: what each stage adds to a segmenter trained on the data.

One run of the whole pipeline (``freemask run``'s own code) on ``configs/demo.yaml``: the toy
diffusion model draws single objects with attention masks, compose, refine and harmonize turn
them into scenes, the active-learning loop filters them. A fresh tiny Mask2Former with the same
training budget is then trained on each stage's output and evaluated on held-out rendered
scenes with exact labels:

  (a) single-object attention masks only   (b) + composition   (c) + refinement
  (d) + harmonization   (e) + active-learning rounds 1..N (each round's own segmenter)
  (f) the ceiling: the same segmenter trained on as many rendered scenes with exact labels

Usage: ``python benchmarks/bench_method.py [--work DIR]`` (resumable: a finished part is
reused). The last line is one JSON object; ``ratio`` keys compare with row (a) or (f).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import yaml

from freemask.active.rounds import train_round
from freemask.config import RunConfig
from freemask.local import run_local
from freemask.records import read_manifest
from freemask.segment import evaluate, load_trained
from freemask.storage import LocalStorage
from freemask.toyworld.dataset import write_toy_scenes
from freemask.tracking import NullRun

REPO = Path(__file__).resolve().parents[1]
TRAIN_STEPS = 1000  # every row's segmenter, the active loop's included
TEST_SCENES = 200
TEST_SEED = 1000  # training of the toy model used seed 0
CEILING_SEED = 2000


def load_demo_config(work: Path, quick: bool) -> RunConfig:
    """configs/demo.yaml with the work directory under ``work`` and the benchmark's budget."""
    raw = yaml.safe_load((REPO / "configs/demo.yaml").read_text())
    raw["workdir"] = str(work / "run")
    raw["relate"]["thesaurus"] = str(REPO / raw["relate"]["thesaurus"])
    raw["segment"]["train_steps"] = TRAIN_STEPS
    if quick:  # a smoke run of the benchmark's own code
        raw["generate"].update(images_per_class=2, num_inference_steps=4)
        raw["compose"].update(images=12, backgrounds_per_scene=1)
        raw["segment"].update(train_steps=4, checkpoint_every=2)
        raw["active"]["max_rounds"] = 2
    return RunConfig.model_validate(raw)


def train_and_evaluate(
    config: RunConfig, data: LocalStorage, model: LocalStorage, test: LocalStorage
) -> dict:
    """A fresh segmenter trained on ``data``'s manifest (or reloaded), scored on ``test``."""
    samples = read_manifest(data)
    segmenter = train_round(config, samples, data, model, NullRun())
    scores = evaluate(segmenter, read_manifest(test), test, config.classes)
    return {**scores, "kept": len(samples)}


def evaluate_round(
    config: RunConfig, active: LocalStorage, number: int, test: LocalStorage
) -> dict:
    """Round ``number``'s own segmenter (trained on its kept samples), scored on ``test``."""
    folder = f"rounds/{number:02d}"
    segmenter = load_trained(active.child(f"{folder}/model"))
    scores = evaluate(segmenter, read_manifest(test), test, config.classes)
    return {**scores, "kept": len(read_manifest(active, f"{folder}/kept.jsonl"))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=REPO / "build/bench_method")
    parser.add_argument("--quick", action="store_true", help="tiny counts: check the code runs")
    args = parser.parse_args(argv)
    work = args.work
    config = load_demo_config(work, args.quick)
    test_scenes = 10 if args.quick else TEST_SCENES
    started = time.perf_counter()

    # 1. Held-out scenes with exact labels, and the pipeline itself.
    test_uri = str(work / "test")
    write_toy_scenes(test_uri, config.classes, test_scenes, seed=TEST_SEED, objects=(2, 3))
    test = LocalStorage(test_uri)
    run_local(config)
    pipeline_s = time.perf_counter() - started
    run = LocalStorage(config.workdir)

    # 2. One segmenter per stage's output, the same budget each.
    rows: dict[str, dict] = {}
    stages = {
        "(a) attention masks": "generate",
        "(b) + composition": "compose",
        "(c) + refinement": "refine",
        "(d) + harmonization": "harmonize",
    }
    for label, stage in stages.items():
        model = LocalStorage(work / "rows" / stage)
        rows[label] = train_and_evaluate(config, run.child(stage), model, test)
    active = run.child("active")
    number = 1
    while active.exists(f"rounds/{number:02d}/summary.json"):
        rows[f"(e) + active round {number}"] = evaluate_round(config, active, number, test)
        number += 1
    ceiling_uri = str(work / "ceiling")
    count = len(read_manifest(run.child("compose")))
    write_toy_scenes(ceiling_uri, config.classes, count, seed=CEILING_SEED, objects=(2, 3))
    rows["(f) exact labels (ceiling)"] = train_and_evaluate(
        config, LocalStorage(ceiling_uri), LocalStorage(work / "rows" / "ceiling"), test
    )

    # 3. The table, then the figures as JSON.
    names = ["background", *config.classes]
    print(
        f"toy world, {test_scenes} held-out scenes, {config.segment.model_id}, "
        f"{config.segment.train_steps} steps each, torch threads {torch.get_num_threads()}"
    )
    print(f"{'row':<28} {'mIoU':>6} {'kept':>5} " + " ".join(f"{n[:6]:>6}" for n in names))
    for label, row in rows.items():
        per_class = " ".join(f"{row['per_class_iou'].get(n, 0.0):>6.3f}" for n in names)
        print(f"{label:<28} {row['miou']:>6.3f} {row['kept']:>5} {per_class}")
    baseline = rows["(a) attention masks"]["miou"]
    ceiling = rows["(f) exact labels (ceiling)"]["miou"]
    figures: dict[str, float] = {
        "pipeline_seconds": round(pipeline_s, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    for label, row in rows.items():
        key = label.split(")")[0].strip("(")
        suffix = label.rsplit(" ", 1)[-1] if key == "e" else ""
        figures[f"miou_{key}{suffix}"] = round(row["miou"], 4)
        figures[f"miou_{key}{suffix}_vs_a_ratio"] = round(row["miou"] / max(baseline, 1e-9), 3)
        figures[f"miou_{key}{suffix}_vs_ceiling_ratio"] = round(row["miou"] / max(ceiling, 1e-9), 3)
    sys.stdout.write(json.dumps(figures) + "\n")


if __name__ == "__main__":
    main()
