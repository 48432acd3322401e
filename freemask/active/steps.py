"""The active-learning loop as separate steps over one output prefix.

Every step reads what it needs from files under the prefix, so the local loop and the Kubeflow
pipeline (one task per step, in separate processes) run the very same code:
``prepare`` (pool and validation), ``bootstrap`` (round 0: a first segmenter when no pretrained
checkpoint pseudo-labels round 1), then per round ``pseudo``, ``select``, ``train`` and
``close`` (evaluate, log the nested MLflow run, write ``rounds/NN/summary.json``), and
``finish`` (the best round's kept samples become the dataset).
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from freemask.active.report import contact_sheet_png, iou_histogram_png
from freemask.active.rounds import filter_samples, pseudo_label, split_validation, train_round
from freemask.config import RunConfig
from freemask.errors import FreemaskError
from freemask.records import Sample, read_manifest, serialize_samples, write_manifest
from freemask.segment import BUILTIN_IDS, Segmenter, evaluate, load_segmenter, load_trained
from freemask.stage_output import SUCCESS, StageResult
from freemask.storage import Storage, open_storage, read_image, read_json, write_json
from freemask.tracking import Run

STAGE = "active"
POOL = "pool.jsonl"
VALIDATION = "validation.jsonl"
ROUND_TAG = "freemask.round"
CONTACT_ROWS = 6


def round_folder(round_index: int) -> str:
    return f"rounds/{round_index:02d}"


def prepare(config: RunConfig, inputs: str, out: Storage) -> None:
    """Copy the labelled samples' files under ``out``; write the pool and validation lists."""
    if out.exists(POOL):
        return
    source = open_storage(inputs)
    samples = [sample for sample in read_manifest(source) if sample.semantic_mask]
    if not samples:
        raise FreemaskError(f"{source.uri}: no labelled samples for the active-learning loop")
    for sample in samples:
        for path in (sample.image, sample.semantic_mask):
            if not out.exists(path):
                out.write_bytes(path, source.read_bytes(path))
    pool, validation = (samples, []) if config.segment.validation else split_validation(samples)
    out.write_bytes(VALIDATION, serialize_samples(validation))
    out.write_bytes(POOL, serialize_samples(pool))  # written last: the prefix is prepared


def pool_of(out: Storage) -> list[Sample]:
    return read_manifest(out, POOL)


def validation_of(config: RunConfig, out: Storage) -> tuple[list[Sample], Storage]:
    if config.segment.validation:
        store = open_storage(config.segment.validation)
        return read_manifest(store), store
    return read_manifest(out, VALIDATION), out


def needs_bootstrap(config: RunConfig) -> bool:
    """True when round 1 has no pretrained checkpoint to pseudo-label with."""
    return config.segment.model_id in BUILTIN_IDS


def bootstrap(config: RunConfig, out: Storage, parent: Run) -> None:
    """Round 0: train the first pseudo-labeller on the whole pool."""
    with parent.child_with_tag(ROUND_TAG, "0", "round-0") as run:
        train_round(config, pool_of(out), out, out.child("rounds/00/model"), run)


def labeller(config: RunConfig, out: Storage, round_index: int) -> Segmenter:
    """The segmenter that pseudo-labels round ``round_index``."""
    previous = out.child(f"{round_folder(round_index - 1)}/model")
    if previous.exists("model.safetensors"):
        return load_trained(previous)
    if needs_bootstrap(config):
        raise FreemaskError(f"{previous.uri}: no trained segmenter for round {round_index}")
    return load_segmenter(config.segment, config.classes, trainable=False)


def pseudo(config: RunConfig, out: Storage, round_index: int) -> None:
    """Pseudo-label the pool for round ``round_index``."""
    target = out.child(f"{round_folder(round_index)}/pseudo")
    pseudo_label(labeller(config, out, round_index), pool_of(out), out, target)


def select(config: RunConfig, out: Storage, round_index: int) -> tuple[int, int]:
    """Filter the pool against its pseudo-labels; return (kept, discarded)."""
    folder = round_folder(round_index)
    kept, discarded = filter_samples(
        pool_of(out), out, out.child(f"{folder}/pseudo"), config.active, round_index
    )
    out.write_bytes(f"{folder}/discarded.jsonl", serialize_samples(discarded))
    out.write_bytes(f"{folder}/kept.jsonl", serialize_samples(kept))
    return len(kept), len(discarded)


def train(config: RunConfig, out: Storage, round_index: int, parent: Run) -> None:
    """Train round ``round_index``'s segmenter on its kept samples (nothing when none was kept)."""
    folder = round_folder(round_index)
    kept = read_manifest(out, f"{folder}/kept.jsonl")
    if kept:
        with parent.child_with_tag(ROUND_TAG, str(round_index), f"round-{round_index}") as run:
            train_round(config, kept, out, out.child(f"{folder}/model"), run)


