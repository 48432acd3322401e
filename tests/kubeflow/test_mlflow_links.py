"""The links between a KFP run and MLflow: start-run's Markdown link, end-run (the exit
handler's task) ending the parent run, kfp-outputs' artifact metadata, round runs' dataset
inputs, and `compare --experiment` across refreshes; against a local sqlite MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from freemask.cli import main
from freemask.storage import open_storage
from freemask.tracking import MlflowTracker, log_dataset_input

DEMO_THESAURUS = Path(__file__).parents[2] / "configs" / "demo_thesaurus.yaml"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "run.yaml"
    settings = {
        "name": "links",
        "workdir": str(tmp_path / "work"),
        "classes": ["ball", "box"],
        "relate": {"thesaurus": str(DEMO_THESAURUS)},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "links"},
    }
    path.write_text(yaml.safe_dump(settings))
    return path


def start(config: Path, version: str, tmp_path: Path) -> tuple[str, str]:
    """(parent run id, Markdown link) of a start-run for KFP run ``version``."""
    run_id, link = tmp_path / f"{version}.id", tmp_path / f"{version}.md"
    argv = ["--set", f"kubeflow.dataset_version={version}", "start-run", "--config", str(config)]
    assert main([*argv, "--run-id-file", str(run_id), "--mlflow-link", str(link)]) == 0
    return run_id.read_text(), link.read_text()


def end(config: Path, version: str, state: str) -> int:
    status = json.dumps({"error": {}, "pipelineTaskName": "exit-handler-1", "state": state})
    argv = ["--set", f"kubeflow.dataset_version={version}", "end-run", "--config", str(config)]
    return main([*argv, "--status", status])


def test_start_run_links_the_mlflow_run_and_end_run_marks_a_failure(config, tmp_path) -> None:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    failed, link = start(config, "kfp-run-1", tmp_path)
    assert failed in link and "kfp-run-1" in link
    finished, _ = start(config, "kfp-run-2", tmp_path)
    for _ in range(2):  # a retried exit task changes nothing
        assert end(config, "kfp-run-1", "FAILED") == 0
    assert end(config, "kfp-run-2", "COMPLETE") == 0
    assert client.get_run(failed).info.status == "FAILED"
    assert client.get_run(failed).data.tags["kfp.final_status"] == "FAILED"
    assert client.get_run(finished).info.status == "FINISHED"


def test_a_running_exit_state_ends_the_run_by_whether_publish_completed(config, tmp_path) -> None:
    """Backends 2.14 to 2.16 pass RUNNING to the exit handler of a pipeline with loops,
    conditions or nested pipelines, whatever happened: the run's outcome then comes from its
    publish marker, never from that state."""
    from freemask.publish import PUBLISHED

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    done, _ = start(config, "kfp-run-done", tmp_path)
    broken, _ = start(config, "kfp-run-broken", tmp_path)
    (tmp_path / "work" / "versions" / "kfp-run-done" / PUBLISHED).write_text("{}")
    assert end(config, "kfp-run-done", "RUNNING") == 0
    assert end(config, "kfp-run-broken", "RUNNING") == 0
    assert client.get_run(done).info.status == "FINISHED"
    assert client.get_run(done).data.tags["kfp.exit_handler_state"] == "RUNNING"
    assert client.get_run(broken).info.status == "FAILED"
    # A state that ends a run decides it, marker or not.
    cancelled, _ = start(config, "kfp-run-done-2", tmp_path)
    (tmp_path / "work" / "versions" / "kfp-run-done-2" / PUBLISHED).write_text("{}")
    assert end(config, "kfp-run-done-2", "CANCELED") == 0
    assert client.get_run(cancelled).info.status == "KILLED"


def test_publish_ends_the_run_finished_and_pages_the_report_with_a_browser_link(
    config, tmp_path
) -> None:
    """The pipeline's publish task: COCO and VOC, the report with its page (pictures inline,
    the MLflow run at ``tracking.ui_url``, not the cluster address), the page as the KFP
    artifact, and the parent run FINISHED with no exit handler at all."""
    from tests.helpers import CLASSES, write_dataset

    settings = yaml.safe_load(config.read_text())
    settings["classes"] = CLASSES
    settings["tracking"]["ui_url"] = "https://mlflow.example.com/"
    config.write_text(yaml.safe_dump(settings))
    parent, _ = start(config, "kfp-run-7", tmp_path)
    work = tmp_path / "work" / "versions" / "kfp-run-7"
    write_dataset(open_storage(str(work / "active")), 3)
    page = tmp_path / "kfp" / "report.html"
    argv = ["--set", "kubeflow.dataset_version=kfp-run-7", "publish", "--config", str(config)]
    assert main([*argv, "--parent-run-id", parent, "--report-html", str(page)]) == 0
    assert (work / "export" / "coco" / "annotations" / "instances.json").is_file()
    assert (work / "export" / "voc").is_dir()
    html = page.read_text()
    assert html == (work / "report" / "index.html").read_text()
    assert 'src="data:image/jpeg;base64,' in html and "active_samples.png" in html
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_run(parent).info.experiment_id
    assert f'href="https://mlflow.example.com/#/experiments/{experiment}/runs/{parent}"' in html
    assert client.get_run(parent).info.status == "FINISHED"
    logged = {item.path for item in client.list_artifacts(parent, "report")}
    assert "report/index.html" in logged


def test_end_run_refuses_a_status_that_is_not_kfps(config, capsys) -> None:
    argv = ["--set", "kubeflow.dataset_version=r", "end-run", "--config", str(config)]
    assert main([*argv, "--status", "{{$.inputs.parameters['status']}}"]) == 2
    assert "not a KFP task final status" in capsys.readouterr().err


def test_kfp_outputs_writes_the_dataset_metadata_the_launcher_merges(config, tmp_path) -> None:
    output_file = tmp_path / "kfp" / "output_metadata.json"
    uri = "gs://kfp-artifacts/root/freemask/r1/relate/uuid/relations"
    document = {
        "outputs": {
            "artifacts": {"relations": {"artifacts": [{"name": "relations", "uri": uri}]}},
            "outputFile": str(output_file),
        }
    }
    wrapper = ["kfp-outputs", "relate", "--executor-input", json.dumps(document)]
    argv = [*wrapper, "--config", str(config), "--", "relate", "--config", str(config)]
    assert main(["--set", "kubeflow.dataset_version=r1", *argv]) == 0
    (artifact,) = json.loads(output_file.read_text())["artifacts"]["relations"]["artifacts"]
    assert "uri" not in artifact  # the launcher keeps (and uploads to) its own URI
    prefix = f"{tmp_path / 'work'}/versions/r1/relate"
    assert artifact["metadata"]["prefix"] == prefix
    assert artifact["metadata"]["manifest"] == f"{prefix}/relations.json"
    assert len(artifact["metadata"]["digest"]) == 16


def test_kfp_outputs_refuses_an_executor_input_without_the_tasks_artifacts(config, capsys):
    document = json.dumps({"outputs": {"artifacts": {}, "outputFile": "/tmp/x.json"}})
    argv = ["kfp-outputs", "join", "--executor-input", document, "--config", str(config)]
    assert main([*argv, "--", "join", "--config", str(config), "--stage", "generate"]) == 2
    assert "no output artifact ['dataset'] for task join" in capsys.readouterr().err


def test_a_round_run_records_its_training_data_as_an_mlflow_dataset(tmp_path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = MlflowTracker(uri, "links").start_run("round-1")
    log_dataset_input(run, "round-1-kept", "gs://b/work/active/rounds/01/kept.jsonl", "abc123", 7)
    (logged,) = MlflowClient(uri).get_run(run.run_id).inputs.dataset_inputs
    assert logged.dataset.name == "round-1-kept" and logged.dataset.digest == "abc123"
    assert json.loads(logged.dataset.source) == {"uri": "gs://b/work/active/rounds/01/kept.jsonl"}
    assert json.loads(logged.dataset.profile) == {"num_rows": 7}
    assert logged.tags[0].value == "training"


def test_compare_across_refreshes_shows_each_runs_version_and_best_round(
    config, tmp_path, capsys, monkeypatch
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    for version, mious in (("kfp-run-1", [0.31, 0.42]), ("kfp-run-2", [0.55, 0.50])):
        parent, _ = start(config, version, tmp_path)
        for step, miou in enumerate(mious, start=1):
            client.log_metric(parent, "val_miou", miou, step=step)
            client.log_metric(parent, "kept", 10 * step, step=step)
    capsys.readouterr()
    # The console reads COLUMNS at each print; setting its width would pin it for later tests.
    monkeypatch.setenv("COLUMNS", "160")
    assert main(["compare", "--experiment", "links", "--tracking-uri", uri]) == 0
    rows = [line.split("│") for line in capsys.readouterr().out.splitlines() if "kfp-run" in line]
    cells = [[cell.strip() for cell in row[3:-1]] for row in rows]
    assert cells == [  # oldest first: version, KFP run, rounds, kept, best mIoU, best round, deltas
        ["kfp-run-1", "kfp-run-1", "2", "20", "0.4200", "2", "-", "-"],
        ["kfp-run-2", "kfp-run-2", "2", "10", "0.5500", "1", "-10", "+0.1300"],
    ]
    assert main(["compare", "--experiment", "nowhere", "--tracking-uri", uri]) == 2
    assert main(["compare", "--tracking-uri", uri]) == 2
