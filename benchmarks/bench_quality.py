"""Label quality after each stage on the toy world, on the path `freemask run` takes (three seeds).

Source ``text`` (the default) draws every object from text with configs/demo.yaml's generate
settings, as `freemask run` does. Drawn objects have no renderer masks, so their truth is the
toy world's truth proxy (``freemask.toyworld.oracle``: a segmenter trained on renders through
the toy model's VAE) labelling each drawn image; refine carries it and compose replays it
through every paste (with the classes it names, so a cross drawn as a box stays a box).

Source ``redraws`` is the calibration row: rendered single objects redrawn image-to-image
(``generate.init_images``, strength 0.6), where the renderer's exact mask is the truth. Each
stage is scored twice, against exact truth and against the proxy (the same stages run again
on a copy of generate whose truth is the proxy's), and the per-class difference is the
proxy's calibration. ``redraws-test-sizes`` redraws objects rendered at the test scenes'
sizes (the relation table's heights), scored against exact truth.

Figures per stage (``freemask.quality``): label mIoU (ignore counts as a miss), per-class IoU,
object recall, background share and wrong-class share of object labels, ignore share; object
recall per colour (the colour the prompt asked for) on single objects; object completeness
after compose (the share of each pasted object's own pixels its cut-out shows). Backgrounds are
rendered empty scenes; harmonization does not change labels and is not run. ``--old`` adds the
settings before label quality was measured (no plausibility checks, the whole band pasted).

Usage: ``python benchmarks/bench_quality.py [--seeds 0 1 2] [--work DIR] [--quick]
[--sources text redraws redraws-test-sizes] [--redraws] [--old] [--variant NAME=S.K=V]``;
``--variant`` adds settings after generate, run on the shipped text run's drawn objects (text
only); ``--redraws`` is
``--sources redraws redraws-test-sizes``. Mean +- sd over seeds and the worst seed; the last
line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from functools import cache
from pathlib import Path

import numpy as np
import yaml

from freemask.compose import run_backgrounds, run_compose
from freemask.compose.scene import CutoutError, cut_out
from freemask.config import RunConfig
from freemask.generate import run_generate
from freemask.quality import (
    completeness_summary,
    object_completeness,
    own_object,
    stage_quality,
)
from freemask.records import Sample, read_manifest
from freemask.refine import run_refine
from freemask.relate import run_relate
from freemask.segment.labeller import load_labeller
from freemask.segment.model import predict
from freemask.storage import LocalStorage, encode_image, read_array, read_image
from freemask.toyworld.dataset import write_toy_scenes
from freemask.toyworld.oracle import TruthProxy, load_truth_proxy, write_proxy_truth
from freemask.toyworld.render import SCENES, draw_background, random_light

REPO = Path(__file__).resolve().parents[1]
STAGES = ("generate", "refine", "compose")
SOURCES = ("text", "redraws", "redraws-test-sizes")
# The settings before label quality was measured: every mask kept, the whole band pasted.
OLD_SETTINGS = {"generate": {"reject_implausible": False}, "compose": {"band_width": 0.5}}
BACKGROUNDS_PER_SCENE = 6
THESAURUS = REPO / "configs" / "demo_thesaurus.yaml"
OBJECTS_PER_CLASS = 16
# Figures where a higher value is worse (the worst seed is the largest).
LOWER_IS_BETTER = (
    "background_share",
    "wrong_class_share",
    "ignore_share",
    "share_below",
    "disagreeing",
)


def bench_config(
    work: Path, seed: int, variant: dict, quick: bool, source: str = "redraws"
) -> RunConfig:
    """configs/demo.yaml under ``work`` on rendered backgrounds; objects drawn from text
    (``source`` "text", the generate settings as they are) or redrawn from rendered ones."""
    raw = yaml.safe_load((REPO / "configs/demo.yaml").read_text())
    raw.update(workdir=str(work / "run"), seed=seed)
    raw["relate"]["thesaurus"] = str(REPO / "configs" / raw["relate"]["thesaurus"])
    raw["generate"]["images_per_class"] = 4 if quick else OBJECTS_PER_CLASS
    if source != "text":
        raw["generate"]["init_images"] = str(work / "init")
    raw["compose"].update(backgrounds=str(work / "backgrounds"), images=12 if quick else 200)
    raw["segment"]["validation"] = str(work / "validation")
    for section, values in variant.items():
        raw.setdefault(section, {}).update(values)
    return RunConfig.model_validate(raw)


def write_inputs(
    work: Path, classes: list[str], seed: int, size: int, quick: bool, source: str = "redraws"
) -> None:
    """Rendered single objects under random lights for redraws (the init images, with exact
    masks; at the relation table's sizes for "redraws-test-sizes"), empty backgrounds under
    their own lights (so harmonization has light to match) and held-out scenes drawn as the
    demo's relation table says (the active loop's validation set)."""
    count = (4 if quick else OBJECTS_PER_CLASS) * len(classes) * 2
    if source == "redraws":
        write_toy_scenes(
            str(work / "init"), classes, count, seed=100 + seed, size=size, objects=(1, 1)
        )
    elif source == "redraws-test-sizes":
        write_toy_scenes(
            str(work / "init"),
            classes,
            count,
            seed=150 + seed,
            size=size,
            objects=(1, 1),
            thesaurus=str(THESAURUS),
        )
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


def run_stages(config: RunConfig, proxy: TruthProxy, suffix: str = "") -> Path:
    """Run generate -> refine -> compose (finished stages are reused); a text run's objects
    get the proxy's truth. With ``suffix``, refine and compose run again on a copy of
    generate whose truth is the proxy's (the calibration of a redraw run)."""
    root = Path(config.workdir)
    run_generate(config, None, str(root / "generate"))
    if config.generate.init_images is None:
        write_proxy_truth(LocalStorage(root / "generate"), proxy, config.classes)
    run_relate(config, None, str(root / "relate"))
    run_backgrounds(config, str(root / "relate"), str(root / "backgrounds"))
    if suffix:
        if not (root / f"generate{suffix}").exists():
            shutil.copytree(root / "generate", root / f"generate{suffix}")
        write_proxy_truth(LocalStorage(root / f"generate{suffix}"), proxy, config.classes)
    run_refine(config, str(root / f"generate{suffix}"), str(root / f"refine{suffix}"))
    run_compose(
        config,
        str(root / f"refine{suffix}"),
        str(root / f"compose{suffix}"),
        relations=str(root / "relate"),
        backgrounds=str(root / "backgrounds"),
    )
    return root


