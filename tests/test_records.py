"""Sample records, RLE masks and the JSONL manifest."""

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import CLASSES, make_sample, write_dataset

from freemask.errors import ManifestError
from freemask.records import (
    Instance,
    Sample,
    append_manifest,
    mask_to_rle,
    read_manifest,
    rle_to_mask,
    sample_id,
    validate_manifest,
    write_manifest,
)
from freemask.storage import LocalStorage


def test_sample_ids_are_deterministic_and_distinct() -> None:
    assert sample_id("abc", "traffic light", 3) == sample_id("abc", "traffic light", 3)
    assert sample_id("abc", "traffic light", 3).startswith("traffic_light-")
    ids = {
        sample_id(config, name, seed)
        for config in ("a", "b")
        for name in ("cat", "dog")
        for seed in range(50)
    }
    assert len(ids) == 200


def test_rle_round_trips_and_gives_box_and_area() -> None:
    mask = np.zeros((30, 40), dtype=bool)
    mask[5:15, 10:30] = True
    rle = mask_to_rle(mask)
    np.testing.assert_array_equal(rle_to_mask(rle), mask)
    instance = Instance.from_mask("cat", 1, mask)
    assert instance.bbox == (10.0, 5.0, 20.0, 10.0)
    assert instance.area == 200


def test_manifest_round_trip_preserves_records(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    written = write_dataset(storage, 4)
    samples = read_manifest(storage)
    assert [sample.id for sample in samples] == [sample.id for sample, _ in written]
    for sample, (_, masks) in zip(samples, written, strict=True):
        for instance, mask in zip(sample.instances, masks, strict=True):
            np.testing.assert_array_equal(instance.mask(), mask)


def test_append_adds_records_after_existing_ones(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    first, second, third = (make_sample(index)[0] for index in range(3))
    append_manifest(storage, [first])
    append_manifest(storage, [second, third])
    assert [sample.id for sample in read_manifest(storage)] == [first.id, second.id, third.id]


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    good = make_sample(0)[0].model_dump_json()
    broken = json.loads(good)
    broken["width"] = "wide"
    (tmp_path / "manifest.jsonl").write_text(f"{good}\n\n{json.dumps(broken)}\n")
    with pytest.raises(
        ManifestError, match=r"manifest.jsonl:3: width: Input should be a valid integer"
    ):
        read_manifest(storage)
    (tmp_path / "manifest.jsonl").write_text(f"{good}\nnot json\n{good}\n")
    with pytest.raises(ManifestError, match=r"manifest.jsonl:2: not valid JSON"):
        read_manifest(storage)


def test_the_same_record_twice_is_one_record(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    sample = make_sample(0)[0]
    append_manifest(storage, [sample])
    append_manifest(storage, [sample])  # a retried append, or a second run of the shard
    assert read_manifest(storage) == [sample]
    assert validate_manifest(storage) == [
        f"{storage.uri}/manifest.jsonl: sample {sample.id}: file {sample.image!r} does not exist",
        f"{storage.uri}/manifest.jsonl: sample {sample.id}: "
        f"file {sample.semantic_mask!r} does not exist",
    ]


def test_a_different_record_under_a_known_id_is_refused(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    sample = make_sample(0)[0]
    other = sample.model_copy(update={"seed": 99})
    append_manifest(storage, [sample])
    append_manifest(storage, [other])
    with pytest.raises(ManifestError, match=r":2: sample id .* already on line 1 with a different"):
        read_manifest(storage)
    with pytest.raises(ManifestError, match="duplicate sample ids"):
        write_manifest(storage, [sample, sample])


def test_validate_reports_a_torn_last_line_and_undecodable_rle(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    (sample, _), *_ = write_dataset(storage, 1)
    record = json.loads(sample.model_dump_json())
    record["instances"][0]["rle"]["counts"] = "zz"
    (tmp_path / "manifest.jsonl").write_text(json.dumps(record) + "\n" + '{"id": "tor')
    problems = validate_manifest(storage, classes=CLASSES)
    assert any("last line is torn" in line for line in problems)
    assert any("instance 0 RLE does not decode" in line for line in problems)
    with pytest.raises(ManifestError, match="RLE does not decode"):
        read_manifest(storage)[0].instances[0].mask()


def test_validate_reports_class_names_that_disagree_with_the_config(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    write_dataset(storage, 1)
    problems = validate_manifest(storage, classes=["dog", "cat", "traffic light"])
    assert any("which the config names" in line for line in problems)


def test_torn_last_line_from_an_interrupted_append_is_dropped(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    first, second = make_sample(0)[0], make_sample(1)[0]
    (tmp_path / "manifest.jsonl").write_text(
        f"{first.model_dump_json()}\n{second.model_dump_json()[:40]}"
    )
    assert [sample.id for sample in read_manifest(storage)] == [first.id]
    append_manifest(storage, [second])
    assert [sample.id for sample in read_manifest(storage)] == [first.id, second.id]


@pytest.mark.parametrize("path", ["../outside.png", "/abs/x.png", "gs://bucket/x.png"])
def test_record_paths_outside_the_prefix_are_refused(path: str) -> None:
    record = make_sample(0)[0].model_dump()
    record["image"] = path
    with pytest.raises(ValueError, match="image"):
        Sample.model_validate(record)


def test_validate_reports_missing_files_and_size_mismatch(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    written = write_dataset(storage, 3)
    assert validate_manifest(storage, classes=CLASSES) == []
    storage.delete(written[1][0].semantic_mask)
    wrong = make_sample(9, shape=(20, 20))[0]
    bad = written[2][0].model_copy(update={"instances": wrong.instances})
    write_manifest(storage, [written[0][0], written[1][0], bad])
    storage.write_bytes(bad.image, b"x")
    problems = validate_manifest(storage, classes=CLASSES[:1])
    assert any(f"sample {written[1][0].id}: file 'masks/" in line for line in problems)
    assert any("instance 0 mask is 20x20, expected 48x64" in line for line in problems)
    assert any("exceeds the 1 configured classes" in line for line in problems)
