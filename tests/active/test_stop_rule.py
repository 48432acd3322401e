"""``should_continue``: each stop rule on its own."""

from __future__ import annotations

from freemask.active import should_continue
from freemask.config import ActiveConfig

RULES = ActiveConfig(max_rounds=3, min_miou_gain=0.01, min_kept_fraction=0.2)


def summary(val_miou: float, kept_fraction: float = 0.8) -> dict:
    return {"val_miou": val_miou, "kept_fraction": kept_fraction}


def test_first_round_always_runs() -> None:
    assert should_continue([], RULES) == (True, "no round has run yet")


def test_stops_at_max_rounds() -> None:
    go_on, reason = should_continue([summary(0.3), summary(0.4), summary(0.5)], RULES)
    assert not go_on and "max_rounds (3)" in reason


def test_stops_when_too_little_is_kept() -> None:
    go_on, reason = should_continue([summary(0.3, kept_fraction=0.1)], RULES)
    assert not go_on and "min_kept_fraction" in reason


def test_stops_when_miou_gain_is_too_small() -> None:
    go_on, reason = should_continue([summary(0.40), summary(0.405)], RULES)
    assert not go_on and "gain +0.0050" in reason


def test_continues_while_rounds_improve() -> None:
    assert should_continue([summary(0.3)], RULES)[0]
    assert should_continue([summary(0.3), summary(0.35)], RULES)[0]
