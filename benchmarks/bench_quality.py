"""Label quality after each stage, against exact truth, on the toy world (three seeds).

Stage 1 redraws rendered single objects image-to-image (``generate.init_images``), so the
attention masks are the real ones and the renderer's exact mask is the truth; backgrounds are
rendered empty scenes; compose replays every placement on the truth; refine and harmonize
carry it. Each stage's labels are scored with ``freemask.quality`` (label mIoU, object
precision/recall, the share of object-labelled pixels that are background, ignore share), per
class, for the shipped settings and for the settings before this benchmark existed (no
plausibility checks on attention masks, the whole attention band pasted).

Usage: ``python benchmarks/bench_quality.py [--seeds 0 1 2] [--work DIR] [--quick]``.
The last line is one JSON object; ``ratio`` keys compare the shipped settings with the old ones.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from freemask.compose import run_backgrounds, run_compose
from freemask.config import RunConfig
from freemask.generate import run_generate
from freemask.harmonize import run_harmonize
from freemask.quality import stage_quality
from freemask.records import read_manifest
from freemask.refine import run_refine
from freemask.relate import run_relate
from freemask.storage import LocalStorage, encode_image
from freemask.toyworld.dataset import write_toy_scenes
from freemask.toyworld.render import SCENES, draw_background, random_light

REPO = Path(__file__).resolve().parents[1]
STAGES = ("generate", "refine", "compose", "harmonize")
# The settings before label quality was measured: every mask kept, the whole band pasted.
OLD_SETTINGS = {"generate": {"reject_implausible": False}, "compose": {"band_width": 0.5}}
# Harmonization is off by default; the benchmarks run the opt-in lighting correction.
HARMONIZED = {"harmonize": {"method": "color_transfer"}}
BACKGROUNDS_PER_SCENE = 6
THESAURUS = REPO / "configs" / "demo_thesaurus.yaml"
OBJECTS_PER_CLASS = 16


def bench_config(work: Path, seed: int, variant: dict, quick: bool) -> RunConfig:
    """configs/demo.yaml redrawing rendered objects, on rendered backgrounds, under ``work``."""
    raw = yaml.safe_load((REPO / "configs/demo.yaml").read_text())
    raw.update(workdir=str(work / "run"), seed=seed)
    raw["relate"]["thesaurus"] = str(REPO / "configs" / raw["relate"]["thesaurus"])
    raw["generate"].update(
        init_images=str(work / "init"), images_per_class=4 if quick else OBJECTS_PER_CLASS
    )
    raw["compose"].update(backgrounds=str(work / "backgrounds"), images=12 if quick else 200)
    raw["segment"]["validation"] = str(work / "validation")
    for section, values in variant.items():
        raw.setdefault(section, {}).update(values)
    return RunConfig.model_validate(raw)


def write_inputs(work: Path, classes: list[str], seed: int, size: int, quick: bool) -> None:
    """Rendered single objects under random lights (the init images, with exact masks), empty
    backgrounds under their own lights (so harmonization has light to match) and held-out
    scenes drawn as the demo's relation table says (the active loop's validation set)."""
    count = (4 if quick else OBJECTS_PER_CLASS) * len(classes) * 2
    write_toy_scenes(str(work / "init"), classes, count, seed=100 + seed, size=size, objects=(1, 1))
    write_toy_scenes(
        str(work / "validation"),
        classes,
        12 if quick else 100,
        seed=300 + seed,
        size=size,
        objects=(2, 3),
        thesaurus=str(THESAURUS),
    )
    rng = np.random.default_rng(200 + seed)
    backgrounds = LocalStorage(work / "backgrounds")
    for scene in SCENES:
        for index in range(BACKGROUNDS_PER_SCENE):
            path = f"{scene}/{scene}-{index}.png"
            lit = draw_background(scene, size, rng) * random_light(rng).field(size)
            backgrounds.write_bytes(path, encode_image(np.clip(lit, 0, 255).astype(np.uint8), path))


def run_stages(config: RunConfig) -> dict[str, dict]:
    """Run generate -> refine -> compose -> harmonize; label quality of each stage's output."""
    root = Path(config.workdir)
    run_generate(config, None, str(root / "generate"))
    run_relate(config, None, str(root / "relate"))
    run_backgrounds(config, str(root / "relate"), str(root / "backgrounds"))
    run_refine(config, str(root / "generate"), str(root / "refine"))
    run_compose(
        config,
        str(root / "refine"),
        str(root / "compose"),
        relations=str(root / "relate"),
        backgrounds=str(root / "backgrounds"),
    )
    run_harmonize(config, str(root / "compose"), str(root / "harmonize"))
    scores = {}
    for stage in STAGES:
        storage = LocalStorage(root / stage)
        scores[stage] = stage_quality(storage, read_manifest(storage), config.classes)
    return scores


def mean_sd(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and standard deviation of the known values; (None, None) when none is known (a
    class whose every sample was rejected)."""
    known = [v for v in values if v is not None]
    return (float(np.mean(known)), float(np.std(known))) if known else (None, None)


def cell(mean: float | None, sd: float | None) -> str:
    return "-" if mean is None else f"{mean:.3f} +- {sd:.3f}"


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=None, help="kept when given")
    parser.add_argument("--quick", action="store_true", help="a smoke run of this code")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-quality-"))
    variants = {"shipped": HARMONIZED, "old": {**OLD_SETTINGS, **HARMONIZED}}
    results: dict[str, dict[int, dict]] = {name: {} for name in variants}
    started = time.perf_counter()
    for seed in args.seeds:
        for name, variant in variants.items():
            folder = work / f"seed{seed}" / name
            config = bench_config(folder, seed, variant, args.quick)
            write_inputs(folder, config.classes, seed, config.generate.height, args.quick)
            results[name][seed] = run_stages(config)
    seconds = time.perf_counter() - started

    classes = bench_config(work, 0, {}, args.quick).classes
    metrics = ("miou", "object_precision", "object_recall", "background_share", "ignore_share")
    figures: dict[str, float | None] = {"seconds": round(seconds, 1), "seeds": len(args.seeds)}
    print(f"label quality against exact truth, {len(args.seeds)} seeds (mean +- sd)")
    for name in variants:
        print(f"\n== {name} settings")
        print("stage".ljust(10) + "".join(m.rjust(22) for m in metrics))
        for stage in STAGES:
            row = stage.ljust(10)
            for metric in metrics:
                mean, sd = mean_sd([results[name][s][stage][metric] for s in args.seeds])
                row += cell(mean, sd).rjust(22)
                figures[f"{name}.{stage}.{metric}"] = rounded(mean)
                figures[f"{name}.{stage}.{metric}_sd"] = rounded(sd)
            print(row)
        print("per class (label IoU / background share of object labels), after compose:")
        for class_name in classes:
            iou = mean_sd(
                [results[name][s]["compose"]["per_class"][class_name]["iou"] for s in args.seeds]
            )
            share = mean_sd(
                [
                    results[name][s]["compose"]["per_class"][class_name]["background_share"]
                    for s in args.seeds
                ]
            )
            print(f"  {class_name:8s} {cell(*iou):>16} {cell(*share):>16}")
            figures[f"{name}.compose.{class_name}.iou"] = rounded(iou[0])
            figures[f"{name}.compose.{class_name}.background_share"] = rounded(share[0])
    for stage in STAGES:
        old = figures[f"old.{stage}.miou"]
        if old and figures[f"shipped.{stage}.miou"] is not None:
            figures[f"{stage}.miou_ratio_shipped_vs_old"] = round(
                figures[f"shipped.{stage}.miou"] / old, 4
            )
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    sys.exit(main())