def placement_completeness(
    config: RunConfig, objects: LocalStorage, scenes: list[Sample]
) -> dict[str, list[float]]:
    """Per class, the completeness of every object pasted into ``scenes``: its own pixels
    in its source's truth that its cut-out shows (cut out as compose does). An object whose
    truth holds no object at all (nothing drawn) has no completeness and is left out."""
    by_id = {sample.id: sample for sample in read_manifest(objects)}
    cache: dict[str, float | None] = {}
    per_class: dict[str, list[float]] = {name: [] for name in config.classes}
    for scene in scenes:
        for placement in scene.placements:
            source = by_id[placement.source]
            if source.id not in cache:
                image = read_image(objects, source.image, mode="RGB")
                label = read_image(objects, source.semantic_mask)
                soft = read_array(objects, source.soft_mask) if source.soft_mask else None
                if soft is not None and soft.ndim == 3:
                    soft = soft.max(axis=0)
                own = own_object(read_image(objects, source.truth_mask), label)
                cache[source.id] = None
                if not own.any():
                    continue
                try:
                    cutout = cut_out(
                        image,
                        label,
                        soft,
                        config.generate.ignore_band,
                        config.compose.band_width,
                        own,
                        own if config.compose.paste_extent == "truth" else None,
                    )
                except CutoutError:
                    continue
                cache[source.id] = object_completeness(own, cutout.truth, cutout.alpha)
            if cache[source.id] is not None:
                per_class[placement.class_name].append(cache[source.id])
    return per_class


@cache
def toy_labeller(classes: tuple[str, ...]):
    """The toy labeller (configs/demo.yaml's ``segment.labeller``), predicting ``classes``."""
    settings = RunConfig.model_validate(
        yaml.safe_load((REPO / "configs/demo.yaml").read_text())
    ).segment
    return load_labeller(settings, list(classes))


