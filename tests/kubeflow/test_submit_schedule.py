"""submit and schedule: parameter checks before sending, cron conversion, the client calls, and
the namespace rule against a fake KFP API on 127.0.0.1 (FakeKfpApi, which test_kfp_credentials.py
uses too)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from freemask.cli import main
from freemask.cli.kubeflow import (
    check_arguments,
    kfp_cron,
    pipeline_parameters,
    schedule_run,
    submit_run,
    validate_submission,
)
from freemask.config import RunConfig
from freemask.errors import FreemaskError
from freemask.kfp_auth import IAP_CLIENT_ID_ENV, IN_CLUSTER_TOKEN_ENV, TOKEN_ENV
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


API = "/apis/v2beta1"


@dataclass
class ApiRequest:
    """One request as the fake KFP API saw it (header names lower-cased)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: dict


class FakeKfpApi:
    """The KFP v2beta1 REST API on 127.0.0.1, served from a thread: it records every request and
    answers the calls submit and schedule make (healthz, experiments, runs, recurring runs).

    ``multi_user`` answers healthz with ``multi_user: true`` and refuses an experiment listed or
    created without a namespace, as multi-user KFP does (kubeflow/pipelines 2.17.0,
    backend/src/apiserver/resource/resource_manager.go:197, "Namespace cannot be empty"). ``require`` (header, value) answers
    401 to a request without it, echoing the Authorization it got (a leak to redact), or, with
    ``login_page``, 200 with an HTML sign-in page, as an auth proxy in front of KFP may.
    """

    def __init__(
        self,
        multi_user: bool = False,
        require: tuple[str, str] | None = None,
        login_page: bool = False,
    ) -> None:
        self.multi_user, self.require, self.login_page = multi_user, require, login_page
        self.requests: list[ApiRequest] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeKfpApi:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def sent(self, method: str, path: str) -> list[ApiRequest]:
        """The recorded requests to ``method`` ``API + path``."""
        return [r for r in self.requests if (r.method, r.path) == (method, API + path)]

    def answer(self, request: ApiRequest) -> tuple[int, str, str]:
        if self.require and request.headers.get(self.require[0].lower()) != self.require[1]:
            if self.login_page:
                return 200, "text/html", "<html><body>Sign in with Dex</body></html>"
            echoed = request.headers.get("authorization", "")
            return 401, "application/json", json.dumps({"error": f"refused {echoed}", "code": 16})
        namespace = request.body.get("namespace") or request.query.get("namespace", [""])[0]
        if self.multi_user and request.path == API + "/experiments" and not namespace:
            refusal = {"error": "Invalid input error: Namespace cannot be empty", "code": 3}
            return 400, "application/json", json.dumps(refusal)
        answers = {
            ("GET", "/healthz"): {"multi_user": self.multi_user, "pipeline_store": "database"},
            ("GET", "/experiments"): {"experiments": [], "total_size": 0},
            ("POST", "/experiments"): {"experiment_id": "exp-1", **request.body},
            ("POST", "/runs"): {"run_id": "run-1", "state": "PENDING", **request.body},
            ("POST", "/recurringruns"): {"recurring_run_id": "job-1", **request.body},
        }
        found = answers.get((request.method, request.path.removeprefix(API)))
        if found is None:
            return 404, "application/json", json.dumps({"error": "Not Found", "code": 5})
        return 200, "application/json", json.dumps(found)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                request = ApiRequest(
                    self.command,
                    url.path,
                    parse_qs(url.query, keep_blank_values=True),
                    {name.lower(): value for name, value in self.headers.items()},
                    json.loads(raw) if raw else {},
                )
                api.requests.append(request)
                status, kind, text = api.answer(request)
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(text.encode())))
                self.end_headers()
                self.wfile.write(text.encode())

            do_GET = do_POST = _serve

            def log_message(self, *args: object) -> None:  # keep the test output clean
                pass

        return Handler