def close(config: RunConfig, out: Storage, round_index: int, parent: Run) -> dict[str, Any]:
    """Evaluate and log round ``round_index``; write and return its summary."""
    folder = round_folder(round_index)
    if out.exists(f"{folder}/summary.json"):
        return read_json(out, f"{folder}/summary.json")
    kept = read_manifest(out, f"{folder}/kept.jsonl")
    discarded = read_manifest(out, f"{folder}/discarded.jsonl")
    pool = len(kept) + len(discarded)
    agreement = [s.scores["iou_vs_pseudo_gt"] for s in [*kept, *discarded]]
    version = (
        hashlib.sha256(",".join(sorted(s.id for s in kept)).encode()).hexdigest()[:12]
        if kept
        else "empty"
    )
    summary: dict[str, Any] = {
        "round": round_index,
        "kept": len(kept),
        "discarded": len(discarded),
        "kept_fraction": round(len(kept) / max(pool, 1), 6),
        "mean_iou_vs_pseudo": round(float(np.mean(agreement)) if agreement else 0.0, 6),
        "val_miou": 0.0,
        "per_class_iou": {},
        "dataset_version": version,
        "model_version": None,
    }
    with parent.child_with_tag(ROUND_TAG, str(round_index), f"round-{round_index}") as run:
        run.set_tags({"freemask.dataset_version": version})
        run.log_params(
            {
                "iou_threshold": config.active.iou_threshold,
                "keep_rule": config.active.keep_rule,
                "pool": pool,
            }
        )
        model = out.child(f"{folder}/model")
        if kept and model.exists("model.safetensors"):
            segmenter = load_trained(model)
            validation, store = validation_of(config, out)
            scores = evaluate(segmenter, validation, store, config.classes)
            summary["val_miou"] = round(float(scores["miou"]), 6)
            summary["per_class_iou"] = scores["per_class_iou"]
            summary["model_version"] = run.log_model(
                segmenter.model, "segmenter", registered_name=f"{config.name}-segmenter"
            )
        run.log_metrics(
            {
                "kept_fraction": summary["kept_fraction"],
                "mean_iou_vs_pseudo": summary["mean_iou_vs_pseudo"],
                "val_miou": summary["val_miou"],
                **{f"val_iou.{name}": value for name, value in summary["per_class_iou"].items()},
            },
            step=round_index,
        )
        log_pictures(run, out, folder, kept, discarded, config.active.iou_threshold)
        summary["run_id"] = run.run_id
    parent.log_metrics(
        {"val_miou": summary["val_miou"], "kept_fraction": summary["kept_fraction"]},
        step=round_index,
    )
    write_json(out, f"{folder}/summary.json", summary)
    return summary


def history(out: Storage, up_to: int | None = None) -> list[dict[str, Any]]:
    """The summaries of the finished rounds 1, 2, ... (up to ``up_to``), in order."""
    summaries, round_index = [], 1
    while out.exists(f"{round_folder(round_index)}/summary.json") and (
        up_to is None or round_index <= up_to
    ):
        summaries.append(read_json(out, f"{round_folder(round_index)}/summary.json"))
        round_index += 1
    return summaries


def finish(
    config: RunConfig, out: Storage, parent: Run, reason: str, seconds: float
) -> StageResult:
    """Make the best round's kept samples the dataset; alias its model ``best``."""
    rounds = history(out)
    if not rounds:
        raise FreemaskError(f"{out.uri}: no finished round to choose from")
    best = max(rounds, key=lambda summary: summary["val_miou"])
    kept = read_manifest(out, f"{round_folder(best['round'])}/kept.jsonl")
    write_manifest(out, kept)
    if best.get("model_version"):
        parent.alias_model(f"{config.name}-segmenter", "best", best["model_version"])
    parent.set_tags({"freemask.best_round": str(best["round"]), "freemask.stop_reason": reason})
    result = StageResult(
        stage=STAGE,
        output=out.uri,
        written=len(kept),
        dropped=len(pool_of(out)) - len(kept),
        seconds=seconds,
        summary={"rounds": rounds, "best_round": best["round"], "stop_reason": reason},
    )
    write_json(out, SUCCESS, result.to_json())
    return result


def log_pictures(run: Run, out: Storage, folder: str, kept, discarded, threshold: float) -> None:
    """The round's IoU histogram, contact sheet and kept manifest as MLflow artifacts."""
    pseudo_store = out.child(f"{folder}/pseudo")
    rows = []
    for label, group in (("kept", kept), ("discarded", discarded)):
        for sample in group[: CONTACT_ROWS // 2]:
            caption = f"{label} {sample.scores['iou_vs_pseudo_gt']:.2f}\n{sample.id[:20]}"
            image = read_image(out, sample.image, mode="RGB")
            labels = read_image(pseudo_store, f"{sample.id}.png")
            rows.append((caption, image, read_image(out, sample.semantic_mask), labels))
    scores = [s.scores["iou_vs_pseudo_gt"] for s in [*kept, *discarded]]
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        (root / "iou_histogram.png").write_bytes(iou_histogram_png(scores, threshold, folder))
        (root / "contact_sheet.png").write_bytes(contact_sheet_png(rows))
        (root / "kept.jsonl").write_bytes(serialize_samples(kept))
        run.log_artifact(root, "round")


def storage_of(config: RunConfig, outputs: str | None = None) -> Storage:
    """The loop's output prefix: ``outputs`` or ``<workdir>/active``."""
    return open_storage(outputs or f"{config.workdir.rstrip('/')}/active")