def truth_cross_check(config: RunConfig, storage: LocalStorage) -> dict:
    """The truth that single objects carry (the proxy's, or the renderer's on redraws) against
    the toy labeller, a segmenter of another architecture trained on other renders: per class
    the mean IoU of their object masks, and the share of objects where they overlap at IoU
    below 0.5 (one of them, at least, is wrong). On redraws, where both the proxy and exact
    truth are scored this way, it shows how far the proxy's agreement falls on text."""
    samples = [s for s in read_manifest(storage) if s.truth_mask and s.instances]
    images = [read_image(storage, s.image, mode="RGB") for s in samples]
    predicted = predict(toy_labeller(tuple(config.classes)), images) if images else []
    ious: dict[str, list[float]] = {name: [] for name in config.classes}
    for sample, labelled in zip(samples, predicted, strict=True):
        class_id = sample.instances[0].class_id
        truth = read_image(storage, sample.truth_mask) == class_id
        union = (truth | (labelled == class_id)).sum()
        if union:
            ious[sample.instances[0].class_name].append(
                float((truth & (labelled == class_id)).sum() / union)
            )
    every = [v for values in ious.values() for v in values]
    return {
        "mean": float(np.mean(every)) if every else None,
        "disagreeing_share": float(np.mean(np.array(every) < 0.5)) if every else None,
        "per_class": {k: float(np.mean(v)) if v else None for k, v in ious.items()},
    }


def score_stages(config: RunConfig, root: Path, suffix: str = "") -> dict[str, dict]:
    """Each stage's label quality against the truth its samples carry, object recall per
    colour on single objects, object completeness after compose, and the single objects'
    truth against the toy labeller (``truth_cross_check``)."""
    scores = {}
    for stage in STAGES:
        storage = LocalStorage(root / f"{stage}{suffix}")
        samples = read_manifest(storage)
        scores[stage] = stage_quality(
            storage, samples, config.classes, group_words=config.generate.adjectives
        )
    generated = LocalStorage(root / f"generate{suffix}")
    scores["generate"]["truth_vs_labeller"] = truth_cross_check(config, generated)
    compose = read_manifest(LocalStorage(root / f"compose{suffix}"))
    objects = LocalStorage(root / f"refine{suffix}")
    scores["compose"]["completeness"] = completeness_summary(
        placement_completeness(config, objects, compose)
    )
    return scores