def isolate_from_this_machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No credential, in-cluster token or kfp context file of the machine running the tests."""
    import kfp

    for name in (TOKEN_ENV, IAP_CLIENT_ID_ENV, "KF_PIPELINES_ENDPOINT", "KF_PIPELINES_UI_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(IN_CLUSTER_TOKEN_ENV, str(tmp_path / "not-in-a-pod"))
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))


def submit_argv(api: FakeKfpApi, config: str, *extra: str) -> list[str]:
    return [
        "submit", "--host", api.url, "--config", config,
        "--param", "config_uri=gs://b/run.yaml", *extra,
    ]  # fmt: skip


def test_a_single_user_backend_gets_no_empty_namespace(tmp_path, kfp_api, capfd) -> None:
    assert main(submit_argv(kfp_api, write_config(tmp_path))) == 0
    # Neither "" (what kfp.Client's default namespace "kubeflow" led to) nor any other value.
    (listed,) = kfp_api.sent("GET", "/experiments")
    (created,) = kfp_api.sent("POST", "/experiments")
    assert "namespace" not in listed.query and created.body.get("namespace") is None
    (run,) = kfp_api.sent("POST", "/runs")
    assert run.body["experiment_id"] == "exp-1"
    assert f"submitted run run-1 to {kfp_api.url} (no credentials)" in " ".join(
        capfd.readouterr().out.split()
    )


def test_a_multi_user_backend_refuses_a_submission_without_namespace(
    tmp_path, kfp_environment, capfd
) -> None:
    with FakeKfpApi(multi_user=True) as api:
        assert main(submit_argv(api, write_config(tmp_path))) == 2
    (line,) = capfd.readouterr().err.splitlines()
    assert line.startswith(f"error: --namespace is required: {api.url} is a multi-user")
    assert "kubeflow.namespace" in line
    # Refused on healthz's word alone: no experiment, no run.
    assert [(r.method, r.path) for r in api.requests] == [("GET", API + "/healthz")]


@pytest.mark.parametrize("where", ["flag", "config"])
def test_runs_on_a_multi_user_backend_go_to_the_namespace(
    tmp_path, kfp_environment, capfd, where
) -> None:
    cookie = "authservice_session=MTcwMDAwMDAwMHxsb2dpbg"
    (tmp_path / "cookie").write_text(cookie + "\n")
    config = write_config(tmp_path, kubeflow={"namespace": "team-a"} if where == "config" else {})
    extra = ["--cookie-file", str(tmp_path / "cookie")]
    extra += ["--namespace", "team-a"] if where == "flag" else []
    with FakeKfpApi(multi_user=True, require=("Cookie", cookie)) as api:
        assert main(submit_argv(api, config, *extra)) == 0
    (listed,) = api.sent("GET", "/experiments")
    (created,) = api.sent("POST", "/experiments")
    assert listed.query["namespace"] == ["team-a"] and created.body["namespace"] == "team-a"
    (run,) = api.sent("POST", "/runs")
    assert run.body["experiment_id"] == "exp-1" and run.body["service_account"] == "freemask-runner"
    assert f"submitted run run-1 to {api.url} in team-a" in " ".join(capfd.readouterr().out.split())


def test_schedule_creates_the_recurring_run_in_the_namespace(
    tmp_path, monkeypatch, kfp_environment
) -> None:
    # In a pod with the projected KFP token, as kfp.Client finds it without --host.
    (tmp_path / "token").write_text("sa-token-for-team-a")
    monkeypatch.setenv(IN_CLUSTER_TOKEN_ENV, str(tmp_path / "token"))
    options = ["--config", write_config(tmp_path), "--cron", "0 3 * * 1"]
    options += ["--param", "config_uri=gs://b/run.yaml", "--namespace", "team-a"]
    with FakeKfpApi(
        multi_user=True, require=("Authorization", "Bearer sa-token-for-team-a")
    ) as api:
        # A trailing slash on --host is dropped (kfp.Client keeps it when given a client_id).
        assert main(["schedule", "--host", api.url + "/", *options]) == 0
    (created,) = api.sent("POST", "/experiments")
    (job,) = api.sent("POST", "/recurringruns")
    assert created.body["namespace"] == "team-a" and job.body["experiment_id"] == "exp-1"
    assert job.body["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1"
    # Each scheduled run draws anew: no parameter pins the draw, and the stages that draw take
    # the run's own id (a new one per run) as their dataset version, which is their draw.
    assert set(job.body["runtime_config"]["parameters"]) == {"config_uri"}
    spec = job.body["pipeline_spec"]["pipeline_spec"]  # kfp sends the IR and its platform spec
    drawn = [
        task["inputs"]["parameters"]["dataset_version"]
        for component in spec["components"].values()
        for name, task in component.get("dag", {}).get("tasks", {}).items()
        if name.split("-")[0] in ("generate", "backgrounds", "compose")
    ]
    assert drawn and all(
        value == {"runtimeValue": {"constant": "{{$.pipeline_job_uuid}}"}} for value in drawn
    )
