"""Exports are checked whole before they are written, and put in place whole: a refused or
failed export leaves no partial folder and an earlier export as it was, locally and on GCS."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from helpers import CLASSES, write_dataset

from freemask.errors import ExportError
from freemask.export import export_dataset
from freemask.records import read_manifest, write_manifest
from freemask.storage import LocalStorage, open_storage


def files(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def source(tmp_path: Path) -> LocalStorage:
    storage = LocalStorage(tmp_path / "data")
    write_dataset(storage, 4)
    return storage


@pytest.mark.parametrize("fmt", ["coco", "voc", "hf"])
def test_a_refused_export_leaves_the_earlier_one_as_it_was(source, tmp_path, fmt) -> None:
    out = tmp_path / "out"
    export_dataset(source, LocalStorage(out), CLASSES, fmt)
    before = files(tmp_path)
    samples = read_manifest(source)
    long_id = samples[2].model_copy(update={"id": "a" * 300})
    write_manifest(source, [*samples[:2], long_id, *samples[3:]])
    with pytest.raises(ExportError, match="id is 300 bytes long"):
        export_dataset(source, LocalStorage(out), CLASSES, fmt)
    after = files(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("data/")} == {
        k: v for k, v in before.items() if not k.startswith("data/")
    }
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data", "out"]


def test_a_failure_half_way_leaves_no_partial_export(source, tmp_path, monkeypatch) -> None:
    out = tmp_path / "out"
    export_dataset(source, LocalStorage(out), CLASSES, "voc")
    before = files(out)
    real = LocalStorage.write_bytes
    masks: list[str] = []

    def fails_on_the_third_mask(self, path: str, data: bytes, **options) -> None:
        if path.startswith("SegmentationClass/"):
            masks.append(path)
            if len(masks) == 3:
                raise OSError("disk full")
        real(self, path, data, **options)

    monkeypatch.setattr(LocalStorage, "write_bytes", fails_on_the_third_mask)
    with pytest.raises(OSError, match="disk full"):
        export_dataset(source, LocalStorage(out), CLASSES, "voc")
    assert files(out) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data", "out"]
    masks.clear()
    fresh = tmp_path / "fresh"
    with pytest.raises(OSError, match="disk full"):
        export_dataset(source, LocalStorage(fresh), CLASSES, "voc")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data", "out"]


def test_an_export_replaces_the_earlier_one_whole(source, tmp_path) -> None:
    out = tmp_path / "out"
    export_dataset(source, LocalStorage(out), CLASSES, "coco")
    samples = read_manifest(source)
    write_manifest(source, samples[1:])
    counts = export_dataset(source, LocalStorage(out), CLASSES, "coco")
    assert counts["images"] == 3
    assert sorted(path.name for path in (out / "images").iterdir()) == sorted(
        f"{sample.id}.png" for sample in samples[1:]
    )


def test_a_folder_holding_other_files_is_not_replaced(source, tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match=r"holds files that are no part of a coco export \(notes"):
        export_dataset(source, LocalStorage(out), CLASSES, "coco")
    assert [path.name for path in out.iterdir()] == ["notes.txt"]
    export_dataset(source, LocalStorage(tmp_path / "voc"), CLASSES, "voc")
    with pytest.raises(ExportError, match="no part of a coco export"):
        export_dataset(source, LocalStorage(tmp_path / "voc"), CLASSES, "coco")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="is not a folder"):
        export_dataset(source, LocalStorage(tmp_path / "file"), CLASSES, "coco")


def test_a_bucket_export_is_uploaded_once_whole_and_refusals_upload_nothing(
    source, tmp_path, gcs_client, gcs_bucket
) -> None:
    target = open_storage(f"gs://{gcs_bucket}/export/voc", gcs_client=gcs_client)
    export_dataset(source, target, CLASSES, "voc")
    local = tmp_path / "local"
    export_dataset(source, LocalStorage(local), CLASSES, "voc")
    uploaded = {name: target.read_bytes(name) for name in target.list()}
    assert uploaded == {name: (local / name).read_bytes() for name in files(local)}

    samples = read_manifest(source)
    bad = samples[1].model_copy(update={"image": "images/.freemask-tmp-9-x.png"})
    write_manifest(source, [samples[0], bad, *samples[2:]])
    with pytest.raises(ExportError, match="temporary file"):
        export_dataset(source, target, CLASSES, "voc")
    assert {name: target.read_bytes(name) for name in target.list()} == uploaded

    write_manifest(source, samples[:2])  # fewer samples: the others' objects go
    export_dataset(source, target, CLASSES, "voc")
    images = "VOCdevkit/VOC2012/JPEGImages/"
    assert sorted(name for name in target.list() if name.startswith(images)) == sorted(
        f"{images}{sample.id}.jpg" for sample in samples[:2]
    )


def test_a_mount_point_is_exported_over_file_by_file(source, tmp_path, monkeypatch) -> None:
    out = tmp_path / "mnt"
    out.mkdir()
    real = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda path: Path(path) == out or real(path))
    export_dataset(source, LocalStorage(out), CLASSES, "coco")
    before = files(out)
    samples = read_manifest(source)
    write_manifest(source, [samples[0].model_copy(update={"height": 4096}), *samples[1:]])
    with pytest.raises(ExportError, match="does not match the sample's 4096x64"):
        export_dataset(source, LocalStorage(out), CLASSES, "coco")
    assert files(out) == before
    write_manifest(source, samples[2:])
    export_dataset(source, LocalStorage(out), CLASSES, "coco")
    assert sorted(path.name for path in (out / "images").iterdir()) == sorted(
        f"{sample.id}.png" for sample in samples[2:]
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data", "mnt"]
