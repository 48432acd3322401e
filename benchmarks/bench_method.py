"""The method's table on the toy world: label quality and a downstream score per stage.

Per seed, the stages run as `freemask run` runs them, on objects the toy model draws from text
(``--source text``, the default; their truth is the toy world's truth proxy,
``freemask.toyworld.oracle``, whose calibration ``bench_quality.py`` prints), or on rendered
single objects redrawn image-to-image (``--source redraws``: ``generate.init_images``, the
renderer's masks are the truth), and on rendered backgrounds; rows are the training sets the
method makes:

  (a) single objects with attention masks   (b) + composition   (c) + refinement (on the
  single objects, before composing)   (d) + harmonization (``learned``, the toy world's
  harmonizer, ``builtin:toy-harmonizer``)   (e) each active-learning round's kept set, filtering
  (c) as the default pipeline does (harmonization is off by default)   (i) with ``--disputed``:
  the same rounds with ``active.ignore_disputed`` (a kept scene's contradicted classes become
  ignore)   (f) the ceiling: as many rendered scenes with exact labels

Each row gets its label mIoU against truth (``freemask.quality``) and a downstream
mIoU: a probe segmenter (``probe_segmenter.py``, a small conv net that generalises on this
world; Mask2Former here memorises its training scenes and cannot rank rows) trained on the
row with the same budget and scored on held-out rendered scenes. Three seeds, mean +- sd: a
difference inside the noise is no difference. Rounds also report the filter's discard
precision (true label IoU of kept minus discarded samples), the gap a filter that knew the truth
would reach discarding as many (what the pool allows) and the judge's rank correlation with the
truth; rows (i) also the dispute gap (true label IoU of the undisputed minus the disputed
classes of the samples a round disputed).

Usage: ``python benchmarks/bench_method.py [--work DIR] [--seeds 0 1 2] [--device D]
[--threads N] [--source text|redraws] [--disputed] [--rows a c ...] [--set SECTION.KEY=VALUE]
[--quick]``; each seed's rows are kept in ``<work>/seed<N>/rows.json`` and reused (resumable).
``--rows`` scores only those rows (and runs only the stages they need), ``--set`` changes a
setting over the demo's; either in a work folder of its own. The last line is one JSON object; ``ratio`` keys compare with row (f), the ceiling.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from bench_quality import THESAURUS, bench_config, parse_settings, write_inputs
from probe_segmenter import ProbeSettings, load_pairs, predict_probe, train_probe

from freemask.active import run_active
from freemask.compose import run_backgrounds, run_compose
from freemask.config import HarmonizeConfig, RunConfig
from freemask.devices import resolve_device
from freemask.generate import run_generate
from freemask.harmonize import run_harmonize
from freemask.quality import LabelQuality, stage_quality
from freemask.records import Sample, read_manifest
from freemask.refine import run_refine
from freemask.relate import run_relate
from freemask.storage import LocalStorage, read_json, write_json
from freemask.toyworld.dataset import write_toy_scenes
from freemask.toyworld.oracle import TruthProxy, load_truth_proxy, write_proxy_truth

REPO = Path(__file__).resolve().parents[1]
TEST_SCENES = 500
TEST_SEED = 1000  # training of the toy model used seed 0
CEILING_SEED = 2000
PROBE = ProbeSettings(steps=800)
# Row d: the learned toy harmonizer, the one that matches the world's light (bench_harmonize_toyworld).
HARMONIZED = {"harmonize": {"method": "learned", "weights": "builtin:toy-harmonizer"}}
ALL_ROWS = ("a", "b", "c", "d", "e", "f")  # what --rows picks from (e: every active row)
NAMES = {
    "a": "(a) attention masks (single objects)",
    "b": "(b) + composition",
    "c": "(c) + refinement",
    "d": "(d) + harmonization (learned)",
    "e*": "(e) exported: the best-validating",
    "f": "(f) exact labels (ceiling)",
}
ACTIVE_ROWS = {  # letter: (name, folder of its active run)
    "e": ("(e) + active round", "active"),
    "i": ("(i) + active round, disputed ignored,", "active-disputed"),
}


def method_config(
    work: Path, seed: int, quick: bool, source: str = "text", settings: dict | None = None
) -> RunConfig:
    """bench_quality's configuration (demo settings, objects drawn from ``source``, rendered
    backgrounds, harmonization on for row d) with ``settings`` ({section: {key: value}}) over
    it, and up to 3 active rounds (off by default); quick: tiny counts to check the code runs."""
    sections = {**HARMONIZED, **(settings or {})}
    merged = {name: {**HARMONIZED.get(name, {}), **values} for name, values in sections.items()}
    config = bench_config(work, seed, merged, quick, source)
    rows_e = config.active.model_copy(update={"max_rounds": 3})  # the loop is off by default
    config = config.model_copy(update={"active": rows_e})
    if quick:
        segment = config.segment.model_copy(update={"train_steps": 4, "checkpoint_every": 2})
        config = config.model_copy(
            update={
                "segment": segment,
                "active": config.active.model_copy(update={"max_rounds": 2}),
            }
        )
    return config


def run_composed(config: RunConfig, proxy: TruthProxy | None) -> Path:
    """Run generate, relate, backgrounds, compose (row b), refine and compose again (row c);
    finished stages are reused; objects drawn from text get the ``proxy``'s truth. Return the
    run's folder."""
    root = Path(config.workdir)
    run_generate(config, None, str(root / "generate"))
    if config.generate.init_images is None and proxy is not None:
        write_proxy_truth(LocalStorage(root / "generate"), proxy, config.classes)
    run_relate(config, None, str(root / "relate"))
    run_backgrounds(config, str(root / "relate"), str(root / "backgrounds"))
    scenes = {"relations": str(root / "relate"), "backgrounds": str(root / "backgrounds")}
    run_compose(config, str(root / "generate"), str(root / "compose-unrefined"), **scenes)
    run_refine(config, str(root / "generate"), str(root / "refine"))
    run_compose(config, str(root / "refine"), str(root / "compose"), **scenes)
    return root


