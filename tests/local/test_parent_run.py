"""The parent run of a work directory: one per directory, even when two processes start it."""

from pathlib import Path

from mlflow import MlflowClient

from freemask.config import RunConfig
from freemask.local.runner import RUN_FILE, parent_run
from freemask.storage import LocalStorage, read_json
from freemask.tracking import MlflowTracker


class StaleView(LocalStorage):
    """A work directory seen before another process wrote its run.json (the race's loser)."""

    looked = False

    def exists(self, path: str) -> bool:
        if path == RUN_FILE and not self.looked:
            self.looked = True
            return False
        return super().exists(path)


def test_two_starts_of_one_workdir_share_one_parent_run(tmp_path: Path, monkeypatch) -> None:
    config = RunConfig.model_validate(
        {"name": "race", "workdir": str(tmp_path / "work"), "classes": ["ball"]}
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first, resumed = parent_run(config, LocalStorage(tmp_path / "work"), uri)
    assert not resumed
    # The second process looked before the first had written run.json or created its run.
    monkeypatch.setattr(MlflowTracker, "find_run", lambda self, tags: None)
    second, resumed = parent_run(config, StaleView(tmp_path / "work"), uri)
    assert resumed and second.run_id == first.run_id
    assert read_json(LocalStorage(tmp_path / "work"), RUN_FILE)["run_id"] == first.run_id
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    runs = client.search_runs([experiment.experiment_id])
    statuses = sorted((run.info.run_id == first.run_id, run.info.status) for run in runs)
    assert statuses == [(False, "KILLED"), (True, "RUNNING")]


def test_a_run_file_of_another_tracking_server_is_replaced(tmp_path: Path) -> None:
    config = RunConfig.model_validate(
        {"name": "moved", "workdir": str(tmp_path / "work"), "classes": ["ball"]}
    )
    workdir = LocalStorage(tmp_path / "work")
    old, _ = parent_run(config, workdir, f"sqlite:///{tmp_path / 'old.db'}")
    new, resumed = parent_run(config, workdir, f"sqlite:///{tmp_path / 'new.db'}")
    assert not resumed and new.run_id != old.run_id
    assert read_json(workdir, RUN_FILE)["tracking_uri"].endswith("new.db")
