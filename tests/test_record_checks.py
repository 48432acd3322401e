"""Records checked against their prefix before anything large is read: names, file kinds,
image headers against declared sizes, instance masks and classes."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import CLASSES, write_dataset
from PIL import Image, ImageFile
from pycocotools import mask as mask_util

from freemask.errors import ExportError, ManifestError, StorageError
from freemask.record_checks import (
    MAX_ID_BYTES,
    name_problem,
    require_usable,
    sample_problem,
    sample_problems,
)
from freemask.records import RLE, Instance
from freemask.storage import LocalStorage, encode_image, open_storage


@pytest.fixture
def prefix(tmp_path: Path):
    storage = LocalStorage(tmp_path / "data")
    return storage, [sample for sample, _ in write_dataset(storage, 3)]


def full_rle(side: int) -> RLE:
    """A mask covering a side x side image, encoded without building the mask."""
    encoded = mask_util.frPyObjects({"size": [side, side], "counts": [0, side * side]}, side, side)
    return RLE(size=(side, side), counts=encoded["counts"].decode("ascii"))


def test_a_good_prefix_has_no_problems(prefix) -> None:
    storage, samples = prefix
    assert sample_problems(storage, samples, CLASSES) == {}
    require_usable(storage, samples, CLASSES, "here")


def test_a_declared_size_is_checked_against_the_header_without_decoding(
    prefix, monkeypatch
) -> None:
    storage, samples = prefix
    side = 16384
    full = Instance(class_name="cat", class_id=1, bbox=(0, 0, side, side), rle=full_rle(side))
    huge = samples[0].model_copy(update={"width": side, "height": side, "instances": [full] * 254})

    def no_decoding(self):
        raise AssertionError("pixels decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    started = time.monotonic()
    problem = sample_problem(storage, huge, CLASSES)
    assert time.monotonic() - started < 2
    assert problem == (
        f"image {huge.image!r}: its header's 48x64 does not match the record's 16384x16384 "
        "(height x width)"
    )


def test_a_mask_of_another_size_or_with_channels_does_not_fit(prefix) -> None:
    storage, samples = prefix
    sample = samples[0]
    storage.write_bytes(sample.semantic_mask, encode_image(np.zeros((10, 10), "uint8"), "x.png"))
    assert "shape (10, 10) does not match the 48x64 image" in sample_problem(storage, sample)
    storage.write_bytes(sample.semantic_mask, encode_image(np.zeros((48, 64, 3), "uint8"), "x.png"))
    assert "shape (48, 64, 3) does not match the 48x64 image" in sample_problem(storage, sample)


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("images/a\x00b.png", "control character '\\x00'"),
        ("images/a\nb.png", "control character '\\n'"),
        ("images/" + "b" * 300 + ".png", "304-byte name"),
        ("x/" * 600 + "a.png", "more than the 1024 a path may have"),
        ("images/.freemask-tmp-12-a.png", "temporary file"),
    ],
)
def test_names_that_cannot_be_files_of_the_prefix(path: str, words: str) -> None:
    assert words in name_problem(path)


def test_a_record_naming_a_bad_file_name_is_refused_before_any_access(prefix) -> None:
    storage, samples = prefix
    for path, words in [
        ("images/a\x00b.png", "control character"),
        ("images/" + "c" * 300 + ".png", "304-byte name"),
        ("images/.freemask-tmp-1-x.png", "temporary file"),
    ]:
        problem = sample_problem(storage, samples[0].model_copy(update={"image": path}))
        assert problem.startswith("image ") and words in problem


def test_a_long_id_is_refused(prefix) -> None:
    storage, samples = prefix
    long = samples[0].model_copy(update={"id": "a" * (MAX_ID_BYTES + 1)})
    assert sample_problem(storage, long) == (
        f"id is {MAX_ID_BYTES + 1} bytes long, more than {MAX_ID_BYTES} (the id names its files)"
    )


def test_only_regular_files_inside_the_prefix_count(prefix, tmp_path: Path) -> None:
    storage, samples = prefix
    sample = samples[0]
    image = tmp_path / "data" / sample.image
    image.unlink()
    os.mkfifo(image)
    assert sample_problem(storage, sample) == (
        f"image {sample.image!r}: is a FIFO (named pipe), not a regular file"
    )
    image.unlink()
    image.mkdir()
    assert sample_problem(storage, sample).endswith("is a folder, not a regular file")
    image.rmdir()
    assert sample_problem(storage, sample).endswith("does not exist")
    outside = tmp_path / "outside.png"
    outside.write_bytes((tmp_path / "data" / samples[1].image).read_bytes())
    image.symlink_to(outside)
    assert "outside" in sample_problem(storage, sample)
    assert "symbolic link" in sample_problem(storage, sample)
    image.unlink()
    image.symlink_to(tmp_path / "data" / samples[1].image)  # a link inside the prefix is fine
    assert sample_problem(storage, sample) is None


def test_instances_must_fit_the_sample_decode_and_name_the_run_classes(prefix) -> None:
    storage, samples = prefix
    sample = samples[0]
    first = sample.instances[0]

    def with_first(**update) -> str | None:
        changed = first.model_copy(update=update)
        return sample_problem(
            storage,
            sample.model_copy(update={"instances": [changed, *sample.instances[1:]]}),
            CLASSES,
        )

    assert with_first(rle=first.rle.model_copy(update={"size": (20, 20)})) == (
        "instances[0].rle.size 20x20 does not match the sample's 48x64 (height x width)"
    )
    assert "RLE does not decode" in with_first(rle=first.rle.model_copy(update={"counts": "0"}))
    assert with_first(class_id=9) == "instances[0].class_id 9 exceeds the 3 configured classes"
    assert with_first(class_name="cow") == (
        "instances[0]: class 'cow' is not among the configured classes (cat, dog, traffic light)"
    )
    assert with_first(class_id=2) == (
        "instances[0]: class 'cat' has class_id 2, which the config names 'dog'"
    )
    assert with_first(class_id=9) is not None and with_first() is None
    bad = first.model_copy(update={"class_id": 9})
    unchecked = sample.model_copy(update={"instances": [bad]})
    assert sample_problem(storage, unchecked, classes=None) is None


def test_unreadable_and_oversized_images_raise_as_reading_them_would(prefix) -> None:
    storage, samples = prefix
    storage.write_bytes(samples[0].image, b"\x89PNG garbage")
    with pytest.raises(StorageError, match="not a readable image"):
        sample_problem(storage, samples[0])
    buffer = io.BytesIO()
    Image.new("1", (15000, 15000)).save(buffer, format="PNG")
    storage.write_bytes(samples[1].image, buffer.getvalue())
    with pytest.raises(StorageError, match=r"larger than .* decompression bomb"):
        sample_problem(storage, samples[1])


def test_require_usable_names_the_manifest_the_sample_and_the_field(prefix) -> None:
    storage, samples = prefix
    bad = [
        samples[0].model_copy(update={"id": "x" * 300}),
        samples[1],
        samples[2].model_copy(update={"image": "images/.freemask-tmp-1-a.png"}),
    ]
    with pytest.raises(ManifestError) as refused:
        require_usable(storage, bad, CLASSES, "data/manifest.jsonl")
    message = str(refused.value)
    assert "\n" not in message and len(message) < 300
    assert message.startswith("data/manifest.jsonl: sample 'xxxxxxxxxx")
    assert "id is 300 bytes long" in message and "(1 more sample(s) unusable)" in message
    with pytest.raises(ExportError, match=r"image 'images/\.freemask-tmp-1-a\.png' is a temporary"):
        require_usable(storage, bad[1:], CLASSES, "out", error=ExportError)


def test_headers_of_bucket_objects_are_read_from_their_head(
    gcs_client, gcs_bucket, prefix, monkeypatch
) -> None:
    local, samples = prefix
    storage = open_storage(f"gs://{gcs_bucket}/data", gcs_client=gcs_client)
    for name in local.list():
        storage.write_bytes(name, local.read_bytes(name))

    def whole_reads_refused(path: str) -> bytes:
        raise AssertionError(f"{path} read whole")

    with monkeypatch.context() as patch:
        patch.setattr(storage, "read_bytes", whole_reads_refused)
        assert sample_problems(storage, samples, CLASSES) == {}
        wrong = samples[0].model_copy(update={"width": 32, "instances": []})
        assert sample_problem(storage, wrong).startswith(
            f"image {wrong.image!r}: its header's 48x64 does not match the record's 48x32"
        )
    storage.write_bytes(samples[1].image, b"")
    with pytest.raises(StorageError, match="not a readable image"):
        sample_problem(storage, samples[1])