def run_rows(
    config: RunConfig,
    work: Path,
    proxy: TruthProxy | None,
    disputed: bool = False,
    letters: tuple[str, ...] = ALL_ROWS,
) -> dict[str, tuple[LocalStorage, list[Sample]]]:
    """Run the stages the rows of ``letters`` need; return each row's training set (storage and
    samples); ``disputed``: the rows (i) too."""
    root = run_composed(config, proxy)
    prefixes = {"a": "generate", "b": "compose-unrefined", "c": "compose", "d": "harmonize"}
    rows = {}
    if "d" in letters:
        run_harmonize(config, str(root / "compose"), str(root / "harmonize"))
    for row, prefix in prefixes.items():
        if row in letters:
            storage = LocalStorage(root / prefix)
            rows[row] = (storage, read_manifest(storage))
    if "e" in letters:
        rows.update(active_rows(config, root, disputed))
    if "f" in letters:
        rows["f"] = ceiling_row(config, work, len(read_manifest(LocalStorage(root / "compose"))))
    return rows


def active_rows(
    config: RunConfig, root: Path, disputed: bool
) -> dict[str, tuple[LocalStorage, list[Sample]]]:
    """Run the active loop on row (c) (and with ``ignore_disputed``, when ``disputed``); return
    each round's kept set and the exported dataset (row e*)."""
    active_config = config.model_copy(update={"harmonize": HarmonizeConfig()})  # as by default
    run_active(active_config, str(root / "compose"), str(root / "active"))
    if disputed:
        ignoring = config.active.model_copy(update={"ignore_disputed": True})
        disputed_config = active_config.model_copy(update={"active": ignoring})
        run_active(disputed_config, str(root / "compose"), str(root / "active-disputed"))
    rows = {}
    for letter, (_, prefix) in ACTIVE_ROWS.items():
        if letter == "i" and not disputed:
            continue
        active = LocalStorage(root / prefix)
        number = 1
        while active.exists(f"rounds/{number:02d}/summary.json"):
            kept = read_manifest(active, f"rounds/{number:02d}/kept.jsonl")
            rows[f"{letter}{number}"] = (active, kept)
            number += 1
    exported = LocalStorage(root / "active")  # the candidate the run ships (the pool included)
    rows["e*"] = (exported, read_manifest(exported))
    return rows


def ceiling_row(config: RunConfig, work: Path, count: int) -> tuple[LocalStorage, list[Sample]]:
    """Row (f): ``count`` rendered scenes with exact labels, drawn as the relation table says."""
    ceiling = str(work / "ceiling")
    write_toy_scenes(
        ceiling,
        config.classes,
        count,
        seed=CEILING_SEED + config.seed,
        objects=(2, 3),
        thesaurus=str(THESAURUS),
    )
    return LocalStorage(ceiling), read_manifest(LocalStorage(ceiling))


