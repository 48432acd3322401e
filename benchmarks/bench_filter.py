"""The active loop's filter on a pool with generation failures, scored against exact truth.

On the pipeline's own pool every label's true IoU is near 0.89, so even a filter that knew the
truth would gain little by discarding (the method's table reports that oracle gap): that pool
cannot show whether the filter finds failures. Here a share of row (c)'s composed scenes
(bench_method's, reused when they exist) get one object's label broken the ways text-to-image
labels break, the truth left as it is:

  wrong_class: the label names another class (the model drew another object than prompted);
  off_object: the label lies on the background beside its object (attention on the scene);
  missed: the object is labelled background (drawn, not found).

Round 1 then filters the pool as the active loop does (``prepare``, ``pseudo``, ``select``),
once per judge and setting (each keep rule, and ``any_class`` with ``active.ignore_disputed``:
the contradicted classes of a kept scene become ignore), and is scored with
``freemask.quality.discard_precision`` (kept minus discarded true label IoU, the oracle's gap,
the judge's rank correlation with the truth), by the share of broken and of clean scenes it
discards, per failure, by the share it keeps with a class ignored, and by the dispute gap
(true label IoU of the classes it spared minus those it ignored). Judges: ``labeller``, the shipped toy labeller (the demo's
``segment.labeller``: a small Mask2Former with a ResNet backbone at 128 px, mIoU 0.67 on the
method table's held-out scenes); ``probe``, the
benchmarks' probe segmenter trained on 1,000 renders of the labeller's shifted domain at full
size: not a product component, it shows what a stronger independent judge makes of the same
rule. Three seeds, mean +- sd. With ``--downstream``, what filtering is for: bench_method's
probe is trained on the broken pool as it is and on each setting's kept set (the labeller
judging) and scored on bench_method's held-out scenes.

Usage: ``python benchmarks/bench_filter.py [--work DIR] [--seeds 0 1 2] [--share 0.3]
[--threads N] [--quick] [--downstream]``. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from bench_method import (
    REPO,
    method_config,
    probe_settings,
    run_composed,
    score_row,
)
from bench_quality import write_inputs
from probe_segmenter import ProbeNet, ProbeSettings, load_pairs, predict_probe, train_probe

from freemask.active import steps
from freemask.config import RunConfig
from freemask.devices import resolve_device
from freemask.records import Instance, Sample, read_manifest, serialize_samples
from freemask.storage import LocalStorage, encode_image, read_image, read_json, write_json
from freemask.toyworld.dataset import write_toy_scenes

FAILURES = ("wrong_class", "off_object", "missed")
# Filter settings per column: the keep rules, and the default rule with the disputed classes
# of the kept scenes ignored (``active.ignore_disputed``).
VARIANTS = {
    "any_class": {"keep_rule": "any_class"},
    "mean_over_classes": {"keep_rule": "mean_over_classes"},
    "any_class+ignore_disputed": {"keep_rule": "any_class", "ignore_disputed": True},
}
JUDGES = ("labeller", "probe")
JUDGE_SCENES = 1000
JUDGE_SEED = 4000


def visible_pixels(instance: Instance, label: np.ndarray) -> np.ndarray:
    """The pixels where the label holds the instance's class inside its mask."""
    return instance.mask() & (label == instance.class_id)


def off_object(mask: np.ndarray, label: np.ndarray) -> np.ndarray:
    """``mask`` moved by its own size in the direction where it covers the most background."""
    rows, cols = np.nonzero(mask)
    height, width = int(np.ptp(rows)) + 1, int(np.ptp(cols)) + 1
    best, best_cover = np.zeros_like(mask), -1
    for dy in (-height, 0, height):
        for dx in (-width, 0, width):
            if dy == dx == 0:
                continue
            moved = np.zeros_like(mask)
            inside = (
                (rows + dy >= 0)
                & (rows + dy < mask.shape[0])
                & (cols + dx >= 0)
                & (cols + dx < mask.shape[1])
            )
            moved[rows[inside] + dy, cols[inside] + dx] = True
            moved &= label == 0
            if moved.sum() > best_cover:
                best, best_cover = moved, int(moved.sum())
    return best


