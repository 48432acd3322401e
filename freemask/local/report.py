"""The report folder of a whole run: what each stage made, and how the rounds went.

``write_run_report`` reads only the stages' outputs under the work directory, so it can be
written again at any time: per stage its counts and timing and a class-balanced contact sheet
(a few samples per class, the worst-scoring beside typical ones, images beside their labels),
the IoU histogram of each active-learning round, validation mIoU per round as a plot, label
quality where samples have truth, and ``summary.json`` with the numbers behind them.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from freemask.active.report import iou_histogram_png
from freemask.active.rounds import SCORE
from freemask.active.steps import POOL_ROUND, finished_candidates, round_folder
from freemask.local.sheets import ScoreOf, Tile, caption, pick_tiles, sheet_png, tile_jpeg
from freemask.quality import stage_quality
from freemask.records import MANIFEST, Sample, read_manifest
from freemask.stage_output import REJECTED, SUCCESS, read_rejected
from freemask.storage import Storage, write_json

# Every stage, in pipeline order, and those whose outputs are images (a sheet each).
STAGES = ("generate", "relate", "backgrounds", "refine", "compose", "harmonize", "active")
SAMPLE_STAGES = ("generate", "backgrounds", "refine", "compose", "harmonize", "active")
REPORT = "report"
SUMMARY = "summary.json"
# What each stage's sheet ranks samples by: the stage's own measure where it has one (the
# attention's confidence at generate), else the active loop's judge: a sample's IoU against
# the pseudo-label, per class (for compose and harmonize, round 1's judgement of that scene).
STAGE_SCORES = {
    "generate": "attention_confidence",
    "refine": "attention_confidence",
    "compose": SCORE,
    "harmonize": SCORE,
    "active": SCORE,
}


@dataclass
class RunReport:
    """``summary`` (what ``summary.json`` holds) and the pictures the page shows: the report's
    PNGs by file name and each sheet tile's JPEG by its ``tiles[].picture`` name."""

    summary: dict[str, Any]
    pictures: dict[str, bytes] = field(default_factory=dict)


def stage_sheet_png(
    storage: Storage,
    samples: list[Sample],
    class_names: list[str] | None = None,
    score_of: ScoreOf | None = None,
) -> bytes:
    """A class-balanced contact sheet of ``samples`` (classes: ``class_names``, else those the
    samples hold) as a PNG."""
    if class_names is None:
        class_names = list(dict.fromkeys(n for sample in samples for n in sample.class_names()))
    tiles, _ = pick_tiles(samples, class_names, score_of)
    return sheet_png(storage, tiles)


def score_lookup(stage: str, class_names: list[str], active: Storage) -> ScoreOf | None:
    """How ``stage``'s sheet scores a sample for a class (``STAGE_SCORES``); None when the
    stage has no score or its scores are not there yet."""
    key = STAGE_SCORES.get(stage)
    if key is None:
        return None
    if key != SCORE:
        return lambda sample, name: sample.scores.get(key)
    judged: dict[str, dict[str, float]] | None = None
    if stage != "active":  # round 1 judged the scenes compose and harmonize made
        folder = round_folder(1)
        if not active.exists(f"{folder}/kept.jsonl"):
            return None
        samples = [
            *read_manifest(active, f"{folder}/kept.jsonl"),
            *read_manifest(active, f"{folder}/discarded.jsonl"),
        ]
        judged = {sample.id: sample.scores for sample in samples}

    def score_of(sample: Sample, name: str) -> float | None:
        scores = sample.scores if judged is None else judged.get(sample.id, {})
        if name in class_names:
            per_class = scores.get(f"{SCORE}.class_{class_names.index(name) + 1}")
            if per_class is not None:
                return per_class
        return scores.get(SCORE)

    return score_of


def stage_facts(storage: Storage) -> dict[str, Any]:
    """A stage's counts and time from its output: what it holds (so a resumed stage reports
    what an uninterrupted one does), what it rejected, and its seconds from ``_SUCCESS``."""
    done = json.loads(storage.read_bytes(SUCCESS)) if storage.exists(SUCCESS) else {}
    written = len(read_manifest(storage)) if storage.exists(MANIFEST) else done.get("written")
    rejected = len(read_rejected(storage)) if storage.exists(REJECTED) else done.get("dropped")
    return {
        "finished": bool(done),
        "samples": written,
        "rejected": rejected,
        "seconds": round(float(done["seconds"]), 3) if "seconds" in done else None,
    }