def score_row(
    config: RunConfig,
    storage: LocalStorage,
    samples: list[Sample],
    test: tuple[np.ndarray, np.ndarray],
    settings: ProbeSettings,
    device: str,
) -> dict:
    """Label quality of the row's samples and the probe's test mIoU after training on them."""
    quality = stage_quality(storage, samples, config.classes) if samples else None
    row = {"samples": len(samples), "label_miou": quality["miou"] if quality else None}
    if not samples:
        return {**row, "downstream_miou": None, "per_class_iou": {}}
    images, labels = load_pairs(storage, samples)
    probe = train_probe(images, labels, len(config.classes) + 1, config.seed, settings, device)
    scores = LabelQuality(config.classes)
    for predicted, truth in zip(predict_probe(probe, test[0]), test[1], strict=True):
        scores.add(predicted, truth)
    summary = scores.summary()
    per_class = {name: values["iou"] for name, values in summary["per_class"].items()}
    return {**row, "downstream_miou": summary["miou"], "per_class_iou": per_class}


def probe_settings(quick: bool) -> ProbeSettings:
    """The probe's budget: ``PROBE``, or 20 steps for a quick run."""
    return ProbeSettings(steps=20) if quick else PROBE


def check_scored_with(store: LocalStorage, scoring: dict) -> None:
    """Record how a seed's rows are scored (``scoring.json``), or refuse rows scored otherwise:
    one table never mixes probes, devices or quick rows."""
    if not store.exists("scoring.json"):
        write_json(store, "scoring.json", scoring)
        return
    before = read_json(store, "scoring.json")
    if before != scoring:
        changed = sorted(k for k in {*before, *scoring} if before.get(k) != scoring.get(k))
        raise SystemExit(
            f"{store.root / 'scoring.json'}: this seed's rows were scored with other "
            f"{', '.join(changed)}; use another --work or remove {store.root}"
        )


def run_seed(
    work: Path,
    seed: int,
    test,
    quick: bool,
    device: str,
    source: str = "text",
    disputed: bool = False,
    letters: tuple[str, ...] = ALL_ROWS,
    overrides: dict | None = None,
) -> dict[str, dict]:
    """The rows of ``letters`` of one seed (reused from ``rows.json`` when this seed has finished; rows
    scored before an interruption are kept in ``rows.partial.json`` and not scored again)."""
    settings = probe_settings(quick)
    store = LocalStorage(work)  # atomic writes: a killed run leaves whole files
    scoring = {"quick": quick, "probe": asdict(settings), "device": device}
    if letters != ALL_ROWS:
        scoring["rows"] = list(letters)
    if overrides:
        scoring["settings"] = overrides
    check_scored_with(store, {**scoring, "source": source} if source != "redraws" else scoring)
    if store.exists("rows.json"):
        return read_json(store, "rows.json")
    config = method_config(work, seed, quick, source, overrides)
    write_inputs(work, config.classes, seed, config.generate.height, quick, source)
    proxy = load_truth_proxy() if source == "text" else None
    results = read_json(store, "rows.partial.json") if store.exists("rows.partial.json") else {}
    trained_on: dict[tuple[str, ...], str] = {}  # a round that kept everything: same probe
    for row, (storage, samples) in run_rows(config, work, proxy, disputed, letters).items():
        ids = (str(storage.root), *(f"{s.id}:{s.semantic_mask}" for s in samples))
        if row in results:
            trained_on.setdefault(ids, row)
            continue
        if ids in trained_on:
            results[row] = {**results[trained_on[ids]]}
        else:
            results[row] = score_row(config, storage, samples, test, settings, device)
            trained_on[ids] = row
        write_json(store, "rows.partial.json", results)
    write_json(store, "rows.json", results)
    return results


