"""Dataset versions on both backends: LATEST moves forward only, to complete versions, and
retention keeps what LATEST names."""

import json
from pathlib import Path

import pytest

from freemask.config import RunConfig
from freemask.errors import FreemaskError
from freemask.gcs_storage import GCSStorage
from freemask.publish import PUBLISHED
from freemask.storage import LocalStorage, write_json
from freemask.versions import (
    DELETING,
    advance_latest,
    list_versions,
    local_refresh,
    next_local_version,
    project_tracking_uri,
    read_latest,
    settle_versions,
    version_storage,
)


@pytest.fixture(params=["local", "gcs"])
def workdir(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "local":
        return LocalStorage(tmp_path / "work")
    client = request.getfixturevalue("gcs_client")
    bucket = request.getfixturevalue("gcs_bucket")
    return GCSStorage(f"gs://{bucket}/work", client=client)


def publish(workdir, version: str, when: str) -> None:
    folder = version_storage(workdir, version)
    folder.write_bytes("export/coco/annotations/instances.json", b"{}")
    write_json(folder, PUBLISHED, {"published_at": when})


def test_latest_moves_only_forward_and_only_to_complete_versions(workdir) -> None:
    assert read_latest(workdir) is None and next_local_version(workdir) == "refresh-0001"
    publish(workdir, "run-b", "2026-12-02T00:00:00")
    publish(workdir, "run-a", "2026-12-01T00:00:00")
    version_storage(workdir, "run-c").write_bytes("generate/manifest.jsonl", b"")  # running
    assert advance_latest(workdir, "run-b") == "run-b"
    assert advance_latest(workdir, "run-a") == "run-b"  # published earlier: LATEST stays
    with pytest.raises(FreemaskError, match="run-c: not published"):
        advance_latest(workdir, "run-c")
    assert read_latest(workdir)["version"] == "run-b"


def test_retention_keeps_the_newest_and_finishes_a_deletion_left_half_done(workdir) -> None:
    for day, version in enumerate(["v1", "v2", "v3", "v4"], start=1):
        publish(workdir, version, f"2026-12-0{day}T00:00:00")
    version_storage(workdir, "v5").write_bytes("generate/manifest.jsonl", b"")  # running
    # A deletion killed after its mark and marker went: nothing reads v1 as whole any more.
    version_storage(workdir, "v1").write_bytes(DELETING, b"{}")
    version_storage(workdir, "v1").delete(PUBLISHED)
    latest, deleted = settle_versions(workdir, keep=2)
    assert latest == "v4" and deleted == ["v1", "v2"]
    assert list_versions(workdir) == ["v3", "v4", "v5"]
    record = json.loads(workdir.read_bytes("LATEST"))
    assert record == {"published_at": "2026-12-04T00:00:00", "version": "v4"}


def test_every_version_of_a_project_logs_into_its_top_store(tmp_path: Path) -> None:
    top = tmp_path / "work"
    settings = {"name": "p", "workdir": str(top), "classes": ["ball"]}
    project = RunConfig.model_validate(settings)
    # A version's own work directory (a pipeline task on a local work directory, a refresh).
    version = RunConfig.model_validate(
        {**settings, "workdir": str(top / "versions/v7"), "kubeflow": {"dataset_version": "v7"}}
    )
    store = f"sqlite:///{top / 'mlflow.db'}"
    assert project_tracking_uri(project) == project_tracking_uri(version) == store
    refresh, _ = local_refresh(project)
    assert refresh.tracking.uri == store
