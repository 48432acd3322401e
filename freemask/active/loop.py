"""The active-learning loop: pseudo-label, filter, retrain, evaluate, until the stop rule says stop.

Round k: the current segmenter pseudo-labels every sample of the pool; samples whose generated
mask disagrees with it are discarded (kept for inspection, never deleted); a fresh segmenter is
trained on the kept ones and evaluated on the validation set; round k is logged to MLflow as a
nested run. ``should_continue`` decides whether round k+1 runs; the Kubeflow pipeline calls
the same function. Round 1's pseudo-labels come from the pretrained checkpoint in
``segment.model_id`` (its labels mapped onto the run's), or, for a model built from scratch,
from a segmenter trained on the whole pool first (round 0).

Under the output prefix: ``images/`` and ``masks/`` (the pool's files), ``pool.jsonl`` and
``validation.jsonl``, per round
``rounds/NN/{pseudo/, kept.jsonl, discarded.jsonl, model/, summary.json}`` (the summary last:
a finished round is not run again), then ``manifest.jsonl`` (the best round's kept samples)
and ``_SUCCESS``. The steps live in ``freemask.active.steps``; this module holds the parts
they share and the local loop.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from freemask.active.filter import iou_vs_pseudo_label, judge, sample_classes
from freemask.config import ActiveConfig, RunConfig
from freemask.progress import progress_bar
from freemask.records import Sample
from freemask.segment import (
    Segmenter,
    load_segmenter,
    load_trained,
    predict,
    train_segmenter,
)
from freemask.stage_output import StageResult
from freemask.storage import (
    Storage,
    encode_image,
    open_storage,
    read_image,
)
from freemask.tracking import NullRun, Run

STAGE = "active"
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
    with progress_bar("train segmenter", config.segment.train_steps) as advance:
        train_segmenter(
            segmenter,
            samples,
            data,
            model,
            config.segment,
            seed=config.seed,
            run=run,
            on_step=lambda _step: advance(1),
        )
    return segmenter


def run_active(
    config: RunConfig, inputs: str, outputs: str, *, run: Run | None = None
) -> StageResult:
    """Run the loop on the samples under ``inputs``; write rounds and the final manifest.

    Finished rounds (with a summary) are not run again, so a killed loop resumes.
    """
    from freemask.active import steps

    started = time.monotonic()
    run = run or NullRun()
    out = open_storage(outputs)
    steps.prepare(config, inputs, out)
    if steps.needs_bootstrap(config) and not out.exists("rounds/00/model/model.safetensors"):
        steps.bootstrap(config, out, run)
    round_index = 1
    while True:
        if not out.exists(f"{steps.round_folder(round_index)}/summary.json"):
            steps.pseudo(config, out, round_index)
            steps.select(config, out, round_index)
            steps.train(config, out, round_index, run)
        steps.close(config, out, round_index, run)
        go_on, reason = should_continue(steps.history(out, round_index), config.active)
        if not go_on:
            return steps.finish(config, out, run, reason, time.monotonic() - started)
        round_index += 1
