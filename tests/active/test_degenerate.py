"""A loop whose dataset would be empty, or below active.min_dataset_fraction, fails with the
reason instead of exporting a degenerate set; ties are broken the same way every time."""

from __future__ import annotations

import random

import pytest
from helpers import write_shapes_set

from freemask.active import judge
from freemask.active.steps import finish, pool_of, round_folder
from freemask.cli import main
from freemask.errors import DegenerateResultError
from freemask.records import read_manifest, serialize_samples
from freemask.storage import write_json
from freemask.tracking import NullRun


def a_candidate(out, round_index: int, kept: list, val_miou: float) -> None:
    """A finished candidate's kept manifest and summary (round 0: the pool's)."""
    folder = round_folder(round_index)
    out.write_bytes(f"{folder}/kept.jsonl", serialize_samples(kept))
    summary = {"round": round_index, "judge": "-", "kept": len(kept), "val_miou": val_miou}
    write_json(out, f"{folder}/summary.json", summary)


def a_round_that_kept(out, samples, kept: int, score: float, val_miou: float = 0.0) -> None:
    """Round 1's files: its first ``kept`` samples kept, every score ``score``."""
    scored = [s.model_copy(update={"scores": {"iou_vs_pseudo_gt": score}}) for s in samples]
    folder = round_folder(1)
    out.write_bytes(f"{folder}/kept.jsonl", serialize_samples(scored[:kept]))
    out.write_bytes(f"{folder}/discarded.jsonl", serialize_samples(scored[kept:]))
    summary = {
        "round": 1,
        "judge": "the test's judge",
        "kept": kept,
        "candidates": len(samples),
        "keep_rule_used": "any_class",
        "val_miou": val_miou,
    }
    write_json(out, f"{folder}/summary.json", summary)


def test_a_loop_that_keeps_nothing_fails_with_the_reason(tmp_path, config_for, prepared) -> None:
    write_shapes_set(tmp_path / "pool", 10)
    config = config_for()
    out = prepared(config, tmp_path / "pool")
    pool = pool_of(out)
    a_round_that_kept(out, pool, 0, 0.0)
    with pytest.raises(DegenerateResultError, match=r"every score tied at 0\.000") as caught:
        finish(config, out, NullRun(), "reached max_rounds (1)", 0.0)
    assert f"0 of the pool's {len(pool)} samples" in str(caught.value)
    assert not out.exists("manifest.jsonl") and not out.exists("_SUCCESS")


def test_a_dataset_below_the_floor_fails_and_one_at_it_ships(
    tmp_path, config_for, prepared
) -> None:
    write_shapes_set(tmp_path / "pool", 20)
    config = config_for(active={"min_dataset_fraction": 0.2})
    out = prepared(config, tmp_path / "pool")
    pool = pool_of(out)  # 18: two of the 20 are the validation split
    a_round_that_kept(out, pool, 3, 0.5)
    with pytest.raises(DegenerateResultError, match="below the floor of 4"):
        finish(config, out, NullRun(), "stop", 0.0)
    a_round_that_kept(out, pool, 4, 0.5)
    assert finish(config, out, NullRun(), "stop", 0.0).written == 4


def test_a_loop_whose_rounds_keep_nothing_ships_the_unfiltered_pool(
    tmp_path, config_for, capsys
) -> None:
    import json

    import yaml

    write_shapes_set(tmp_path / "pool", 8)
    config = config_for(active={"max_rounds": 1, "iou_threshold": 1.0})
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    argv = ["active", "--config", str(tmp_path / "run.yaml"), "--in", str(tmp_path / "pool")]
    code = main(argv)
    output = capsys.readouterr()
    assert code == 0, output
    out = tmp_path / "active"
    pool = (out / "pool.jsonl").read_text()
    assert (out / "manifest.jsonl").read_text() == pool and pool
    summary = json.loads((out / "_SUCCESS").read_text())["summary"]
    assert summary["best_round"] == 0
    assert summary["chosen"].startswith("the unfiltered pool (round 0)")


def test_the_cli_exits_2_when_the_best_candidate_is_below_the_floor(
    tmp_path, config_for, prepared, capsys
) -> None:
    import yaml

    write_shapes_set(tmp_path / "pool", 10)
    config = config_for(active={"max_rounds": 1})
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    out = prepared(config, tmp_path / "pool")
    pool = pool_of(out)
    a_round_that_kept(out, pool, 0, 0.0, val_miou=0.3)
    a_candidate(out, 0, pool, val_miou=0.2)  # the pool validates worse than nothing kept
    argv = ["active", "--config", str(tmp_path / "run.yaml"), "--in", str(tmp_path / "pool")]
    code = main(argv)
    output = capsys.readouterr()
    assert code == 2, output
    assert "the dataset would hold 0 of the pool's" in output.out + output.err
    assert not (tmp_path / "active" / "_SUCCESS").exists()