def break_label(
    sample: Sample, label: np.ndarray, failure: str, classes: list[str], rng: np.random.Generator
) -> tuple[Sample, np.ndarray]:
    """The sample with one object's label broken by ``failure`` (its record updated to match)."""
    instances = list(sample.instances)
    candidates = [i for i, inst in enumerate(instances) if visible_pixels(inst, label).any()]
    index = int(rng.choice(candidates))
    instance = instances[index]
    visible = visible_pixels(instance, label)
    broken = label.copy()
    if failure == "wrong_class":
        other = int(rng.choice([c for c in range(1, len(classes) + 1) if c != instance.class_id]))
        broken[visible] = other
        instances[index] = Instance.from_mask(classes[other - 1], other, instance.mask())
    elif failure == "off_object":
        broken[visible] = 0
        moved = off_object(visible, broken)
        broken[moved] = instance.class_id
        if moved.any():
            instances[index] = Instance.from_mask(instance.class_name, instance.class_id, moved)
        else:  # no background to move onto: the object is missed
            del instances[index]
    else:
        broken[visible] = 0
        del instances[index]
    return sample.model_copy(update={"instances": instances}), broken


def write_broken_pool(
    source: LocalStorage, target: LocalStorage, config: RunConfig, share: float, seed: int
) -> dict[str, str]:
    """Copy row (c)'s scenes to ``target`` with ``share`` of them broken, one failure each in
    turn; return {sample id: failure} (also in ``broken.json``). Reused when finished."""
    if target.exists("_SUCCESS"):
        return read_json(target, "broken.json")
    rng = np.random.default_rng(seed)
    samples = read_manifest(source)
    chosen = rng.choice(len(samples), size=round(share * len(samples)), replace=False)
    failures = {int(pick): FAILURES[n % len(FAILURES)] for n, pick in enumerate(sorted(chosen))}
    written, broken_ids = [], {}
    for index, sample in enumerate(samples):
        files = {path: source.read_bytes(path) for path in sample.files()}
        if index in failures:
            label = read_image(source, sample.semantic_mask)
            sample, label = break_label(sample, label, failures[index], config.classes, rng)
            files[sample.semantic_mask] = encode_image(label, sample.semantic_mask)
            broken_ids[sample.id] = failures[index]
        for path, data in files.items():
            target.write_bytes(path, data)
        written.append(sample)
    write_json(target, "broken.json", broken_ids)
    target.write_bytes("manifest.jsonl", serialize_samples(written))
    target.write_bytes("_SUCCESS", b"{}\n")  # last: the pool is finished
    return broken_ids


def probe_judge(work: Path, config: RunConfig, seed: int, quick: bool) -> ProbeNet:
    """The probe segmenter trained on renders of the labeller's shifted domain (any class
    anywhere, 1-3 objects) at the pool's size."""
    folder = work / "judge-scenes"
    count = 40 if quick else JUDGE_SCENES
    write_toy_scenes(
        str(folder),
        config.classes,
        count,
        seed=JUDGE_SEED + seed,
        size=config.generate.height,
        objects=(1, 3),
        domain="shifted",
    )
    store = LocalStorage(folder)
    images, labels = load_pairs(store, read_manifest(store))
    settings = ProbeSettings(steps=20) if quick else ProbeSettings(steps=800)
    return train_probe(images, labels, len(config.classes) + 1, seed, settings)


