"""The report folder of a whole run: what each stage made, and how the rounds went.

``write_run_report`` reads only the stages' outputs under the work directory, so it can be
written again at any time: a contact sheet per stage (images with their label masks laid
over), the IoU histogram of each active-learning round, validation mIoU per round as a plot,
and ``summary.json`` with the numbers behind them.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from freemask.active.report import iou_histogram_png, overlay
from freemask.active.steps import history, round_folder
from freemask.quality import stage_quality
from freemask.records import MANIFEST, Sample, read_manifest
from freemask.storage import Storage, read_image, write_json

# Stages whose outputs are labelled images, in pipeline order.
SAMPLE_STAGES = ("generate", "refine", "compose", "harmonize", "active")
SHEET_COLUMNS = 4
SHEET_ROWS = 2
TILE = 128
REPORT = "report"


def stage_sheet_png(storage: Storage, samples: list[Sample]) -> bytes:
    """A grid of samples: each image beside itself with its semantic mask laid over."""
    shown = samples[: SHEET_COLUMNS * SHEET_ROWS]
    rows = max(1, (len(shown) + SHEET_COLUMNS - 1) // SHEET_COLUMNS)
    sheet = Image.new("RGB", (SHEET_COLUMNS * 2 * TILE, rows * (TILE + 14)), "white")
    draw = ImageDraw.Draw(sheet)
    for index, sample in enumerate(shown):
        image = read_image(storage, sample.image, mode="RGB")
        left, top = (index % SHEET_COLUMNS) * 2 * TILE, (index // SHEET_COLUMNS) * (TILE + 14)
        sheet.paste(Image.fromarray(image).resize((TILE, TILE)), (left, top))
        if sample.semantic_mask:
            labels = read_image(storage, sample.semantic_mask)
            tile = Image.fromarray(overlay(image, labels)).resize((TILE, TILE), Image.NEAREST)
            sheet.paste(tile, (left + TILE, top))
        draw.text((left + 2, top + TILE), ", ".join(sample.class_names())[:40], fill="black")
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


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
    return [sample.scores["iou_vs_pseudo_gt"] for sample in samples]


def write_run_report(
    workdir: Storage, iou_threshold: float | None = None, class_names: list[str] | None = None
) -> dict[str, Any]:
    """Write ``<workdir>/report/`` from the stages' outputs; return its summary.

    With ``class_names``, each stage whose samples have exact truth (``truth_mask``) also gets
    its label quality against it (``freemask.quality``) under ``stages.<stage>.label_quality``.
    """
    report = workdir.child(REPORT)
    summary: dict[str, Any] = {"stages": {}, "rounds": [], "files": []}

    def put(name: str, data: bytes) -> None:
        report.write_bytes(name, data)
        summary["files"].append(name)

    # 1. One contact sheet per stage that has labelled samples.
    for stage in SAMPLE_STAGES:
        storage = workdir.child(stage)
        if not storage.exists(MANIFEST):
            continue
        samples = read_manifest(storage)
        instances = [len(sample.instances) for sample in samples]
        summary["stages"][stage] = {
            "samples": len(samples),
            "instances_per_sample": round(float(np.mean(instances)), 3) if samples else 0.0,
        }
        quality = class_names and stage_quality(storage, samples, class_names)
        if quality:
            summary["stages"][stage]["label_quality"] = quality
        put(f"{stage}_samples.png", stage_sheet_png(storage, samples))
    # 2. The active-learning rounds: a histogram each, and the curve across them.
    active = workdir.child("active")
    rounds = history(active)
    for summary_of_round in rounds:
        number = summary_of_round["round"]
        scores = round_scores(active, number)
        put(
            f"round_{number:02d}_iou_histogram.png",
            iou_histogram_png(scores, iou_threshold, f"round {number}"),
        )
        summary["rounds"].append(
            {key: summary_of_round[key] for key in ("round", "kept", "kept_fraction", "val_miou")}
        )
    if rounds:
        put("miou_per_round.png", miou_per_round_png(rounds))
    write_json(report, "summary.json", summary)
    return summary
