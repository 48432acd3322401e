"""The active-learning loop: pseudo-label, filter, retrain, evaluate, until the stop rule says stop.

Round k: the current segmenter pseudo-labels every sample of the pool; samples whose generated
mask disagrees with it are discarded (kept for inspection, never deleted); a fresh segmenter is
trained on the kept ones and evaluated on the validation set; round k is logged to MLflow as a
nested run. ``should_continue`` decides whether round k+1 runs; the Kubeflow pipeline calls
the same function. Round 1's pseudo-labels come from the pretrained checkpoint in
``segment.model_id`` (its labels mapped onto the run's), or, for a model built from scratch,
from a segmenter trained on the whole pool first (round 0).

Under the output prefix: ``images/`` and ``masks/`` (the pool's files), per round
``rounds/NN/{pseudo/, kept.jsonl, discarded.jsonl, model/, summary.json}`` (the summary last:
a finished round is not run again), then ``manifest.jsonl`` (the best round's kept samples)
and ``_SUCCESS``.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np

from freemask.active.filter import iou_vs_pseudo_label, judge, sample_classes
from freemask.active.report import contact_sheet_png, iou_histogram_png
from freemask.config import ActiveConfig, RunConfig
from freemask.errors import FreemaskError
from freemask.progress import progress_bar
from freemask.records import Sample, read_manifest, serialize_samples, write_manifest
from freemask.segment import (
    TINY_MASK2FORMER_ID,
    Segmenter,
    evaluate,
    load_segmenter,
    load_trained,
    predict,
    train_segmenter,
)
from freemask.stage_output import SUCCESS, StageResult
from freemask.storage import (
    Storage,
    encode_image,
    open_storage,
    read_image,
    read_json,
    write_json,
)
from freemask.tracking import NullRun, Run

STAGE = "active"
CONTACT_ROWS = 6
VALIDATION_SHARE = 10  # one sample in ten is held out when no validation set is given


def should_continue(history: list[dict[str, Any]], rules: ActiveConfig) -> tuple[bool, str]:
    """Whether another round should run after ``history`` (one summary per finished round).

    Stops at ``max_rounds``, when the last round kept less than ``min_kept_fraction``, or when
    validation mIoU rose by less than ``min_miou_gain`` over the round before.
    """
    if not history:
        return True, "no round has run yet"
    last = history[-1]
    if len(history) >= rules.max_rounds:
        return False, f"reached max_rounds ({rules.max_rounds})"
    if last["kept_fraction"] < rules.min_kept_fraction:
        return (
            False,
            f"kept fraction {last['kept_fraction']:.3f} < min_kept_fraction {rules.min_kept_fraction}",
        )
    if len(history) >= 2:
        gain = last["val_miou"] - history[-2]["val_miou"]
        if gain < rules.min_miou_gain:
            return False, f"validation mIoU gain {gain:+.4f} < min_miou_gain {rules.min_miou_gain}"
    return True, "continue"


def split_validation(samples: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    """(pool, validation): a stable one-in-ten hold-out by sample id."""
    held = [
        s
        for s in samples
        if int(hashlib.sha256(s.id.encode()).hexdigest(), 16) % VALIDATION_SHARE == 0
    ]
    held_ids = {s.id for s in held}
    return [s for s in samples if s.id not in held_ids], held


def pseudo_label(
    segmenter: Segmenter, samples: list[Sample], data: Storage, target: Storage, batch: int = 4
) -> None:
    """Write each sample's pseudo-label as ``<id>.png`` under ``target`` (existing ones kept)."""
    todo = [sample for sample in samples if not target.exists(f"{sample.id}.png")]
    with progress_bar("pseudo-label", len(samples)) as advance:
        advance(len(samples) - len(todo))
        for start in range(0, len(todo), batch):
            chunk = todo[start : start + batch]
            images = [read_image(data, sample.image, mode="RGB") for sample in chunk]
            for sample, labels in zip(chunk, predict(segmenter, images), strict=True):
                target.write_bytes(f"{sample.id}.png", encode_image(labels, f"{sample.id}.png"))
            advance(len(chunk))


