"""Many files to and from a bucket at once (model folders), through google-cloud-storage's
transfer_manager, against the GCS emulator."""

from __future__ import annotations

import pytest

from freemask.errors import StorageError
from freemask.gcs_storage import GCSStorage


def test_many_files_go_up_and_come_back_whole(tmp_path, gcs_client, gcs_bucket) -> None:
    store = GCSStorage(f"gs://{gcs_bucket}/models/m@1", client=gcs_client)
    source = tmp_path / "source"
    files = {f"unet/part-{index:02d}.bin": source / f"p{index}" for index in range(12)}
    for index, path in enumerate(files.values()):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes([index]) * (1000 + index))
    store.upload_files(files, metadata={"unet/part-03.bin": {"sha256": "abc"}})
    assert store.list() == sorted(files)
    blob = gcs_client.bucket(gcs_bucket).get_blob("models/m@1/unet/part-03.bin")
    assert blob.metadata == {"sha256": "abc"}

    target = tmp_path / "target"
    store.download_files({name: target / name for name in files})
    for name, path in files.items():
        assert (target / name).read_bytes() == path.read_bytes()


def test_a_missing_object_is_named_and_leaves_no_file(tmp_path, gcs_client, gcs_bucket) -> None:
    store = GCSStorage(f"gs://{gcs_bucket}/m", client=gcs_client)
    store.write_bytes("here.json", b"{}")
    wanted = {"here.json": tmp_path / "here.json", "gone.json": tmp_path / "sub" / "gone.json"}
    with pytest.raises(StorageError, match=rf"gs://{gcs_bucket}/m/gone.json: not found"):
        store.download_files(wanted)
    assert (tmp_path / "here.json").read_bytes() == b"{}"
    assert not (tmp_path / "sub" / "gone.json").exists()


def test_an_upload_of_a_missing_file_is_named(tmp_path, gcs_client, gcs_bucket) -> None:
    store = GCSStorage(f"gs://{gcs_bucket}/m", client=gcs_client)
    with pytest.raises(StorageError, match=rf"gs://{gcs_bucket}/m/a.bin: upload failed"):
        store.upload_files({"a.bin": tmp_path / "absent.bin"})