def pseudo_by_probe(probe: ProbeNet, store: LocalStorage) -> None:
    """Round 1's pseudo-labels predicted by ``probe`` (existing ones kept)."""
    samples = [s for s in steps.pool_of(store) if not store.exists(f"rounds/01/pseudo/{s.id}.png")]
    for start in range(0, len(samples), 64):
        chunk = samples[start : start + 64]
        images = np.stack([read_image(store, s.image, mode="RGB") for s in chunk])
        for sample, labels in zip(chunk, predict_probe(probe, images), strict=True):
            path = f"rounds/01/pseudo/{sample.id}.png"
            store.write_bytes(path, encode_image(labels, path))


def filter_round(
    config: RunConfig, pool: Path, out: Path, broken: dict[str, str], probe: ProbeNet | None
) -> dict:
    """Round 1's filter on ``pool`` under ``out`` (judged by ``probe``, else the configured
    labeller); its discard precision and discard shares."""
    store = LocalStorage(out)
    steps.prepare(config, str(pool), store)
    if probe is None:
        steps.pseudo(config, store, 1)
    else:
        pseudo_by_probe(probe, store)
    steps.select(config, store, 1)
    report = read_json(store, "rounds/01/filter.json")
    discarded = {s.id for s in read_manifest(store, "rounds/01/discarded.jsonl")}
    pool_ids = [s.id for s in steps.pool_of(store)]
    clean = [i for i in pool_ids if i not in broken]
    result = {**report["discard_precision"], "kept_fraction": 1 - len(discarded) / len(pool_ids)}
    result["clean_discarded"] = float(np.mean([i in discarded for i in clean]))
    result["broken_discarded"] = float(np.mean([i in discarded for i in broken]))
    disputed = {
        s.id for s in read_manifest(store, "rounds/01/kept.jsonl") if "disputed_classes" in s.scores
    }
    result["clean_disputed"] = float(np.mean([i in disputed for i in clean]))
    result["broken_disputed"] = float(np.mean([i in disputed for i in broken]))
    dispute = report.get("dispute_precision") or {}
    result.update({f"dispute_{key}": value for key, value in dispute.items()})
    for failure in FAILURES:
        ids = [i for i, kind in broken.items() if kind == failure]
        result[f"{failure}_discarded"] = float(np.mean([i in discarded for i in ids]))
    return result


def downstream_of_filter(
    config: RunConfig, folder: Path, test: tuple[np.ndarray, np.ndarray], quick: bool
) -> dict[str, dict]:
    """Label mIoU and bench_method's downstream mIoU of the broken pool as it is and of what
    each keep rule kept with the labeller as judge (kept in ``downstream.json``, resumable)."""
    store = LocalStorage(folder)
    results = read_json(store, "downstream.json") if store.exists("downstream.json") else {}
    pool = LocalStorage(folder / "pool")
    sets = {"unfiltered": (pool, read_manifest(pool))}
    for variant in VARIANTS:
        out = LocalStorage(folder / f"labeller-{variant}")
        sets[variant] = (out, read_manifest(out, "rounds/01/kept.jsonl"))
    device = str(resolve_device("auto"))
    for name, (storage, samples) in sets.items():
        if name not in results:
            settings = probe_settings(quick)
            results[name] = score_row(config, storage, samples, test, settings, device)
            write_json(store, "downstream.json", results)
    return results


