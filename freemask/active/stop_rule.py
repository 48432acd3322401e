"""The loop's stop rule: whether another active-learning round should run.

The local loop and the Kubeflow pipeline's ``close`` step call the same function.
"""

from __future__ import annotations

from typing import Any

from freemask.config import ActiveConfig


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
