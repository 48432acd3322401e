"""Tracking credentials reach MLflow and nothing else: no file, log, printed line, MLflow param or
tag, compiled pipeline or command line holds them."""

from __future__ import annotations

import base64
import http.client
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from helpers import CLASSES
from mlflow import MlflowClient
from services import free_port, stop, wait_for_http

from freemask.cli import main
from freemask.config import RunConfig, load_config
from freemask.errors import FreemaskError
from freemask.redact import redact, split_userinfo
from freemask.tracking import resolve_tracking_uri
from pipelines.freemask_pipeline import compile_pipeline
from pipelines.ir import lint, load_ir

SECRET = "planted-secret-XYZ"
USER = "planted-user"


class _RecordingProxy(BaseHTTPRequestHandler):
    """Forwards every request to the MLflow server, noting its Authorization header."""

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        self.server.authorizations.append(self.headers.get("Authorization", ""))
        upstream = http.client.HTTPConnection(self.server.upstream, timeout=120)
        skip = {"host", "connection", "authorization"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        upstream.request(self.command, self.path, body=body, headers=headers)
        response = upstream.getresponse()
        data = response.read()
        upstream.close()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in {"transfer-encoding", "connection", "content-length"}:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def mlflow_behind_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """(the URL of a proxy in front of a real MLflow server, the server's folder: its sqlite
    store, artifacts and log, the proxy: its ``authorizations`` list every request's header)."""
    root = tmp_path_factory.mktemp("secret-mlflow")
    port = free_port()
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
    ]  # fmt: skip
    with open(root / "server.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        proxy = ThreadingHTTPServer(("127.0.0.1", 0), _RecordingProxy)
        proxy.upstream = f"127.0.0.1:{port}"
        proxy.authorizations = []
        thread = threading.Thread(target=proxy.serve_forever, daemon=True)
        thread.start()
        try:
            wait_for_http(f"http://127.0.0.1:{port}/health", process, timeout=90)
            yield f"http://127.0.0.1:{proxy.server_port}", root, proxy
        finally:
            proxy.shutdown()
            proxy.server_close()
            stop(process)


@pytest.fixture
def mlflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's credential variables restored after the test (tracking sets them)."""
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)


