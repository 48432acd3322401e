"""MLflow tracking against a real server on 127.0.0.1 and the embedded sqlite default."""

import io
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from PIL import Image

from freemask.errors import FreemaskError
from freemask.run_description import git_tags, source_tags
from freemask.tracking import (
    PARENT_RUN_TAG,
    MlflowTracker,
    load_logged_weights,
    resolve_tracking_uri,
)


def test_parent_and_nested_round_runs_are_read_back(mlflow_server: str, tmp_path: Path) -> None:
    tracker = MlflowTracker(mlflow_server, "freemask-test-rounds")
    parent = tracker.start_run("pipeline", tags={"dataset_version": "v1"})
    parent.log_params({"active": {"iou_threshold": 0.5, "max_rounds": 2}, "classes": "cat,dog"})
    for round_index in range(2):
        with parent.child(f"round-{round_index}", tags={"round": str(round_index)}) as child:
            child.log_metrics(
                {"kept_fraction": 0.8 - 0.1 * round_index, "val_miou": 0.3 + 0.1 * round_index}
            )
            for step, loss in enumerate([1.0, 0.7, 0.5]):
                child.log_metrics({"train_loss": loss}, step=step)
            histogram = tmp_path / f"hist-{round_index}.txt"
            histogram.write_text("0.1 0.5 0.9")
            child.log_artifact(histogram, "plots")
    parent.finish()

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("freemask-test-rounds")
    rounds = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{PARENT_RUN_TAG}` = '{parent.run_id}'",
        order_by=["tags.round"],
    )
    assert [run.data.tags["round"] for run in rounds] == ["0", "1"]
    assert [round(run.data.metrics["val_miou"], 3) for run in rounds] == [0.3, 0.4]
    assert all(run.info.status == "FINISHED" for run in rounds)
    history = client.get_metric_history(rounds[0].info.run_id, "train_loss")
    assert [(metric.step, metric.value) for metric in history] == [(0, 1.0), (1, 0.7), (2, 0.5)]
    assert [item.path for item in client.list_artifacts(rounds[1].info.run_id, "plots")] == [
        "plots/hist-1.txt"
    ]
    top = client.get_run(parent.run_id)
    assert top.data.params["active.iou_threshold"] == "0.5"
    assert top.data.tags["dataset_version"] == "v1"


def test_model_is_logged_as_safetensors_registered_and_loads_back(mlflow_server: str) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    tracker = MlflowTracker(mlflow_server, "freemask-test-models")
    with tracker.start_run("train") as run:
        version = run.log_model(model, "segmenter", registered_name="freemask-test-segmenter")
        run.alias_model("freemask-test-segmenter", "best", version)

    client = MlflowClient(mlflow_server)
    aliased = client.get_model_version_by_alias("freemask-test-segmenter", "best")
    assert aliased.version == version and aliased.run_id == run.run_id
    weights = load_logged_weights(mlflow_server, aliased.source)
    assert set(weights) == set(model.state_dict())
    for name, tensor in model.state_dict().items():
        assert torch.equal(weights[name], tensor)


def test_resume_continues_the_same_run(mlflow_server: str) -> None:
    tracker = MlflowTracker(mlflow_server, "freemask-test-resume")
    first = tracker.start_run("pipeline")
    first.log_metrics({"kept": 1.0}, step=0)
    again = MlflowTracker(mlflow_server, "freemask-test-resume").resume_run(first.run_id)
    again.log_metrics({"kept": 0.5}, step=1)
    again.finish()
    history = MlflowClient(mlflow_server).get_metric_history(first.run_id, "kept")
    assert [metric.value for metric in history] == [1.0, 0.5]
    with pytest.raises(FreemaskError, match="not found"):
        tracker.resume_run("0" * 32)


def test_tracking_uri_resolution(tmp_path: Path) -> None:
    assert resolve_tracking_uri("http://mlflow:5000", str(tmp_path), {}) == "http://mlflow:5000"
    env = {"MLFLOW_TRACKING_URI": "http://from-env:5000"}
    assert resolve_tracking_uri(None, str(tmp_path), env) == "http://from-env:5000"
    assert (
        resolve_tracking_uri(None, str(tmp_path / "w"), {})
        == f"sqlite:///{tmp_path / 'w' / 'mlflow.db'}"
    )
    with pytest.raises(FreemaskError, match=r"set tracking\.uri"):
        resolve_tracking_uri(None, "gs://bucket/run", {})


def test_writes_repeated_by_a_resumed_step_are_not_doubled(mlflow_server: str) -> None:
    tracker = MlflowTracker(mlflow_server, "freemask-test-idempotent")
    parent = tracker.start_run("pipeline", tags={"freemask.workdir_id": "abc"})
    parent.log_metrics({"val_miou": 0.4}, step=1)
    tracker.resume_run(parent.run_id).log_metrics({"val_miou": 0.0}, step=1)  # a resumed process
    child = parent.child_with_tag("freemask.round", "1", "round-1")
    model = torch.nn.Linear(2, 1)
    first = child.log_model(model, "segmenter", registered_name="idempotent-segmenter")
    again = parent.child_with_tag("freemask.round", "1", "round-1")
    assert again.run_id == child.run_id
    assert again.log_model(model, "segmenter", registered_name="idempotent-segmenter") == first

    client = MlflowClient(mlflow_server)
    history = client.get_metric_history(parent.run_id, "val_miou")
    assert [(m.step, m.value) for m in history] == [(1, 0.4)]
    assert len(client.search_model_versions("name = 'idempotent-segmenter'")) == 1
    assert tracker.find_run({"freemask.workdir_id": "abc"}).run_id == parent.run_id
    assert tracker.find_run({"freemask.workdir_id": "other"}) is None
    assert parent.end_orphans() == 1  # round-1 was left RUNNING, as by a killed process
    assert client.get_run(child.run_id).info.status == "KILLED"


def test_a_resumed_run_logs_each_image_step_once(mlflow_server: str) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="PNG")
    tracker = MlflowTracker(mlflow_server, "freemask-test-images")
    run = tracker.start_run("pipeline")
    run.log_image(buffer.getvalue(), "iou_histogram", step=1)
    again = tracker.resume_run(run.run_id)  # a resumed process logs the same pictures again
    again.log_image(buffer.getvalue(), "iou_histogram", step=1)
    again.log_image(buffer.getvalue(), "iou_histogram", step=2)
    logged = [
        item.path for item in MlflowClient(mlflow_server).list_artifacts(run.run_id, "images")
    ]
    pictures = sorted(path.split("+timestamp")[0] for path in logged if path.endswith(".png"))
    assert pictures == ["images/iou_histogram+step+1", "images/iou_histogram+step+2"]


def test_an_mlflow_model_is_saved_and_registered_once_per_run(mlflow_server: str) -> None:
    saved: list[Path] = []

    def save(path: Path) -> None:
        saved.append(path)
        path.mkdir()
        (path / "MLmodel").write_text("flavors: {}\n")

    run = MlflowTracker(mlflow_server, "freemask-test-mlflow-model").start_run("round")
    first = run.log_mlflow_model(save, "segmenter", registered_name="once-segmenter")
    again = run.log_mlflow_model(save, "segmenter", registered_name="once-segmenter")
    assert first == again == "1" and len(saved) == 1
    client = MlflowClient(mlflow_server)
    (version,) = client.search_model_versions("name = 'once-segmenter'")
    assert version.source.endswith(f"{run.run_id}/artifacts/models/segmenter")
    assert [i.path for i in client.list_artifacts(run.run_id, "models/segmenter")] == [
        "models/segmenter/MLmodel"
    ]


def test_a_sqlite_store_keeps_its_artifacts_beside_it_whatever_the_directory(
    tmp_path: Path, monkeypatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a pipeline task starts in its own directory
    store = tmp_path / "project" / "mlflow.db"
    store.parent.mkdir()
    tracker = MlflowTracker(f"sqlite:///{store}", "beside")
    experiment = tracker.client.get_experiment(tracker.experiment_id)
    assert experiment.artifact_location == str(store.parent / "mlartifacts")


def git(*args: str, cwd: Path) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args]
    return subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True).stdout


def test_runs_name_the_commit_of_a_checkout_and_nothing_else_without_one(
    tmp_path: Path, monkeypatch
) -> None:
    outside = tmp_path / "installed" / "freemask"
    outside.mkdir(parents=True)
    assert git_tags(outside) == {}  # not a checkout
    if shutil.which("git") is None:
        pytest.skip("git is not installed: only the no-checkout case ran")
    checkout = tmp_path / "checkout"
    (checkout / "freemask").mkdir(parents=True)
    (checkout / "freemask" / "__init__.py").write_text("")
    git("init", "-q", cwd=checkout)
    git("remote", "add", "origin", "https://user:secret@git.example.com/freemask.git", cwd=checkout)
    git("add", ".", cwd=checkout)
    git("commit", "-q", "-m", "first", cwd=checkout)
    commit = git("rev-parse", "HEAD", cwd=checkout).strip()
    assert git_tags(checkout / "freemask") == {
        "mlflow.source.git.commit": commit,
        "mlflow.source.git.repoURL": "https://***@git.example.com/freemask.git",
    }
    # A package installed inside another project's checkout is not that project's code.
    (checkout / ".venv" / "freemask").mkdir(parents=True)
    assert git_tags(checkout / ".venv" / "freemask") == {}
    # No git program at all: the source tags still come, without a commit.
    monkeypatch.setenv("PATH", str(tmp_path / "no-programs"))
    tags = source_tags("freemask run")
    assert tags["mlflow.source.name"] == "freemask run" and tags["mlflow.source.type"] == "LOCAL"
    assert "mlflow.source.git.commit" not in tags