def filter_samples(
    samples: list[Sample], data: Storage, pseudo: Storage, rules: ActiveConfig, round_index: int
) -> tuple[list[Sample], list[Sample]]:
    """(kept, discarded), each sample scored (``iou_vs_pseudo_gt``) and stamped with the round."""
    per_class = []
    for sample in samples:
        generated = read_image(data, sample.semantic_mask)
        labels = read_image(pseudo, f"{sample.id}.png")
        per_class.append(iou_vs_pseudo_label(generated, labels, sample_classes(sample, generated)))
    kept, discarded = [], []
    for sample, verdict in zip(samples, judge(per_class, rules), strict=True):
        scores = {**sample.scores, "iou_vs_pseudo_gt": verdict.score}
        scores.update(
            {f"iou_vs_pseudo_gt.class_{k}": round(v, 6) for k, v in verdict.per_class.items()}
        )
        scored = sample.model_copy(update={"scores": scores, "round": round_index})
        (kept if verdict.kept else discarded).append(scored)
    return kept, discarded


def train_round(
    config: RunConfig, samples: list[Sample], data: Storage, model: Storage, run: Run
) -> Segmenter:
    """A fresh segmenter trained on ``samples`` (resuming from ``model``'s checkpoints)."""
    if model.exists("model.safetensors"):
        return load_trained(model)
    segmenter = load_segmenter(config.segment, config.classes, trainable=True)
    train_segmenter(segmenter, samples, data, model, config.segment, seed=config.seed, run=run)
    return segmenter


def run_active(
    config: RunConfig, inputs: str, outputs: str, *, run: Run | None = None
) -> StageResult:
    """Run the loop on the samples under ``inputs``; write rounds and the final manifest."""
    started = time.monotonic()
    run = run or NullRun()
    source, out = open_storage(inputs), open_storage(outputs)
    # 1. The pool (files copied once) and the validation set.
    samples = [s for s in read_manifest(source) if s.semantic_mask]
    if not samples:
        raise FreemaskError(f"{source.uri}: no labelled samples for the active-learning loop")
    for sample in samples:
        for path in (sample.image, sample.semantic_mask):
            if not out.exists(path):
                out.write_bytes(path, source.read_bytes(path))
    if config.segment.validation:
        validation_store = open_storage(config.segment.validation)
        pool, validation = samples, read_manifest(validation_store)
    else:
        (pool, validation), validation_store = split_validation(samples), out
    # 2. Round 1's pseudo-labeller.
    if config.segment.model_id == TINY_MASK2FORMER_ID:
        with run.child("round-0", tags={"freemask.round": "0"}) as bootstrap:
            labeller = train_round(config, pool, out, out.child("rounds/00/model"), bootstrap)
    else:
        labeller = load_segmenter(config.segment, config.classes, trainable=False)
    # 3. Rounds until the stop rule says stop.
    history: list[dict[str, Any]] = []
    while True:
        round_index = len(history) + 1
        history.append(
            run_round(config, round_index, pool, validation, validation_store, out, labeller, run)
        )
        trained = out.child(f"rounds/{round_index:02d}/model")
        if trained.exists("model.safetensors"):
            labeller = load_trained(trained)
        go_on, reason = should_continue(history, config.active)
        if not go_on:
            break
    # 4. The best round's kept samples are the dataset.
    best = max(history, key=lambda summary: summary["val_miou"])
    kept = read_manifest(out, f"rounds/{best['round']:02d}/kept.jsonl")
    write_manifest(out, kept)
    if best.get("model_version"):
        run.alias_model(f"{config.name}-segmenter", "best", best["model_version"])
    run.set_tags({"freemask.best_round": str(best["round"]), "freemask.stop_reason": reason})
    result = StageResult(
        stage=STAGE,
        output=out.uri,
        written=len(kept),
        dropped=len(pool) - len(kept),
        seconds=time.monotonic() - started,
        summary={"rounds": history, "best_round": best["round"], "stop_reason": reason},
    )
    write_json(out, SUCCESS, result.to_json())
    return result