def tiny_config(path: Path, workdir: Path, **tracking: str) -> Path:
    tiny = {
        "model_id": "builtin:tiny-sd",
        "images_per_class": 1,
        "height": 64,
        "width": 64,
        "reject_implausible": False,
        "num_inference_steps": 2,
    }
    config = {
        "name": "secret-test",
        "workdir": str(workdir),
        "classes": CLASSES,
        "generate": tiny,
        "compose": {"images": 4, "backgrounds_per_scene": 1},
        "segment": {"model_id": "builtin:tiny-mask2former", "image_size": 64, "train_steps": 2},
        "active": {"max_rounds": 1, "keep_rule": "percentile"},
        "kubeflow": {"shards": 1},
        "tracking": {"experiment": "secrets", **tracking},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def files_holding(folder: Path, secret: str) -> list[str]:
    return [
        str(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and secret.encode() in path.read_bytes()
    ]


def test_planted_credentials_reach_mlflow_and_nothing_else(
    tmp_path: Path, mlflow_behind_proxy, mlflow_env, monkeypatch, capsys, caplog
) -> None:
    url, server_root, proxy = mlflow_behind_proxy
    planted = url.replace("http://", f"http://{USER}:{SECRET}@")
    caplog.set_level(logging.DEBUG)
    config = tiny_config(tmp_path / "run.yaml", tmp_path / "work")
    monkeypatch.setenv("FREEMASK__TRACKING__URI", planted)

    assert main(["run", "-c", str(config)]) == 0
    assert main(["config", "show", str(config)]) == 0

    printed = capsys.readouterr()
    output = printed.out + printed.err + caplog.text
    assert "View run" in output and f"MLflow: {url} (run " in output  # the lines are there
    assert SECRET not in output
    assert files_holding(tmp_path / "work", SECRET) == []
    assert files_holding(server_root, SECRET) == []
    # MLflow sent the pair on every request, as basic authentication.
    sent = "Basic " + base64.b64encode(f"{USER}:{SECRET}".encode()).decode()
    assert proxy.authorizations and set(proxy.authorizations) == {sent}
    # Nothing MLflow keeps about the runs holds it: params, tags, names, dataset sources.
    client = MlflowClient(f"http://{proxy.upstream}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments)
    assert len(runs) >= 2  # the parent run and its rounds
    for run in runs:
        kept = [run.info.run_name, *run.data.params.values(), *run.data.tags.values()]
        kept += [item.dataset.source for item in run.inputs.dataset_inputs]
        assert not [value for value in kept if SECRET in str(value)], run.info.run_id
    assert runs[0].data.params.get("tracking.uri", url) == url
    for version in client.search_model_versions():
        assert SECRET not in f"{version.source} {version.run_link} {version.tags}"


def test_a_pipeline_takes_credentials_from_a_secret_and_refuses_them_elsewhere(
    tmp_path: Path, mlflow_env, monkeypatch, capsys
) -> None:
    planted = f"http://{USER}:{SECRET}@127.0.0.1:5000"
    config = tiny_config(
        tmp_path / "run.yaml", tmp_path / "work", credentials_secret="mlflow-credentials"
    )
    ir = tmp_path / "ir.yaml"
    # Compile-time: a tracking URI with credentials is refused, and nothing is written.
    monkeypatch.setenv("FREEMASK__TRACKING__URI", planted)
    assert main(["compile", "--config", str(config), "--out", str(ir)]) == 2
    assert not ir.exists()
    monkeypatch.delenv("FREEMASK__TRACKING__URI")
    # Every task reads the pair from the Secret into MLflow's variables; the IR names the Secret.
    assert main(["compile", "--config", str(config), "--out", str(ir)]) == 0
    spec, platform = load_ir(ir)
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in spec["deploymentSpec"]["executors"]:
        pairs = {
            (item["secretName"], pair["secretKey"], pair["envVar"])
            for item in executors[name].get("secretAsEnv", [])
            for pair in item["keyToEnv"]
        }
        assert {
            ("mlflow-credentials", "username", "MLFLOW_TRACKING_USERNAME"),
            ("mlflow-credentials", "password", "MLFLOW_TRACKING_PASSWORD"),
        } <= pairs, name
    # A run's parameter with credentials is refused before anything is sent, and on a task's
    # command line (how parameters reach pods) too.
    argv = ["submit", "--host", "http://kfp.invalid", "--config", str(config)]
    assert (
        main([*argv, "--param", "config_uri=gs://b/run.yaml", "--param", f"tracking_uri={planted}"])
        == 2
    )
    assert main(["--set", f"tracking.uri={planted}", "config", "validate", str(config)]) == 2
    printed = capsys.readouterr()
    output = printed.out + printed.err
    assert SECRET not in output and ir.read_text().count(SECRET) == 0
    assert "tracking_uri" in output and "tracking.credentials_secret" in output
    assert "--set tracking.uri=http://***@127.0.0.1:5000" in output


def test_the_ir_lint_refuses_any_uri_with_credentials() -> None:
    spec = {"root": {"inputDefinitions": {"parameters": {"tracking_uri": {
        "defaultValue": f"https://{USER}:{SECRET}@mlflow.internal"}}}}}  # fmt: skip
    (problem,) = lint(spec, {})
    assert "https://***@mlflow.internal" in problem and SECRET not in problem


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (f"http://{USER}:{SECRET}@host:5000/x", "http://***@host:5000/x"),
        (f"see https://{USER}:p%40ss@host and gs://b/k", "see https://***@host and gs://b/k"),
        (f"http://u:{SECRET}@x@host/a@b", "http://***@host/a@b"),  # an "@" in the password
        (f"https://{SECRET}@host?q=1", "https://***@host?q=1"),
        ("http://host/path?user=a@b", "http://host/path?user=a@b"),
        (
            "mailto:someone@example.org, sqlite:///m.db",
            "mailto:someone@example.org, sqlite:///m.db",
        ),
    ],
)
def test_redact_hides_the_userinfo_of_every_uri(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_the_config_keeps_the_uri_without_its_credentials(tmp_path: Path, mlflow_env) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(f"classes: [cat]\ntracking: {{uri: 'https://{USER}:p%40{SECRET}@h/m'}}\n")
    config = load_config(path, environ={})
    assert config.tracking.uri == "https://h/m"
    assert config.tracking.credentials == (USER, f"p@{SECRET}")  # decoded as a client reads it
    assert SECRET not in yaml.safe_dump(config.model_dump(mode="json"))
    assert split_userinfo("https://h/m") == ("https://h/m", None, None)
    # Tracking hands the pair to MLflow's variables; the URI it returns has none.
    assert (
        resolve_tracking_uri(config.tracking.uri, "unused", credentials=config.tracking.credentials)
        == "https://h/m"
    )
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == f"p@{SECRET}"


def test_config_errors_never_echo_credentials(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(f"classes: [cat]\ntracking: {{uri: ['http://{USER}:{SECRET}@h']}}\n")
    with pytest.raises(FreemaskError) as caught:
        load_config(path, environ={})
    assert SECRET not in str(caught.value) and "http://***@h" in str(caught.value)
    with pytest.raises(ValueError, match="ui_url is shown in reports"):
        RunConfig.model_validate(
            {"classes": ["a"], "tracking": {"ui_url": f"https://u:{SECRET}@h"}}
        )


def test_pipeline_compile_refuses_credentials_in_the_config(tmp_path: Path) -> None:
    config = RunConfig.model_validate(
        {
            "classes": ["cat"],
            "active": {"max_rounds": 1},
            "tracking": {"uri": f"http://{USER}:{SECRET}@h"},
        }
    )
    with pytest.raises(FreemaskError, match="credentials_secret"):
        compile_pipeline(config, tmp_path / "ir.yaml")


def test_the_credentials_secret_example_is_a_template_deploy_check_refuses(capsys) -> None:
    manifests = Path(__file__).resolve().parents[1] / "manifests"
    example = manifests / "examples" / "mlflow-credentials-secret.yaml"
    (secret,) = [doc for doc in yaml.safe_load_all(example.read_text()) if doc]
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "mlflow-credentials"
    assert set(secret["stringData"]) == {"username", "password"}  # the config's default keys
    assert main(["deploy-check", "-f", str(example), "--manifests", str(manifests)]) == 2
    refused = capsys.readouterr().err
    for placeholder in ("RUN_NAMESPACE", "MLFLOW_USER", "MLFLOW_PASSWORD"):
        assert f"holds the placeholder {placeholder}" in refused
