"""What a round does to samples: hold out validation, pseudo-label, filter by IoU, train.

The steps (``freemask.active.steps``) call these on the files under the loop's prefix.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from freemask.active.filter import iou_vs_pseudo_label, judge, sample_classes
from freemask.config import ActiveConfig, RunConfig
from freemask.progress import progress_bar
from freemask.records import Sample
from freemask.segment import Segmenter, load_segmenter, load_trained, predict, train_segmenter
from freemask.storage import Storage, encode_image, read_image
from freemask.tracking import Run

VALIDATION_SHARE = 10  # one sample in ten is held out when no validation set is given
SCORE = "iou_vs_pseudo_gt"


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
    segmenter: Segmenter,
    samples: list[Sample],
    data: Storage,
    target: Storage,
    batch: int | None = None,
) -> None:
    """Write each sample's pseudo-label as ``<id>.png`` under ``target`` (existing ones kept),
    ``batch`` images per forward pass (default: the segmenter's ``predict_batch_size``)."""
    batch = batch or segmenter.predict_batch_size
    todo = [sample for sample in samples if not target.exists(f"{sample.id}.png")]
    done = len(samples) - len(todo)
    with progress_bar("pseudo-label: images", len(samples), done=done) as advance:
        for start in range(0, len(todo), batch):
            chunk = todo[start : start + batch]
            images = [read_image(data, sample.image, mode="RGB") for sample in chunk]
            for sample, labels in zip(chunk, predict(segmenter, images), strict=True):
                target.write_bytes(f"{sample.id}.png", encode_image(labels, f"{sample.id}.png"))
            advance(len(chunk))


@dataclass
class Selection:
    """A round's filter result: kept and discarded samples and the keep rule that decided."""

    kept: list[Sample]
    discarded: list[Sample]
    rule: str


def filter_samples(
    samples: list[Sample], data: Storage, pseudo: Storage, rules: ActiveConfig, round_index: int
) -> Selection:
    """Score each sample against its pseudo-label (``iou_vs_pseudo_gt``, overall and per class,
    replacing an earlier round's), stamp it with the round, and split it by the keep rule."""
    per_class = []
    for sample in samples:
        generated = read_image(data, sample.semantic_mask)
        labels = read_image(pseudo, f"{sample.id}.png")
        per_class.append(iou_vs_pseudo_label(generated, labels, sample_classes(sample, generated)))
    verdicts = judge(per_class, rules)
    kept, discarded = [], []
    for sample, verdict in zip(samples, verdicts, strict=True):
        scores = {k: v for k, v in sample.scores.items() if not k.startswith(SCORE)}
        scores[SCORE] = verdict.score
        scores.update({f"{SCORE}.class_{k}": round(v, 6) for k, v in verdict.per_class.items()})
        scored = sample.model_copy(update={"scores": scores, "round": round_index})
        (kept if verdict.kept else discarded).append(scored)
    return Selection(kept, discarded, verdicts[0].rule if verdicts else rules.keep_rule)


def train_round(
    config: RunConfig,
    samples: list[Sample],
    data: Storage,
    model: Storage,
    run: Run,
    start_from: Segmenter | None = None,
) -> Segmenter:
    """A segmenter trained on ``samples``: ``start_from`` fine-tuned, else a fresh one (either
    resuming from ``model``'s checkpoints; a finished model is loaded, not retrained)."""
    if model.exists("model.safetensors"):
        return load_trained(model, config.segment)
    segmenter = start_from or load_segmenter(config.segment, config.classes, trainable=True)
    with progress_bar("train segmenter: steps", config.segment.train_steps) as advance:
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