def run_round(
    config: RunConfig,
    round_index: int,
    pool: list[Sample],
    validation: list[Sample],
    validation_store: Storage,
    out: Storage,
    labeller: Segmenter,
    parent: Run,
) -> dict[str, Any]:
    """One round; returns its summary (read back when the round already finished)."""
    folder = f"rounds/{round_index:02d}"
    if out.exists(f"{folder}/summary.json"):
        return read_json(out, f"{folder}/summary.json")
    kept_version = None
    with parent.child(f"round-{round_index}", tags={"freemask.round": str(round_index)}) as run:
        pseudo = out.child(f"{folder}/pseudo")
        pseudo_label(labeller, pool, out, pseudo)
        kept, discarded = filter_samples(pool, out, pseudo, config.active, round_index)
        out.write_bytes(f"{folder}/kept.jsonl", serialize_samples(kept))
        out.write_bytes(f"{folder}/discarded.jsonl", serialize_samples(discarded))
        if not kept:  # nothing to train on: the stop rule ends the loop on this round
            agreement = [s.scores["iou_vs_pseudo_gt"] for s in discarded]
            summary = {
                "round": round_index,
                "kept": 0,
                "discarded": len(discarded),
                "kept_fraction": 0.0,
                "mean_iou_vs_pseudo": round(float(np.mean(agreement)), 6),
                "val_miou": 0.0,
                "per_class_iou": {},
                "dataset_version": "empty",
                "run_id": run.run_id,
            }
            run.log_metrics({"kept_fraction": 0.0}, step=round_index)
            write_json(out, f"{folder}/summary.json", summary)
            return summary
        version = hashlib.sha256(",".join(sorted(s.id for s in kept)).encode()).hexdigest()[:12]
        run.set_tags({"freemask.dataset_version": version})
        run.log_params(
            {
                "iou_threshold": config.active.iou_threshold,
                "keep_rule": config.active.keep_rule,
                "pool": len(pool),
                "validation": len(validation),
            }
        )
        segmenter = train_round(config, kept, out, out.child(f"{folder}/model"), run)
        scores = evaluate(segmenter, validation, validation_store, config.classes)
        agreement = [s.scores["iou_vs_pseudo_gt"] for s in [*kept, *discarded]]
        summary = {
            "round": round_index,
            "kept": len(kept),
            "discarded": len(discarded),
            "kept_fraction": round(len(kept) / len(pool), 6),
            "mean_iou_vs_pseudo": round(float(np.mean(agreement)), 6),
            "val_miou": round(float(scores["miou"]), 6),
            "per_class_iou": scores["per_class_iou"],
            "dataset_version": version,
        }
        run.log_metrics(
            {
                "kept_fraction": summary["kept_fraction"],
                "mean_iou_vs_pseudo": summary["mean_iou_vs_pseudo"],
                "val_miou": summary["val_miou"],
                **{f"val_iou.{name}": value for name, value in scores["per_class_iou"].items()},
            },
            step=round_index,
        )
        _log_pictures(run, out, folder, kept, discarded, pseudo, config.active.iou_threshold)
        kept_version = run.log_model(
            segmenter.model, "segmenter", registered_name=f"{config.name}-segmenter"
        )
        summary["model_version"] = kept_version
        summary["run_id"] = run.run_id
        write_json(out, f"{folder}/summary.json", summary)
    parent.log_metrics(
        {"val_miou": summary["val_miou"], "kept_fraction": summary["kept_fraction"]},
        step=round_index,
    )
    return summary


def _log_pictures(
    run: Run, out: Storage, folder: str, kept, discarded, pseudo: Storage, threshold: float
) -> None:
    """The round's histogram, contact sheet and manifests as MLflow artifacts."""
    import tempfile
    from pathlib import Path

    scores = [s.scores["iou_vs_pseudo_gt"] for s in [*kept, *discarded]]
    rows = []
    for label, group in (("kept", kept), ("discarded", discarded)):
        for sample in group[: CONTACT_ROWS // 2]:
            caption = f"{label} {sample.scores['iou_vs_pseudo_gt']:.2f}\n{sample.id[:20]}"
            image = read_image(out, sample.image, mode="RGB")
            rows.append(
                (
                    caption,
                    image,
                    read_image(out, sample.semantic_mask),
                    read_image(pseudo, f"{sample.id}.png"),
                )
            )
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        (root / "iou_histogram.png").write_bytes(iou_histogram_png(scores, threshold, folder))
        (root / "contact_sheet.png").write_bytes(contact_sheet_png(rows))
        (root / "kept.jsonl").write_bytes(out.read_bytes(f"{folder}/kept.jsonl"))
        run.log_artifact(root, "round")
