"""submit and schedule: parameter checks before sending, cron conversion, the client calls."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from freemask.cli.kubeflow import (
    check_arguments,
    kfp_cron,
    pipeline_parameters,
    schedule_run,
    submit_run,
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

    def create_experiment(self, name):
        self.calls.append(("experiment", {"name": name}))
        return SimpleNamespace(experiment_id="exp-1")

    def create_recurring_run(self, **kwargs):
        self.calls.append(("recurring", kwargs))
        return SimpleNamespace(recurring_run_id="job-1")


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    config = RunConfig.model_validate({"classes": ["cat"], "active": {"max_rounds": 2}})
    return compile_pipeline(config, tmp_path_factory.mktemp("ir") / "pipeline.yaml")


def test_arguments_are_typed_from_the_compiled_parameters(package) -> None:
    parameters = pipeline_parameters(package)
    arguments = check_arguments(
        parameters, ["config_uri=gs://b/run.yaml", "images_per_class=8", "iou_threshold=1"]
    )
    assert arguments == {
        "config_uri": "gs://b/run.yaml",
        "images_per_class": 8,
        "iou_threshold": 1.0,
    }


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (["config_uri=x", "images_per_class=many"], "images_per_class='many': expected integer"),
        (["config_uri=x", "max_rounds=true"], "max_rounds='true': expected integer"),
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


def test_submit_and_schedule_send_the_package_parameters_and_service_account(package) -> None:
    client = RecordingClient()
    arguments = {"config_uri": "gs://b/run.yaml"}
    assert (
        submit_run(client, package, "freemask", "nightly", arguments, "freemask-runner") == "run-1"
    )
    assert (
        schedule_run(
            client, package, "freemask", "refresh", "0 0 3 * * 1", arguments, "freemask-runner"
        )
        == "job-1"
    )
    (_, run), (_, experiment), (_, recurring) = client.calls
    assert (
        run["package"] == str(package)
        and run["arguments"] == arguments
        and run["service_account"] == "freemask-runner"
    )
    assert experiment == {"name": "freemask"}
    assert recurring["cron_expression"] == "0 0 3 * * 1" and recurring["experiment_id"] == "exp-1"
    assert recurring["params"] == arguments and recurring["max_concurrency"] == 1
