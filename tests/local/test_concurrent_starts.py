"""Many starts at once: one ``freemask run`` holds a local work directory (the others are
refused in one line before they write anything), and a fresh sqlite tracking store is created
once however many processes open it together."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from helpers import CLASSES
from mlflow import MlflowClient

STARTS = 4


def start_all(commands: list[list[str]], cwd: Path) -> list[subprocess.CompletedProcess]:
    """Start every command at once; wait for all (each with its output)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    processes = [
        subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for command in commands
    ]
    results = []
    for process, command in zip(processes, commands, strict=True):
        out, err = process.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(command, process.returncode, out, err))
    return results


@pytest.mark.slow
def test_four_runs_on_one_fresh_workdir_make_one_parent_run(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "crowd",
                "workdir": str(tmp_path / "work"),
                "classes": CLASSES,
                "generate": {
                    "model_id": "builtin:tiny-sd",
                    "images_per_class": 1,
                    "height": 64,
                    "width": 64,
                    "num_inference_steps": 2,
                    "reject_implausible": False,
                },
                "compose": {"images": 4, "backgrounds_per_scene": 1},
                "segment": {
                    "model_id": "builtin:tiny-mask2former",
                    "image_size": 64,
                    "train_steps": 2,
                },
                "active": {"max_rounds": 1, "keep_rule": "percentile"},
            }
        )
    )
    command = [sys.executable, "-m", "freemask.cli", "run", "-c", str(config)]
    results = start_all([command] * STARTS, tmp_path)
    codes = Counter(result.returncode for result in results)
    assert set(codes) <= {0, 2} and codes[0] >= 1, [r.stderr.decode()[-2000:] for r in results]
    for result in results:
        if result.returncode == 2:
            printed = (result.stdout + result.stderr).decode().strip()
            assert "another freemask process" in printed and len(printed.splitlines()) == 1
    client = MlflowClient(f"sqlite:///{tmp_path / 'work' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("freemask")
    runs = client.search_runs([experiment.experiment_id])
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    assert len(parents) == 1
    children = [run.data.tags.get("freemask.round") for run in runs if run not in parents]
    assert sorted(children) == ["0", "1"]  # no duplicate round runs
    for run in runs:
        for key in run.data.metrics:
            steps = [point.step for point in client.get_metric_history(run.info.run_id, key)]
            assert len(steps) == len(set(steps)), f"{key} logged twice in {run.info.run_name}"


def test_a_fresh_sqlite_store_opened_by_four_processes_at_once(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    program = (
        "import sys; from freemask.tracking import MlflowTracker; "
        "tracker = MlflowTracker(sys.argv[1], 'shared'); "
        "tracker.start_run('start').finish()"
    )
    results = start_all([[sys.executable, "-c", program, uri]] * STARTS, tmp_path)
    assert [r.returncode for r in results] == [0] * STARTS, [
        r.stderr.decode()[-800:] for r in results
    ]
    client = MlflowClient(uri)
    assert sorted(e.name for e in client.search_experiments()) == ["Default", "shared"]
    experiment = client.get_experiment_by_name("shared")
    assert len(client.search_runs([experiment.experiment_id])) == STARTS
