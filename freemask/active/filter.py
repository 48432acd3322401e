"""The quality filter: keep a sample when its generated mask agrees with the segmenter's.

Agreement is the IoU between the generated mask and the pseudo-label, per class of the sample,
over the pixels the generated mask labels (ignore, 255 or 65535 in a 16-bit mask, is left
out). Rules: ``any_class`` keeps a sample if any of its classes reaches the threshold (the
original method's rule, the default), ``mean_over_classes`` if their mean does, ``percentile``
keeps the best-scoring samples (by their mean), whole tie groups at a time, as close as it can
to ``100 - keep_percentile``% of the round. When every score ties, nothing ranks them:
``percentile`` then falls back to ``iou_threshold`` on the mean, and the verdicts name that rule
(the round summary shows it).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from freemask.config import ActiveConfig
from freemask.records import Sample, ignore_value


@dataclass(frozen=True)
class Verdict:
    """One sample's agreement per class, the score its rule used, and the decision."""

    per_class: dict[int, float]
    score: float
    kept: bool
    rule: str


def sample_classes(sample: Sample, generated: np.ndarray) -> list[int]:
    """The class ids a sample claims: its undisputed instances', else (no instances) those in
    its label map."""
    if sample.instances:
        return sorted({i.class_id for i in sample.instances if not i.disputed})
    present = np.unique(generated)
    return [int(value) for value in present if value not in (0, ignore_value(generated))]


def iou_vs_pseudo_label(
    generated: np.ndarray, pseudo: np.ndarray, class_ids: list[int]
) -> dict[int, float]:
    """Per class: IoU of generated and pseudo-label pixels, where the generated mask is not
    ignore."""
    valid = generated != ignore_value(generated)
    scores = {}
    for class_id in class_ids:
        mine = (generated == class_id) & valid
        theirs = (pseudo == class_id) & valid
        union = np.logical_or(mine, theirs).sum()
        scores[class_id] = float(np.logical_and(mine, theirs).sum() / union) if union else 0.0
    return scores


def keep_best(scores: list[float], share: float) -> list[bool]:
    """Keep whole groups of equal scores, best first, as close as possible to ``share`` of all
    (at least the best group; on a draw, the larger set)."""
    target = share * len(scores)
    kept_count, best_count, cut = 0, None, None
    for value, count in sorted(Counter(scores).items(), reverse=True):
        kept_count += count
        if best_count is None or abs(kept_count - target) <= abs(best_count - target):
            best_count, cut = kept_count, value
    return [score >= cut for score in scores]


def judge(per_class: list[dict[int, float]], rules: ActiveConfig) -> list[Verdict]:
    """Apply the keep rule to every sample of a round (percentile needs them all at once)."""
    means = [float(np.mean(list(scores.values()))) if scores else 0.0 for scores in per_class]
    rule = rules.keep_rule
    if rule == "any_class":
        used = [max(scores.values(), default=0.0) for scores in per_class]
        keep = [score >= rules.iou_threshold for score in used]
    elif rule == "percentile" and len(set(means)) > 1:
        used = means
        keep = keep_best(means, 1.0 - rules.keep_percentile / 100.0)
    else:
        if rule == "percentile":
            rule = f"mean_over_classes (percentile: all {len(means)} scores tie)"
        used = means
        keep = [score >= rules.iou_threshold for score in used]
    return [
        Verdict(scores, round(score, 6), bool(kept and scores), rule)
        for scores, score, kept in zip(per_class, used, keep, strict=True)
    ]