def test_the_loop_ships_the_pool_when_every_round_validates_worse(
    tmp_path, config_for, prepared
) -> None:
    write_shapes_set(tmp_path / "pool", 12)
    config = config_for()
    out = prepared(config, tmp_path / "pool")
    pool = pool_of(out)
    a_candidate(out, 0, pool, val_miou=0.61)
    a_candidate(out, 1, pool[:8], val_miou=0.58)
    a_candidate(out, 2, pool[:6], val_miou=0.60)
    result = finish(config, out, NullRun(), "reached max_rounds (2)", 0.0)
    assert result.summary["best_round"] == 0 and result.written == len(pool)
    assert result.summary["chosen"] == (
        "the unfiltered pool (round 0), validation mIoU 0.610, +0.010 over round 2"
    )
    assert result.summary["gain_over_pool"] == 0.0
    assert [s.id for s in read_manifest(out)] == [s.id for s in pool]


def test_a_round_that_validates_better_than_the_pool_ships_and_says_by_how_much(
    tmp_path, config_for, prepared
) -> None:
    write_shapes_set(tmp_path / "pool", 12)
    config = config_for()
    out = prepared(config, tmp_path / "pool")
    pool = pool_of(out)
    a_candidate(out, 0, pool, val_miou=0.61)
    a_candidate(out, 1, pool[:8], val_miou=0.64)
    a_candidate(out, 2, pool[:6], val_miou=0.64)  # a tie: the earlier candidate wins
    result = finish(config, out, NullRun(), "stop", 0.0)
    assert result.summary["best_round"] == 1 and result.written == 8
    assert result.summary["gain_over_pool"] == 0.03
    assert "+0.030 over the unfiltered pool" in result.summary["chosen"]
    # The runner-up is the pool: its margin is said once.
    a_candidate(out, 2, pool[:6], val_miou=0.60)
    (out.root / "_SUCCESS").unlink()
    assert finish(config, out, NullRun(), "stop", 0.0).summary["chosen"] == (
        "round 1, validation mIoU 0.640, +0.030 over the unfiltered pool"
    )
    a_candidate(out, 2, pool[:6], val_miou=0.64)
    # A tie with the pool ships the pool: filtering has to earn its place.
    a_candidate(out, 0, pool, val_miou=0.64)
    (out.root / "_SUCCESS").unlink()
    assert finish(config, out, NullRun(), "stop", 0.0).summary["best_round"] == 0


def test_ties_are_broken_the_same_way_whatever_the_order() -> None:
    from freemask.config import ActiveConfig

    rules = ActiveConfig(keep_rule="percentile", keep_percentile=50.0)
    scores = [0.9, 0.5, 0.5, 0.5, 0.5, 0.2, 0.1, 0.9]
    per_class = [{1: value} for value in scores]
    kept = {i for i, v in enumerate(judge(per_class, rules)) if v.kept}
    for seed in range(5):
        order = list(range(len(scores)))
        random.Random(seed).shuffle(order)
        verdicts = judge([per_class[i] for i in order], rules)
        assert {order[i] for i, v in enumerate(verdicts) if v.kept} == kept
    # Whole tie groups: the 0.5s are kept or dropped together (here kept: 6 is nearer 4 than 2).
    assert kept == {0, 1, 2, 3, 4, 7}


def test_a_round_within_min_miou_gain_of_the_pool_does_not_ship(
    tmp_path, config_for, prepared
) -> None:
    """A round validating above the pool by no more than active.min_miou_gain is the
    validation set's noise: the pool ships, and the reason says why."""
    write_shapes_set(tmp_path / "pool", 12)
    config = config_for(active={"max_rounds": 2, "min_miou_gain": 0.005})
    out = prepared(config, tmp_path / "pool")
    pool = pool_of(out)
    a_candidate(out, 0, pool, val_miou=0.851)
    a_candidate(out, 1, pool[:8], val_miou=0.854)
    result = finish(config, out, NullRun(), "stop", 0.0)
    assert result.summary["best_round"] == 0 and result.written == len(pool)
    assert result.summary["chosen"] == (
        "the unfiltered pool (round 0), validation mIoU 0.851; round 1's +0.003 is within "
        "active.min_miou_gain 0.005"
    )
    a_candidate(out, 1, pool[:8], val_miou=0.857)  # beyond the margin: the round ships
    (out.root / "_SUCCESS").unlink()
    assert finish(config, out, NullRun(), "stop", 0.0).summary["best_round"] == 1