def write_run_report(
    workdir: Storage,
    iou_threshold: float | None = None,
    class_names: list[str] | None = None,
    description: str | None = None,
) -> RunReport:
    """Write ``<workdir>/report/`` from the stages' outputs; return its summary and pictures.

    With ``class_names``, sheets are balanced over them, and each stage whose samples have
    exact truth (``truth_mask``) also gets its label quality against it (``freemask.quality``)
    under ``stages.<stage>.label_quality``. ``description`` (the run's, in words) is kept in
    the summary for the page and MLflow.
    """
    report = workdir.child(REPORT)
    active = workdir.child("active")
    summary: dict[str, Any] = {"stages": {}, "rounds": [], "files": []}
    if description:
        summary["description"] = description
    result = RunReport(summary)

    def put(name: str, data: bytes) -> None:
        report.write_bytes(name, data)
        summary["files"].append(name)
        result.pictures[name] = data

    # 1. Per stage: counts and time; where it made images, a class-balanced contact sheet.
    for stage in STAGES:
        storage = workdir.child(stage)
        if not (storage.exists(SUCCESS) or storage.exists(MANIFEST)):
            continue
        facts = summary["stages"][stage] = stage_facts(storage)
        if stage not in SAMPLE_STAGES or not storage.exists(MANIFEST):
            continue
        samples = read_manifest(storage)
        classes = class_names or list(
            dict.fromkeys(name for sample in samples for name in sample.class_names())
        )
        instances = [len(sample.instances) for sample in samples]
        facts["instances_per_sample"] = round(float(np.mean(instances)), 3) if samples else 0.0
        quality = class_names and stage_quality(storage, samples, class_names)
        if quality:
            facts["label_quality"] = quality
        score_of = score_lookup(stage, classes, active)
        tiles, left_out = pick_tiles(samples, classes, score_of)
        facts["sheet"] = sheet_facts(stage, tiles, left_out, score_of is not None)
        for index, tile in enumerate(tiles):
            result.pictures[facts["sheet"]["tiles"][index]["picture"]] = tile_jpeg(
                storage, tile.sample
            )
        put(f"{stage}_samples.png", sheet_png(storage, tiles))
    # 2. The candidates (the pool, round 0, then the rounds): a histogram for each judged
    # round, and the curve across them all.
    rounds = finished_candidates(active)
    for summary_of_round in rounds:
        number = summary_of_round["round"]
        if number != POOL_ROUND:
            put(
                f"round_{number:02d}_iou_histogram.png",
                iou_histogram_png(round_scores(active, number), iou_threshold, f"round {number}"),
            )
        summary["rounds"].append({key: summary_of_round.get(key) for key in ROUND_KEYS})
    if rounds:
        put("miou_per_round.png", miou_per_round_png(rounds))
    # 3. What the run shipped.
    if active.exists(SUCCESS):
        summary["outcome"] = outcome(json.loads(active.read_bytes(SUCCESS)), rounds)
    write_json(report, SUMMARY, summary)
    return result


ROUND_KEYS = (
    "round",
    "judge",
    "candidates",
    "kept",
    "kept_fraction",
    "mean_iou_vs_pseudo",
    "val_miou",
    "per_class_iou",
    "model_version",
)


def sheet_facts(stage: str, tiles: list[Tile], left_out: int, scored: bool) -> dict[str, Any]:
    """What a stage's sheet shows: its file, the score it ranks by, every tile (class, kind,
    sample, score, and the name of its picture), and how many classes it leaves out."""
    return {
        "file": f"{stage}_samples.png",
        "score": STAGE_SCORES.get(stage) if scored else None,
        "classes_left_out": left_out,
        "tiles": [
            {
                "class": tile.class_name,
                "kind": tile.kind,
                "sample": tile.sample.id,
                "score": None if tile.score is None else round(tile.score, 4),
                "caption": caption(tile),
                "picture": f"tiles/{stage}/{index:03d}.jpg",
            }
            for index, tile in enumerate(tiles)
        ],
    }


def outcome(done: dict[str, Any], rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The dataset the loop shipped: samples, best round, its validation mIoU, why it stopped."""
    facts = done.get("summary", {})
    best = next((r for r in rounds if r["round"] == facts.get("best_round")), None)
    return {
        "samples": done.get("written"),
        "best_round": facts.get("best_round"),
        "chosen": facts.get("chosen"),
        "gain_over_pool": facts.get("gain_over_pool"),
        "val_miou": best["val_miou"] if best else None,
        "stop_reason": facts.get("stop_reason"),
    }


def miou_per_round_png(rounds: list[dict[str, Any]]) -> bytes:
    """Validation mIoU and kept fraction per round as a line plot."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(5, 3), dpi=100)
    numbers = [summary["round"] for summary in rounds]
    axes.plot(numbers, [s["val_miou"] for s in rounds], marker="o", label="validation mIoU")
    axes.plot(numbers, [s["kept_fraction"] for s in rounds], marker="s", label="kept fraction")
    axes.set_xticks(numbers)
    axes.set_ylim(0, 1)
    axes.set_xlabel("round")
    axes.legend(loc="lower right")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    pyplot.close(figure)
    return buffer.getvalue()


def round_scores(active: Storage, round_index: int) -> list[float]:
    """Every pool sample's IoU against the round's pseudo-labels (kept and discarded)."""
    folder = round_folder(round_index)
    samples = [
        *read_manifest(active, f"{folder}/kept.jsonl"),
        *read_manifest(active, f"{folder}/discarded.jsonl"),
    ]
    return [sample.scores[SCORE] for sample in samples]
