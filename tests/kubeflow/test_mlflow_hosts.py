"""The MLflow Deployment's own command line, run on 127.0.0.1 (sqlite for Postgres): the REST API
answers callers that use the Service's in-cluster names, not only localhost.

MLflow >= 3.5 checks the Host header of every request but /health and /version against
--allowed-hosts (mlflow/server/security_utils.py, is_allowed_host_header; the default allows
only localhost and private IPs), and answers 403 "Invalid Host header" otherwise.
"""

import http.client
import os
import shlex
import string
import subprocess
import sys

import pytest
from services import free_port, stop, wait_for_http
from test_manifests import render

pytestmark = pytest.mark.slow


def server_argv(overlay: str, port: int, artifacts: str) -> tuple[list[str], str]:
    """The rendered Deployment's ``mlflow server`` arguments with the pod's environment filled
    in, bound to 127.0.0.1:port; and the namespace."""
    (deployment,) = [
        o
        for o in render(overlay)
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "mlflow"
    ]
    namespace = deployment["metadata"]["namespace"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    script = container["args"][0]
    assert "postgresql://" not in script.split("exec ", 1)[1]  # the password stays out of argv
    command = string.Template(script.split("exec ", 1)[1]).substitute(
        POD_NAMESPACE=namespace, EXTRA_ALLOWED_HOSTS="", ARTIFACTS_DESTINATION=artifacts
    )
    argv = shlex.split(command)
    assert argv[:2] == ["mlflow", "server"]
    argv[argv.index("--host") + 1] = "127.0.0.1"
    argv[argv.index("--port") + 1] = str(port)
    argv[argv.index("--workers") + 1] = "1"
    return [sys.executable, "-m", "mlflow", *argv[1:]], namespace


def status(port: int, path: str, host: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers={"Host": host})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


@pytest.mark.parametrize("overlay", ["overlays/prod", "overlays/dev"])
def test_in_cluster_callers_reach_the_rest_api(overlay: str, tmp_path) -> None:
    port = free_port()
    argv, namespace = server_argv(overlay, port, str(tmp_path / "artifacts"))
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    with open(tmp_path / "server.log", "wb") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_http(f"http://127.0.0.1:{port}/health", process, timeout=90)
            api = "/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"
            for host in (
                "mlflow:5000",
                f"mlflow.{namespace}:5000",
                f"mlflow.{namespace}.svc.cluster.local:5000",
            ):
                assert status(port, api, host) == 200, host
            assert status(port, api, "evil.example.com") == 403  # the check itself stays on
        finally:
            stop(process)