def mean_sd(values: list) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "-"
    return f"{np.mean(known):.3f} +- {np.std(known):.3f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=REPO / "build/bench_method")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="tiny counts: check the code runs")
    parser.add_argument(
        "--device", default="auto", help="where the probe trains (the stages follow the config)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads (1 on two busy cores: more is slower)"
    )
    parser.add_argument(
        "--source", choices=("text", "redraws"), default="text", help="how objects are drawn"
    )
    parser.add_argument(
        "--disputed", action="store_true", help="rows (i) too: rounds with ignore_disputed"
    )
    parser.add_argument(
        "--rows", nargs="+", choices=ALL_ROWS, default=list(ALL_ROWS), help="only these rows"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="a setting over the demo's (in a work folder of its own: recorded in scoring.json)",
    )
    args = parser.parse_args(argv)
    letters = tuple(sorted(set(args.rows)))
    overrides = parse_settings(args.set, "--set")
    device = str(resolve_device(args.device))
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    classes = method_config(args.work, 0, args.quick, args.source).classes
    test_uri = str(args.work / "test")
    write_toy_scenes(
        test_uri,
        classes,
        12 if args.quick else TEST_SCENES,
        seed=TEST_SEED,
        objects=(2, 3),
        thesaurus=str(THESAURUS),
    )
    test_store = LocalStorage(test_uri)
    test = load_pairs(test_store, read_manifest(test_store))
    results = {
        seed: run_seed(
            args.work / f"seed{seed}",
            seed,
            test,
            args.quick,
            device,
            args.source,
            args.disputed,
            letters,
            overrides,
        )
        for seed in args.seeds
    }

    for seed in args.seeds if "e" in letters else []:  # the filters' precision, from the runs
        config = method_config(args.work / f"seed{seed}", seed, args.quick, args.source, overrides)
        root = Path(config.workdir)
        chosen = read_json(LocalStorage(root / "active"), "_SUCCESS")["summary"]
        results[seed]["e*"]["chosen"] = chosen["chosen"]
        for row in [r for r in results[seed] if r[0] in ACTIVE_ROWS and r[1:].isdigit()]:
            active = LocalStorage(root / ACTIVE_ROWS[row[0]][1])
            filtered = read_json(active, f"rounds/{int(row[1:]):02d}/filter.json")
            precision = filtered["discard_precision"] or {}  # as judged, before any ignoring
            dispute = filtered.get("dispute_precision") or {}
            results[seed][row].update({f"discard_{k}": v for k, v in precision.items()})
            results[seed][row].update({f"dispute_{k}": v for k, v in dispute.items()})
    rows = sorted(
        {row for seed_rows in results.values() for row in seed_rows},
        key=lambda row: (row == "f", row == "e*", row),  # the export, then the ceiling last
    )
    print(
        f"toy world, objects from {args.source}, {len(test[0])} held-out rendered scenes, probe segmenter "
        f"{probe_settings(args.quick).steps} steps per row on {device}, seeds {args.seeds} (mean +- sd)"
    )
    columns = {
        "label_miou": "label mIoU",
        "downstream_miou": "downstream mIoU",
        "discard_gap": "discard gap",
        "discard_oracle_gap": "oracle gap",
        "discard_judge_rank_correlation": "judge rank corr",
        "dispute_gap": "dispute gap",
    }
    print(f"{'row':<40} {'samples':>8}" + "".join(f" {name:>16}" for name in columns.values()))
    figures: dict[str, float] = {}
    for row in rows:
        values = [results[seed][row] for seed in args.seeds if row in results[seed]]
        name = NAMES.get(row) or f"{ACTIVE_ROWS[row[0]][0]} {row[1:]}"
        samples = int(np.mean([v["samples"] for v in values]))
        cells = "".join(f" {mean_sd([v.get(key) for v in values]):>16}" for key in columns)
        print(f"{name:<40} {samples:>8}{cells}")
        for key in columns:
            known = [v.get(key) for v in values if v.get(key) is not None]
            if known:
                figures[f"{row}.{key}"] = round(float(np.mean(known)), 4)
                figures[f"{row}.{key}_sd"] = round(float(np.std(known)), 4)
    for seed in args.seeds if "e" in letters else []:
        print(f"seed {seed} exports {results[seed]['e*']['chosen']}")
    names = ["background", *classes]
    print("downstream IoU per class (mean over seeds):")
    print(f"{'row':<8}" + "".join(f"{n[:10]:>11}" for n in names))
    for row in rows:
        values = [
            results[seed][row]["per_class_iou"] for seed in args.seeds if row in results[seed]
        ]
        cells = [mean_sd([v.get(n) for v in values]).split(" ")[0] for n in names]
        print(f"{row:<8}" + "".join(f"{c:>11}" for c in cells))
    ceiling = figures.get("f.downstream_miou")
    for row in rows:
        if ceiling and f"{row}.downstream_miou" in figures:
            figures[f"{row}.downstream_vs_ceiling_ratio"] = round(
                figures[f"{row}.downstream_miou"] / ceiling, 4
            )
    figures["seconds"] = round(time.perf_counter() - started, 1)
    sys.stdout.write(json.dumps(figures) + "\n")


if __name__ == "__main__":
    main()
