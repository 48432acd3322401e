"""Fixtures of the Kubeflow tests: a fake KFP API on 127.0.0.1, with kfp.Client kept from this
machine's own KFP context and credentials."""

from collections.abc import Iterator

import pytest
from test_submit_schedule import FakeKfpApi, isolate_from_this_machine


@pytest.fixture
def kfp_environment(monkeypatch, tmp_path) -> None:
    isolate_from_this_machine(monkeypatch, tmp_path)


@pytest.fixture
def kfp_api(kfp_environment) -> Iterator[FakeKfpApi]:
    with FakeKfpApi() as api:
        yield api
