"""SIGKILL a small ``freemask run`` at 20 seeded random points and re-run: the result must be the
uninterrupted run's, with one parent run and one registered model version per round."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

DRIVER = Path(__file__).with_name("kill_driver.py")
POINTS = 20


def kill_report(folder: Path, *options: str) -> dict:
    """The driver's report of its kills and chains (run in its own process)."""
    done = subprocess.run(
        [sys.executable, str(DRIVER), str(folder), *options],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_runs_killed_anywhere_end_identical_to_an_uninterrupted_run(tmp_path: Path) -> None:
    report = kill_report(tmp_path, "--seed", "0", "--points", str(POINTS))
    points = [point for chain in report["chains"] for point in chain["points"]]
    assert report["kills"] == len(points) >= POINTS, report
    assert any(point.startswith("create_run:kill-test") for point in points)
    assert any(point.startswith("write:active/rounds/01/model/") for point in points)
    assert any(point.startswith("model_version") for point in points)
    for chain in report["chains"]:
        assert chain["final_run"] == "ok", chain
        assert chain["differences"] == [], chain
        assert chain["tracking"] == [], chain


@pytest.mark.slow
def test_a_second_refresh_killed_anywhere_keeps_latest_whole_and_ends_identical(tmp_path) -> None:
    """The same kills in ``freemask run --refresh`` on a work directory holding one complete
    refresh (one version kept): after every kill LATEST names a published version with its
    export whole; re-run, the second refresh ends as an uninterrupted one."""
    report = kill_report(tmp_path, "--seed", "1", "--points", "12", "--refresh")
    points = [point for chain in report["chains"] for point in chain["points"]]
    assert report["kills"] == len(points) >= 12, report
    assert any(point.startswith("write:LATEST") for point in points)
    assert any(point.startswith("delete:versions/refresh-0001") for point in points)
    assert report["latest"] == [], report["latest"]
    for chain in report["chains"]:
        assert chain["final_run"] == "ok", chain
        assert chain["differences"] == [], chain
        assert chain["tracking"] == [], chain
