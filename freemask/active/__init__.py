"""Stage 7, active: the IoU quality filter and the active-learning loop with its stop rule."""

from freemask.active.filter import Verdict, iou_vs_pseudo_label, judge, sample_classes
from freemask.active.loop import run_active
from freemask.active.relabel import relabel_mask, relabel_samples
from freemask.active.rounds import (
    Selection,
    filter_samples,
    pseudo_label,
    split_validation,
    train_round,
)
from freemask.active.stop_rule import should_continue

__all__ = [
    "Selection",
    "Verdict",
    "filter_samples",
    "iou_vs_pseudo_label",
    "judge",
    "pseudo_label",
    "relabel_mask",
    "relabel_samples",
    "run_active",
    "sample_classes",
    "should_continue",
    "split_validation",
    "train_round",
]
