"""Storage over local directories and gs:// (through a GCS emulator): same behaviour on both."""

import threading
from pathlib import Path

import numpy as np
import pytest

from freemask.errors import StorageError, WriteConflictError
from freemask.gcs_storage import GCSStorage
from freemask.storage import (
    LocalStorage,
    copy,
    open_storage,
    read_array,
    read_image,
    read_json,
    replace_folder,
    write_array,
    write_image,
    write_json,
)


@pytest.fixture(params=["local", "gcs"])
def storage(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "local":
        return LocalStorage(tmp_path / "root")
    client = request.getfixturevalue("gcs_client")
    bucket = request.getfixturevalue("gcs_bucket")
    return GCSStorage(f"gs://{bucket}/runs/one", client=client)


def test_bytes_json_image_and_array_round_trip(storage) -> None:
    storage.write_bytes("raw/a.bin", b"\x00\x01")
    write_json(storage, "meta/info.json", {"classes": ["cat"], "n": 2})
    rgb = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    write_image(storage, "images/x.png", rgb)
    soft = np.random.default_rng(1).random((8, 8)).astype(np.float16)
    write_array(storage, "soft/x.npy", soft)

    assert storage.read_bytes("raw/a.bin") == b"\x00\x01"
    assert read_json(storage, "meta/info.json") == {"classes": ["cat"], "n": 2}
    np.testing.assert_array_equal(read_image(storage, "images/x.png"), rgb)
    loaded = read_array(storage, "soft/x.npy")
    assert loaded.dtype == np.float16
    np.testing.assert_array_equal(loaded, soft)


def test_palette_png_keeps_indices_and_palette(storage) -> None:
    indices = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    palette = [value for index in range(256) for value in (index, 0, 255 - index)]
    write_image(storage, "masks/m.png", indices, palette=palette)
    np.testing.assert_array_equal(read_image(storage, "masks/m.png"), indices)


def test_listing_exists_and_delete(storage) -> None:
    for name in ["images/b.png", "images/a.png", "masks/a.png", "imagesx/c.png"]:
        storage.write_bytes(name, b"x")
    assert storage.list("images") == ["images/a.png", "images/b.png"]
    assert storage.list() == ["images/a.png", "images/b.png", "imagesx/c.png", "masks/a.png"]
    assert storage.exists("masks/a.png") and not storage.exists("masks/zzz.png")
    storage.delete("masks/a.png")
    assert not storage.exists("masks/a.png")
    assert storage.list("nothing-here") == []


def test_write_once_refuses_a_second_write(storage) -> None:
    storage.write_bytes("_SUCCESS", b"first", write_once=True)
    with pytest.raises(WriteConflictError, match="already exists"):
        storage.write_bytes("_SUCCESS", b"second", write_once=True)
    assert storage.read_bytes("_SUCCESS") == b"first"


@pytest.mark.parametrize(
    "path", ["../escape.png", "a/../../b.png", "/etc/passwd", "gs://other/x.png", "", "a\\b"]
)
def test_paths_that_escape_the_prefix_are_refused(storage, path: str) -> None:
    with pytest.raises(StorageError):
        storage.write_bytes(path, b"x")
    with pytest.raises(StorageError):
        storage.read_bytes(path)


def test_interrupted_write_leaves_nothing_visible(storage) -> None:
    storage.write_bytes("images/x.png", b"old")
    with pytest.raises(RuntimeError), storage.writer("images/x.png") as stream:
        stream.write(b"half of the new")
        raise RuntimeError("killed mid-write")
    with pytest.raises(RuntimeError), storage.writer("images/y.png") as stream:
        stream.write(b"half")
        raise RuntimeError("killed mid-write")
    assert storage.read_bytes("images/x.png") == b"old"
    assert storage.list() == ["images/x.png"]


def test_local_interrupted_write_leaves_no_temp_file_on_disk(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    with pytest.raises(RuntimeError), storage.writer("a/b.bin") as stream:
        stream.write(b"partial")
        raise RuntimeError("killed")
    assert [path.name for path in tmp_path.rglob("*") if path.is_file()] == []


def test_append_lines_accumulates_and_cuts_a_torn_tail(storage) -> None:
    storage.append_lines("m.jsonl", b"1\n")
    storage.append_lines("m.jsonl", b"2\n3\n")
    assert storage.read_bytes("m.jsonl") == b"1\n2\n3\n"
    assert storage.list() == ["m.jsonl"]


def test_local_append_repairs_an_interrupted_append(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    (tmp_path / "m.jsonl").write_bytes(b'{"a": 1}\n{"a": 2')
    storage.append_lines("m.jsonl", b'{"a": 3}\n')
    assert storage.read_bytes("m.jsonl") == b'{"a": 1}\n{"a": 3}\n'


def test_copy_between_local_and_gcs(tmp_path: Path, gcs_client, gcs_bucket: str) -> None:
    local = LocalStorage(tmp_path)
    remote = GCSStorage(f"gs://{gcs_bucket}/data", client=gcs_client)
    local.write_bytes("a.bin", b"payload")
    copy(local, "a.bin", remote, "copied/a.bin")
    copy(remote, "copied/a.bin", local, "back.bin")
    assert local.read_bytes("back.bin") == b"payload"


def test_missing_objects_and_bad_files_are_named(storage) -> None:
    with pytest.raises(StorageError, match=r"nope\.json: not found"):
        storage.read_bytes("nope.json")
    storage.write_bytes("bad.json", b"{oops")
    with pytest.raises(StorageError, match=r"bad\.json: not valid JSON"):
        read_json(storage, "bad.json")
    with pytest.raises(StorageError, match=r"bad\.json: not a readable image"):
        read_image(storage, "bad.json")


def test_open_storage_picks_the_backend(tmp_path: Path) -> None:
    assert isinstance(open_storage(tmp_path), LocalStorage)
    assert isinstance(open_storage(f"file://{tmp_path}"), LocalStorage)
    assert open_storage("gs://bucket/a/b/").uri == "gs://bucket/a/b"
    with pytest.raises(StorageError, match="unsupported URI scheme"):
        open_storage("s3://bucket/x")
    with pytest.raises(StorageError, match="gs://bucket/prefix"):
        GCSStorage("gs:///x")


def test_child_storage_is_rooted_below(storage) -> None:
    child = storage.child("generate")
    child.write_bytes("images/a.png", b"x")
    assert storage.list() == ["generate/images/a.png"]
    assert child.list() == ["images/a.png"]


def test_replace_folder_swaps_whole_folders_and_keeps_the_old_one_on_failure(tmp_path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights").write_text("old")
    (folder / "stale").write_text("old")

    def fail(partial: Path) -> None:
        partial.mkdir()
        (partial / "weights").write_text("new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_folder(folder, fail)
    assert sorted(p.name for p in folder.iterdir()) == ["stale", "weights"]
    assert (folder / "weights").read_text() == "old"

    def write(partial: Path) -> None:
        partial.mkdir()
        (partial / "weights").write_text("new")

    replace_folder(folder, write)
    assert [p.name for p in folder.iterdir()] == ["weights"]
    assert (folder / "weights").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no .partial, no .old


def test_update_never_loses_a_concurrent_write(storage) -> None:
    """``update`` is a read-modify-write: another writer between its read and its write either
    waits (the folder lock, locally) or makes the change run again on what it wrote (a
    generation mismatch, on GCS). Both increments count, whichever way."""
    assert storage.update("LATEST", lambda current: None) is None  # nothing to change
    storage.update("LATEST", lambda current: b"1")
    other = threading.Thread(
        target=storage.update, args=("LATEST", lambda c: b"%d" % (int(c) + 10))
    )
    calls = []

    def increment(current: bytes | None) -> bytes:
        calls.append(current)
        if len(calls) == 1:  # another writer arrives between this read and this write
            other.start()
            other.join(timeout=0.5 if isinstance(storage, LocalStorage) else None)
        return b"%d" % (int(current) + 1)

    storage.update("LATEST", increment)
    other.join()
    assert storage.read_bytes("LATEST") == b"12"
    assert len(calls) == (1 if isinstance(storage, LocalStorage) else 2)
