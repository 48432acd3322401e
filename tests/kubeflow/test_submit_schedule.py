"""submit and schedule: parameter checks before sending, cron conversion, the client calls."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import yaml

from freemask.cli import main
from freemask.cli.kubeflow import (
    check_arguments,
    kfp_cron,
    pipeline_parameters,
    read_token,
    schedule_run,
    submit_run,
    validate_submission,
)
from freemask.config import RunConfig
from freemask.errors import FreemaskError
from pipelines.freemask_pipeline import compile_pipeline


class RecordingClient:
    """Stands in for kfp.Client: records the calls, answers with ids."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def create_run_from_pipeline_package(self, package, **kwargs):
        self.calls.append(("run", {"package": package, **kwargs}))
        return SimpleNamespace(run_id="run-1")

    def create_experiment(self, name, namespace=None):
        self.calls.append(("experiment", {"name": name, "namespace": namespace}))
        return SimpleNamespace(experiment_id="exp-1")

    def create_recurring_run(self, **kwargs):
        self.calls.append(("recurring", kwargs))
        return SimpleNamespace(recurring_run_id="job-1")


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    config = RunConfig.model_validate({"classes": ["cat"], "active": {"max_rounds": 2}})
    return compile_pipeline(config, tmp_path_factory.mktemp("ir") / "pipeline.yaml")


def test_arguments_are_checked_against_the_compiled_parameters(package) -> None:
    parameters = pipeline_parameters(package)
    arguments = check_arguments(
        parameters, ["config_uri=gs://b/run.yaml", "images_per_class=8", "classes=[cat, dog]"]
    )
    assert arguments == {
        "config_uri": "gs://b/run.yaml",
        "images_per_class": "8",
        "classes": "[cat, dog]",
    }


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (["config_uri=x", "colour=red"], "colour: unknown parameter"),
        (["images_per_class=3"], "without a default must be given: config_uri"),
        (["config_uri"], "expected NAME=VALUE"),
    ],
)
def test_bad_arguments_are_refused_before_sending(package, raw, message) -> None:
    with pytest.raises(FreemaskError, match=message):
        check_arguments(pipeline_parameters(package), raw)


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        ("0 3 * * *", "0 0 3 * * *"),
        ("*/15 * * * 1-5", "0 */15 * * * 1-5"),
        ("30 0 3 * * *", "30 0 3 * * *"),
    ],
)
def test_five_field_cron_becomes_kfp_six_fields(cron: str, expected: str) -> None:
    assert kfp_cron(cron) == expected


@pytest.mark.parametrize("cron", ["0 3 * *", "every day", "0 3 * * * * *"])
def test_malformed_cron_is_refused(cron: str) -> None:
    with pytest.raises(FreemaskError, match="expected five cron fields"):
        kfp_cron(cron)


def test_submit_and_schedule_send_namespace_service_account_and_caching_off(package) -> None:
    client = RecordingClient()
    arguments = {"config_uri": "gs://b/run.yaml"}
    run_id = submit_run(
        client, package, "freemask", "nightly", arguments, "freemask-runner", "team-a"
    )
    job_id = schedule_run(
        client,
        package,
        "freemask",
        "refresh",
        "0 0 3 * * 1",
        arguments,
        "freemask-runner",
        "team-a",
    )
    assert (run_id, job_id) == ("run-1", "job-1")
    (_, experiment), (_, run), (_, _), (_, recurring) = client.calls
    assert experiment == {"name": "freemask", "namespace": "team-a"}
    assert run["package"] == str(package) and run["arguments"] == arguments
    assert run["service_account"] == "freemask-runner" and run["namespace"] == "team-a"
    assert run["experiment_id"] == "exp-1"
    # None would keep the compiled options, True would turn caching on for every task.
    assert run["enable_caching"] is False and recurring["enable_caching"] is False
    assert recurring["cron_expression"] == "0 0 3 * * 1" and recurring["experiment_id"] == "exp-1"
    assert recurring["params"] == arguments and recurring["max_concurrency"] == 1


GOOD = {
    "classes": ["cat"],
    "workdir": "gs://b/work",
    "tracking": {"uri": "http://mlflow.freemask.svc.cluster.local:5000"},
    "active": {"max_rounds": 2},
}


def write_config(tmp_path, **changes) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**GOOD, **changes}))
    return str(path)


def test_a_valid_submission_reads_the_parameters_over_the_file(tmp_path) -> None:
    arguments = {"config_uri": "gs://b/run.yaml", "classes": "[cat, dog]", "max_rounds": "1"}
    run_config = validate_submission(write_config(tmp_path), arguments, depth=2)
    assert run_config.classes == ["cat", "dog"] and run_config.active.max_rounds == 1
    unset = validate_submission(write_config(tmp_path), {"config_uri": "gs://b/r.yaml"}, depth=2)
    assert unset.classes == ["cat"] and unset.active.max_rounds == 2


@pytest.mark.parametrize(
    ("changes", "arguments", "message"),
    [
        ({"workdir": "runs/local"}, {}, "workdir 'runs/local' must be on gs://"),
        ({"tracking": {"uri": "sqlite:///m.db"}}, {}, "tracking.uri must be the MLflow server"),
        ({}, {"max_rounds": "3"}, "active.max_rounds=3 is above the 2 rounds compiled"),
        ({}, {"config_uri": "/home/me/run.yaml"}, "config_uri must be a gs:// URI"),
        ({}, {"classes": "cat, dog"}, "classes: got 'cat, dog'; expected a valid list"),
    ],
)
def test_submission_is_refused_before_anything_is_sent(tmp_path, changes, arguments, message):
    config = write_config(tmp_path, **changes)
    with pytest.raises(FreemaskError, match=message):
        validate_submission(config, {"config_uri": "gs://b/run.yaml", **arguments}, depth=2)


def test_submit_refuses_with_one_line_and_exit_code_2(tmp_path, capsys) -> None:
    config = write_config(tmp_path, workdir="runs/local")
    argv = ["submit", "--host", "http://kfp.invalid", "--config", config]
    assert main([*argv, "--param", "config_uri=gs://b/run.yaml"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "not submitted: workdir 'runs/local' must be on gs://" in line


def test_the_token_comes_from_a_file(tmp_path) -> None:
    (tmp_path / "token").write_text("eyJhbGciOi.token\n")
    assert read_token(tmp_path / "token") == "eyJhbGciOi.token"
    assert read_token(None) is None
    with pytest.raises(FreemaskError, match=r"--token-file .*missing: not readable"):
        read_token(tmp_path / "missing")