def run_seed(work: Path, seed: int, share: float, quick: bool) -> dict[str, dict]:
    config = method_config(work, seed, quick)
    write_inputs(work, config.classes, seed, config.generate.height, quick)
    root = run_composed(config)
    folder = work / f"failures-{share:g}"
    broken = write_broken_pool(
        LocalStorage(root / "compose"), LocalStorage(folder / "pool"), config, share, 500 + seed
    )
    probe = probe_judge(work, config, seed, quick)
    results = {}
    for judge in JUDGES:
        for variant, settings in VARIANTS.items():
            rules = config.active.model_copy(update=settings)
            ruled = config.model_copy(update={"active": rules})
            out = folder / f"{judge}-{variant}"
            results[f"{judge}.{variant}"] = filter_round(
                ruled, folder / "pool", out, broken, probe if judge == "probe" else None
            )
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=REPO / "build/bench_method")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--share", type=float, default=0.3, help="share of scenes broken")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny counts: check the code runs")
    parser.add_argument(
        "--downstream",
        action="store_true",
        help="also train bench_method's probe on the broken pool and on each rule's kept set "
        "(the labeller judging) and score it on bench_method's held-out scenes",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    results = {
        seed: run_seed(args.work / f"seed{seed}", seed, args.share, args.quick)
        for seed in args.seeds
    }
    keys = [
        "gap",
        "oracle_gap",
        "judge_rank_correlation",
        "kept_fraction",
        "broken_discarded",
        "clean_discarded",
        *(f"{failure}_discarded" for failure in FAILURES),
        "broken_disputed",
        "clean_disputed",
        "dispute_disputed_true_iou",
        "dispute_undisputed_true_iou",
        "dispute_gap",
    ]
    print(f"{args.share:.0%} of row (c)'s scenes broken; seeds {args.seeds} (mean +- sd)")
    columns = [f"{judge}.{variant}" for judge in JUDGES for variant in VARIANTS]
    print(f"{'figure':<24}" + "".join(f"{column:>36}" for column in columns))
    figures: dict[str, float | None] = {}
    for key in keys:
        cells = []
        for column in columns:
            values = [results[seed][column].get(key) for seed in args.seeds]
            known = [v for v in values if v is not None]
            if not known:  # e.g. a judge that discarded everything: no kept mean
                figures[f"{column}.{key}"] = figures[f"{column}.{key}_sd"] = None
                cells.append("-")
                continue
            mean, sd = float(np.mean(known)), float(np.std(known))
            figures[f"{column}.{key}"] = round(mean, 4)
            figures[f"{column}.{key}_sd"] = round(sd, 4)
            cells.append(f"{mean:.3f} +- {sd:.3f}")
        print(f"{key:<24}" + "".join(f"{cell:>36}" for cell in cells))
    if args.downstream:
        figures.update(downstream_table(args, results))
    figures["seconds"] = round(time.perf_counter() - started, 1)
    sys.stdout.write(json.dumps(figures) + "\n")


def downstream_table(args: argparse.Namespace, results: dict) -> dict[str, float]:
    """Print and return label and downstream mIoU of the unfiltered pool and each kept set."""
    test_store = LocalStorage(args.work / "test")
    if not test_store.exists("manifest.jsonl"):
        raise SystemExit(f"{test_store.root}: no held-out scenes; run bench_method.py first")
    test = load_pairs(test_store, read_manifest(test_store))
    scored = {
        seed: downstream_of_filter(
            method_config(args.work / f"seed{seed}", seed, args.quick),
            args.work / f"seed{seed}" / f"failures-{args.share:g}",
            test,
            args.quick,
        )
        for seed in args.seeds
    }
    print(f"training on the broken pool, the labeller judging; {len(test[0])} held-out scenes")
    print(f"{'set':<28}{'samples':>9}{'label mIoU':>18}{'downstream mIoU':>18}  by seed")
    figures: dict[str, float] = {}
    for name in ("unfiltered", *VARIANTS):
        rows = [scored[seed][name] for seed in args.seeds]
        cells = []
        for key in ("label_miou", "downstream_miou"):
            values = [row[key] for row in rows]
            figures[f"downstream.{name}.{key}"] = round(float(np.mean(values)), 4)
            figures[f"downstream.{name}.{key}_sd"] = round(float(np.std(values)), 4)
            cells.append(f"{np.mean(values):.3f} +- {np.std(values):.3f}")
        samples = int(np.mean([row["samples"] for row in rows]))
        by_seed = " / ".join(f"{row['downstream_miou']:.3f}" for row in rows)
        print(f"{name:<28}{samples:>9}{cells[0]:>18}{cells[1]:>18}  {by_seed}")
    return figures


if __name__ == "__main__":
    main()