def mean_sd(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and standard deviation of the known values; (None, None) when none is known (a
    class whose every sample was rejected)."""
    known = [v for v in values if v is not None]
    return (float(np.mean(known)), float(np.std(known))) if known else (None, None)


def worst(values: list[float | None], metric: str) -> float | None:
    """The worst seed's value: the largest share, the largest calibration difference (by
    size), else the smallest."""
    known = [v for v in values if v is not None]
    if not known:
        return None
    if metric.endswith("difference"):
        return max(known, key=abs)
    return max(known) if any(word in metric for word in LOWER_IS_BETTER) else min(known)


def cell(mean: float | None, sd: float | None) -> str:
    return "-" if mean is None else f"{mean:.3f} +- {sd:.3f}"


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def lookup(scores: dict, path: str) -> float | None:
    """``scores["compose"]["per_class"]["ring"]["iou"]`` for ``"compose.per_class.ring.iou"``."""
    value = scores
    for key in path.split("."):
        if value is None or key not in value:
            return None
        value = value[key]
    return value


class Report:
    """Prints rows of mean +- sd (worst seed, per seed) and collects them as flat figures."""

    def __init__(self, seeds: list[int]):
        self.seeds = seeds
        self.figures: dict[str, float | None] = {}

    def row(self, key: str, label: str, values: list[float | None]) -> None:
        mean, sd = mean_sd(values)
        bad = worst(values, key)
        per_seed = " / ".join("-" if v is None else f"{v:.3f}" for v in values)
        worst_text = "-" if bad is None else f"{bad:.3f}"
        print(f"  {label:34s} {cell(mean, sd):>16}  worst {worst_text:>6}  ({per_seed})")
        self.figures[key] = rounded(mean)
        self.figures[f"{key}_sd"] = rounded(sd)
        self.figures[f"{key}_worst"] = rounded(bad)
        for seed, value in zip(self.seeds, values, strict=True):
            self.figures[f"{key}_seed{seed}"] = rounded(value)


def report_run(
    report: Report, name: str, runs: list[dict], classes: list[str], colours: list[str]
) -> None:
    """The figures of one source and settings over seeds (keys start with ``name``)."""
    truth = "exact" if name.startswith("redraws") and not name.endswith("proxy") else "proxy"
    print(f"\n== {name} (truth: {truth}): mean +- sd, worst seed (per seed)")
    metrics = ("miou", "object_recall", "background_share", "wrong_class_share", "ignore_share")
    for stage in STAGES:
        for metric in metrics:
            values = [lookup(run, f"{stage}.{metric}") for run in runs]
            report.row(f"{name}.{stage}.{metric}", f"{stage} {metric}", values)
    for stage in ("generate", "compose"):
        for class_name in classes:
            for metric in ("iou", "background_share", "wrong_class_share"):
                path = f"{stage}.per_class.{class_name}.{metric}"
                report.row(
                    f"{name}.{path}",
                    f"{stage} {class_name} {metric}",
                    [lookup(run, path) for run in runs],
                )
    for stage in ("generate", "refine"):
        for colour in colours:
            path = f"{stage}.object_recall_by_group.{colour}"
            report.row(
                f"{name}.{path}", f"{stage} recall, {colour}", [lookup(run, path) for run in runs]
            )
    for path in ("mean", "disagreeing_share", *(f"per_class.{c}" for c in classes)):
        full = f"generate.truth_vs_labeller.{path}"
        label = f"truth~labeller {path.removeprefix('per_class.')}"
        report.row(f"{name}.{full}", label, [lookup(run, full) for run in runs])
    for path in ("mean", "p10", "share_below.0.6"):
        full = f"compose.completeness.{path}"
        report.row(f"{name}.{full}", f"completeness {path}", [_completeness(r, path) for r in runs])
    for class_name in classes:
        path = f"per_class.{class_name}"
        report.row(
            f"{name}.compose.completeness.{path}",
            f"completeness {class_name}",
            [_completeness(run, path) for run in runs],
        )


def _completeness(run: dict, path: str) -> float | None:
    completeness = run["compose"]["completeness"]
    if path == "share_below.0.6":
        return completeness["share_below"]["0.6"]
    return lookup(completeness, path)


def report_calibration(
    report: Report, name: str, exact: list[dict], proxy: list[dict], classes: list[str]
) -> float:
    """Per stage and class: label IoU against exact truth, against the proxy, and their
    difference (proxy - exact); returns the largest per-class difference over seeds."""
    print(f"\n== calibration on {name}: label IoU scored by exact truth and by the proxy")
    largest = 0.0
    for stage in STAGES:
        for class_name in ["miou", *classes]:
            path = (
                f"{stage}.miou" if class_name == "miou" else f"{stage}.per_class.{class_name}.iou"
            )
            truths = [lookup(run, path) for run in exact]
            proxies = [lookup(run, path) for run in proxy]
            differences = [
                None if t is None or p is None else p - t
                for t, p in zip(truths, proxies, strict=True)
            ]
            label = f"{stage} {class_name}"
            report.row(f"calibration.{name}.{path}.exact", f"{label} exact", truths)
            report.row(f"calibration.{name}.{path}.proxy", f"{label} proxy", proxies)
            report.row(f"calibration.{name}.{path}.difference", f"{label} difference", differences)
            if class_name != "miou":
                largest = max([largest, *(abs(d) for d in differences if d is not None)])
    return largest


def parse_variant(text: str) -> tuple[str, dict]:
    """``("grabcut", {"refine": {"method": "grabcut"}})`` for "grabcut=refine.method=grabcut"
    (values parsed as YAML scalars; several settings separated by commas)."""
    name, _, assignments = text.partition("=")
    settings = parse_settings(assignments.split(","), f"--variant {text!r}")
    if not name or "generate" in settings:
        raise SystemExit(f"--variant {text!r}: expected NAME=SECTION.KEY=VALUE after generate")
    return name, settings


def parse_settings(assignments: list[str], where: str) -> dict:
    """``{"refine": {"grabcut_background": 0.05}}`` for ``["refine.grabcut_background=0.05"]``
    (values parsed as YAML scalars)."""
    settings: dict = {}
    for assignment in assignments:
        key, _, value = assignment.partition("=")
        section, _, field = key.partition(".")
        if not (section and field and value):
            raise SystemExit(f"{where}: expected SECTION.KEY=VALUE, got {assignment!r}")
        settings.setdefault(section, {})[field] = yaml.safe_load(value)
    return settings


def reuse_drawn(shipped: Path, folder: Path) -> None:
    """Start a variant from the shipped run's finished generate and relate outputs (the same
    drawn objects, so the variants differ only after generate)."""
    for stage in ("generate", "relate"):
        source, target = shipped / "run" / stage, folder / "run" / stage
        if (source / "_SUCCESS").exists() and not target.exists():
            shutil.copytree(source, target)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=None, help="kept when given")
    parser.add_argument("--quick", action="store_true", help="a smoke run of this code")
    parser.add_argument("--sources", nargs="+", choices=SOURCES, default=["text", "redraws"])
    parser.add_argument("--redraws", action="store_true", help="the calibration rows only")
    parser.add_argument("--old", action="store_true", help="also the settings before")
    parser.add_argument("--proxy", type=Path, default=None, help="a truth proxy folder")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=SECTION.KEY=VALUE[,...]",
        help="also these settings after generate (e.g. grabcut=refine.method=grabcut); the "
        "shipped run's drawn objects are reused",
    )
    args = parser.parse_args(argv)
    sources = ["redraws", "redraws-test-sizes"] if args.redraws else args.sources
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-quality-"))
    proxy = load_truth_proxy(args.proxy)
    variants = {"shipped": {}, **({"old": OLD_SETTINGS} if args.old else {})}
    variants.update(parse_variant(text) for text in args.variant)
    runs: dict[str, list[dict]] = {}
    started = time.perf_counter()
    for seed in args.seeds:
        for source in sources:
            for variant, settings in variants.items():
                folder = work / f"seed{seed}" / f"{source}-{variant}"
                if variant not in ("shipped", "old"):
                    if source != "text":  # a redraw's settings name its own folder's inputs
                        continue
                    reuse_drawn(work / f"seed{seed}" / f"{source}-shipped", folder)
                config = bench_config(folder, seed, settings, args.quick, source)
                size = config.generate.height
                write_inputs(folder, config.classes, seed, size, args.quick, source)
                root = run_stages(config, proxy)
                runs.setdefault(f"{source}.{variant}", []).append(score_stages(config, root))
                if source != "text":
                    run_stages(config, proxy, suffix="-proxy")
                    scores = score_stages(config, root, suffix="-proxy")
                    runs.setdefault(f"{source}.{variant}.proxy", []).append(scores)
    seconds = time.perf_counter() - started

    config = bench_config(work, 0, {}, args.quick, "text")
    report = Report(args.seeds)
    print(
        f"label quality on the toy world, {len(args.seeds)} seeds {args.seeds}, truth proxy "
        f"{args.proxy or 'freemask/toyworld/oracle'} ({proxy.name})"
    )
    for name, scored in runs.items():
        report_run(report, name, scored, config.classes, config.generate.adjectives)
    figures: dict = {
        "seconds": round(seconds, 1),
        "seeds": args.seeds,
        "sources": sources,
        "proxy": proxy.name,
    }
    for name in runs:
        if f"{name}.proxy" in runs:
            largest = report_calibration(
                report, name, runs[name], runs[f"{name}.proxy"], config.classes
            )
            print(f"  largest per-class |proxy - exact| over stages and seeds: {largest:.3f}")
            figures[f"calibration.{name}.largest_class_difference"] = rounded(largest)
    figures.update(report.figures)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    sys.exit(main())
