"""The active-learning loop end to end on the tiny Mask2Former, logged to a real MLflow server."""

from __future__ import annotations

import json

import pytest
from helpers import write_shapes_set
from mlflow import MlflowClient

from freemask.active import run_active
from freemask.cli import main
from freemask.config import RunConfig
from freemask.records import read_manifest
from freemask.storage import LocalStorage
from freemask.tracking import MlflowTracker


def loop_config(tmp_path, **active) -> RunConfig:
    return RunConfig.model_validate(
        {
            "name": "loop-test",
            "workdir": str(tmp_path),
            "classes": ["box", "ball"],
            "segment": {
                "model_id": "builtin:tiny-mask2former",
                "image_size": 64,
                "batch_size": 4,
                "learning_rate": 1e-3,
                "train_steps": 30,
                "checkpoint_every": 15,
            },
            "active": {"max_rounds": 2, "iou_threshold": 0.3, **active},
        }
    )


@pytest.mark.slow
def test_two_rounds_are_logged_as_nested_runs(tmp_path, mlflow_server, capsys) -> None:
    write_shapes_set(tmp_path / "pool", 24)
    config = loop_config(tmp_path)
    tracker = MlflowTracker(mlflow_server, "active-loop-test")
    parent = tracker.start_run("pipeline")
    with parent:
        result = run_active(config, str(tmp_path / "pool"), str(tmp_path / "active"), run=parent)
    rounds = result.summary["rounds"]
    assert [summary["round"] for summary in rounds] == [0, 1, 2]  # 0: the unfiltered pool
    assert result.summary["stop_reason"] == "reached max_rounds (2)"

    client = MlflowClient(mlflow_server)
    children = client.search_runs(
        [tracker.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.run_id}'"
    )
    by_round = {
        r.data.tags["freemask.round"]: r for r in children if "freemask.round" in r.data.tags
    }
    assert set(by_round) == {"0", "1", "2"}  # round 0 trains on the pool and judges round 1
    # Round 2's two cross-fitted judges are runs of their own.
    judges = {r.data.tags["freemask.judge"] for r in children if "freemask.judge" in r.data.tags}
    assert judges == {"2.0", "2.1"}
    assert by_round["0"].data.metrics["val_miou"] == rounds[0]["val_miou"]
    for key in ("1", "2"):
        metrics = by_round[key].data.metrics
        assert {"kept_fraction", "mean_iou_vs_pseudo", "val_miou", "val_iou.background"} <= set(
            metrics
        )
        assert len(client.get_metric_history(by_round[key].info.run_id, "train.loss")) == 30
        run_id = by_round[key].info.run_id
        assert {item.path for item in client.list_artifacts(run_id, "round")} == {
            "round/kept.jsonl"
        }
        # The pictures are MLflow images, one step per round.
        images = {
            item.path.split("+timestamp")[0] for item in client.list_artifacts(run_id, "images")
        }
        assert {f"images/iou_histogram+step+{key}", f"images/contact_sheet+step+{key}"} <= images
        assert by_round[key].data.tags["freemask.dataset_version"]
    best = client.get_model_version_by_alias("loop-test-segmenter", "best")
    chosen = result.summary["best_round"]
    assert best.run_id == by_round[str(chosen)].info.run_id
    assert max(r["val_miou"] for r in rounds) == rounds[chosen]["val_miou"]
    kept = read_manifest(LocalStorage(tmp_path / "active"))
    assert len(kept) == result.written == rounds[chosen]["kept"]
    assert all(sample.round == (chosen or None) for sample in kept)

    assert main(["compare", parent.run_id, "--tracking-uri", mlflow_server]) == 0
    printed = capsys.readouterr().out
    assert "round 1" in printed and "round 2" in printed and "val_miou" in printed


def test_finished_rounds_are_not_run_again(tmp_path, monkeypatch) -> None:
    write_shapes_set(tmp_path / "pool", 12)
    config = loop_config(tmp_path, max_rounds=1)
    first = run_active(config, str(tmp_path / "pool"), str(tmp_path / "active"))

    def refuse(*args, **kwargs):
        raise AssertionError("a finished round must not train again")

    monkeypatch.setattr("freemask.active.rounds.train_segmenter", refuse)
    again = run_active(config, str(tmp_path / "pool"), str(tmp_path / "active"))
    assert again.summary["rounds"] == first.summary["rounds"]
    best = first.summary["best_round"]
    summary = json.loads((tmp_path / "active" / "rounds" / f"0{best}" / "summary.json").read_text())
    assert summary["kept"] == first.written


def test_stop_rule_ends_the_loop_early(tmp_path) -> None:
    write_shapes_set(tmp_path / "pool", 12)
    config = loop_config(tmp_path, max_rounds=3, iou_threshold=0.3, min_kept_fraction=0.99)
    result = run_active(config, str(tmp_path / "pool"), str(tmp_path / "active"))
    assert [summary["round"] for summary in result.summary["rounds"]] == [0, 1]
    assert "min_kept_fraction" in result.summary["stop_reason"]


def test_no_round_ships_the_unfiltered_pool(tmp_path, monkeypatch) -> None:
    """active.max_rounds 0 (the default): round 0 trains and validates on the pool, no judge
    pseudo-labels anything, and the pool is the exported dataset."""

    def refuse(*args, **kwargs):
        raise AssertionError("no round may pseudo-label with max_rounds 0")

    monkeypatch.setattr("freemask.active.steps.pseudo", refuse)
    write_shapes_set(tmp_path / "pool", 12)
    config = loop_config(tmp_path, max_rounds=0)
    result = run_active(config, str(tmp_path / "pool"), str(tmp_path / "active"))
    assert [summary["round"] for summary in result.summary["rounds"]] == [0]
    assert "max_rounds is 0" in result.summary["stop_reason"]
    assert "unfiltered pool" in result.summary["chosen"]
    active = LocalStorage(tmp_path / "active")
    pool = read_manifest(active, "pool.jsonl")
    assert {s.id for s in read_manifest(active)} == {s.id for s in pool}
    assert not active.exists("rounds/01/summary.json")
