"""SIGKILL a small ``freemask run`` at 20 seeded random points and re-run: the result must be the
uninterrupted run's, with one parent run and one registered model version per round."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

DRIVER = Path(__file__).with_name("kill_driver.py")
POINTS = 20


@pytest.mark.slow
def test_runs_killed_anywhere_end_identical_to_an_uninterrupted_run(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(DRIVER), str(tmp_path), "--seed", "0", "--points", str(POINTS)],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    points = [point for chain in report["chains"] for point in chain["points"]]
    assert report["kills"] == len(points) >= POINTS, report
    assert any(point.startswith("create_run:kill-test") for point in points)
    assert any(point.startswith("write:active/rounds/01/model/") for point in points)
    assert any(point.startswith("model_version") for point in points)
    for chain in report["chains"]:
        assert chain["final_run"] == "ok", chain
        assert chain["differences"] == [], chain
        assert chain["tracking"] == [], chain
