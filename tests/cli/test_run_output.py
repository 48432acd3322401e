"""What ``freemask run`` tells: the stage it is at (``stage 3/7: refine``), and at the end the
exported round, why the loop stopped and the commands to run next."""

from __future__ import annotations

from pathlib import Path

import yaml

import freemask.local.runner as runner
from freemask.cli import main
from freemask.local.runner import PIPELINE, LocalRunReport
from freemask.stage_output import StageResult


def fake_run_local(config, run=None, on_stage=None) -> LocalRunReport:
    """Tell each stage as the runner does, and report a finished two-round loop."""
    report = LocalRunReport(
        run_id="0123abcd",
        tracking_uri=f"sqlite:///{Path(config.workdir).resolve() / 'mlflow.db'}",
        workdir=config.workdir,
    )
    for number, (stage, _, _) in enumerate(PIPELINE, start=1):
        on_stage(number, len(PIPELINE), stage)
        report.ran[stage] = StageResult(stage=stage, output=f"{config.workdir}/{stage}", written=4)
    rounds = [
        {"round": 0, "kept": 40, "kept_fraction": 1.0, "val_miou": 0.57},
        {"round": 1, "kept": 30, "kept_fraction": 0.75, "val_miou": 0.61},
        {"round": 2, "kept": 24, "kept_fraction": 0.6, "val_miou": 0.58},
    ]
    report.ran["active"].written = 30
    report.ran["active"].summary = {
        "rounds": rounds,
        "best_round": 1,
        "chosen": "round 1, validation mIoU 0.610, +0.040 over the unfiltered pool, +0.030 "
        "over round 2",
        "stop_reason": "validation mIoU gained -0.030 < active.min_miou_gain 0.005",
    }
    report.report = {"rounds": rounds, "files": ["index.html"]}
    return report


def test_run_tells_each_stage_then_the_outcome_and_what_to_run_next(
    tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.setattr(runner, "run_local", fake_run_local)
    monkeypatch.setenv("COLUMNS", "200")
    config = tmp_path / "run.yaml"
    workdir = tmp_path / "work"
    config.write_text(yaml.safe_dump({"classes": ["cat", "dog"], "workdir": str(workdir)}))
    assert main(["run", "-c", str(config)]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"stage {number}/7: {stage}" for number, (stage, _, _) in enumerate(PIPELINE, start=1)
    ]
    shown = captured.out
    assert (
        "exported: 30 samples of round 1, validation mIoU 0.610, +0.040 over the unfiltered "
        "pool, +0.030 over round 2: the best validated candidate" in shown
    )
    assert "0 (pool)" in shown  # the pool is a row of the rounds' table
    assert "stopped: validation mIoU gained -0.030 < active.min_miou_gain 0.005" in shown
    assert f"mlflow ui --backend-store-uri sqlite:///{workdir.resolve() / 'mlflow.db'}" in shown
    assert f"freemask compare 0123abcd --config {config}" in shown
    assert f"freemask export --config {config} --format voc --out DIR" in shown
