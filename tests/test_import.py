"""``freemask import``: labelled VOC and COCO folders become freemask prefixes that
``freemask evaluate`` scores and ``segment.validation`` reads; classes map or are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import CLASSES, SHAPE_CLASSES, disc, write_dataset, write_shapes_set
from PIL import Image
from pycocotools import mask as mask_util

from freemask.active.steps import validation_of
from freemask.cli import main
from freemask.config import load_config
from freemask.dataset_import import VOC_NAMES, import_dataset
from freemask.errors import DatasetImportError, FreemaskError
from freemask.export import export_dataset, uncompressed_rle, voc_palette
from freemask.records import IGNORE_INDEX, read_manifest
from freemask.stage_output import is_complete
from freemask.storage import LocalStorage, encode_image, read_image


def write_config(tmp_path: Path, classes: list[str], **fields) -> Path:
    path = tmp_path / "run.yaml"
    config = {"name": "import-test", "workdir": str(tmp_path / "work"), "classes": classes}
    path.write_text(yaml.safe_dump({**config, **fields}))
    return path


def assert_same_labels(imported: LocalStorage, original: LocalStorage) -> None:
    """Every original sample is there under its id, with the same labels and instances."""
    before = {sample.id: sample for sample in read_manifest(original)}
    after = read_manifest(imported)
    assert sorted(sample.id for sample in after) == sorted(before)
    for sample in after:
        source = before[sample.id]
        np.testing.assert_array_equal(
            read_image(imported, sample.semantic_mask), read_image(original, source.semantic_mask)
        )
        assert [(i.class_name, i.class_id) for i in sample.instances] == [
            (i.class_name, i.class_id) for i in source.instances
        ]
        for mine, theirs in zip(sample.instances, source.instances, strict=True):
            np.testing.assert_array_equal(mine.mask(), theirs.mask())
        assert read_image(imported, sample.image).shape[:2] == (source.height, source.width)


# 1. Round trips: our own exports come back as they went out.


@pytest.mark.parametrize("fmt", ["coco", "voc"])
def test_an_export_imports_back_to_the_same_labels(fmt: str, tmp_path: Path) -> None:
    original = LocalStorage(tmp_path / "data")
    write_dataset(original, 4)  # overlapping objects, an ignore band
    export_dataset(original, LocalStorage(tmp_path / fmt), CLASSES, fmt)
    imported = LocalStorage(tmp_path / "imported")
    result = import_dataset(fmt, LocalStorage(tmp_path / fmt), imported, CLASSES)
    assert result.written == 4 and is_complete(imported)
    assert_same_labels(imported, original)
    again = import_dataset(fmt, LocalStorage(tmp_path / fmt), imported, CLASSES)
    assert (again.written, again.skipped) == (0, 4)  # a re-run redoes nothing
    with pytest.raises(FreemaskError, match="other settings"):
        import_dataset(fmt, LocalStorage(tmp_path / fmt), imported, CLASSES, {"cat": "dog"})


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, LocalStorage]:
    """(config, model, labelled shapes set): a tiny segmenter trained a few steps."""
    root = tmp_path_factory.mktemp("trained")
    shapes, _ = write_shapes_set(root / "shapes", 6)
    config = write_config(
        root,
        SHAPE_CLASSES,
        segment={
            "model_id": "builtin:tiny-mask2former",
            "image_size": 64,
            "batch_size": 3,
            "train_steps": 2,
        },
    )
    model = root / "model"
    assert main(["train", "-c", str(config), "--in", shapes.uri, "--out", str(model)]) == 0
    return config, model, shapes


def evaluate(config: Path, model: Path, data: str, capsys) -> dict:
    capsys.readouterr()
    assert main(["evaluate", "-c", str(config), "--model", str(model), "--in", data]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize("fmt", ["coco", "voc"])
def test_evaluate_scores_an_imported_export_as_the_original(
    fmt: str, trained, tmp_path: Path, capsys
) -> None:
    config, model, shapes = trained
    assert (
        main(
            [
                "export",
                "-c",
                str(config),
                "--in",
                shapes.uri,
                "--out",
                str(tmp_path / fmt),
                "--format",
                fmt,
            ]
        )
        == 0
    )
    out = tmp_path / "imported"
    argv = ["import", "-c", str(config), "--format", fmt, "--in", str(tmp_path / fmt)]
    assert main([*argv, "--out", str(out)]) == 0
    assert "imported 6 samples" in capsys.readouterr().out
    original = evaluate(config, model, shapes.uri, capsys)
    imported = evaluate(config, model, str(out), capsys)
    assert imported == original and imported["samples"] == 6
    # And the run reads it as its validation set.
    run_config = load_config(
        write_config(tmp_path, SHAPE_CLASSES, segment={"validation": str(out)})
    )
    samples, _ = validation_of(run_config, LocalStorage(tmp_path / "work"))
    assert len(samples) == 6


# 2. Folders made by other tools: VOC's own layout and names, COCO with every segmentation form.


def write_voc(root: Path, with_person: bool = False) -> dict[str, np.ndarray]:
    """A bare VOC2012 folder with VOC's 21 class indices and no labels.txt: two images, cats
    (8), dogs (12) and a tvmonitor (20), optionally a person (15), 255 borders."""
    masks = {}
    for number in range(2):
        semantic = np.zeros((40, 60), np.uint8)
        objects = np.zeros((40, 60), np.uint8)
        cat = disc((40, 60), (20, 15), 8)
        dog = disc((40, 60), (20, 42), 9)
        semantic[cat], objects[cat] = 8, 1
        semantic[dog], objects[dog] = 12, 2
        semantic[30:36, 2:8], objects[30:36, 2:8] = 20, 3
        if with_person and number == 1:
            semantic[2:6, 50:56], objects[2:6, 50:56] = 15, 4
        border = disc((40, 60), (20, 15), 9) & ~cat
        semantic[border], objects[border] = IGNORE_INDEX, IGNORE_INDEX
        name = f"2007_00000{number}"
        for folder, array in (("SegmentationClass", semantic), ("SegmentationObject", objects)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            (root / folder / f"{name}.png").write_bytes(encode_image(array, "x.png", voc_palette()))
        (root / "JPEGImages").mkdir(exist_ok=True)
        image = np.random.default_rng(number).integers(0, 255, (40, 60, 3), dtype=np.uint8)
        (root / "JPEGImages" / f"{name}.jpg").write_bytes(encode_image(image, "x.jpg"))
        masks[name] = semantic
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000001\n")
    return masks


def test_a_voc2012_folder_imports_with_voc_names_mapped_case_insensitively(tmp_path) -> None:
    masks = write_voc(tmp_path / "VOC2012")
    classes = ["Cat", "dog", "tv"]
    out = LocalStorage(tmp_path / "out")
    import_dataset("voc", LocalStorage(tmp_path), out, classes, {"TVMonitor": "tv"})
    samples = {sample.id: sample for sample in read_manifest(out)}
    assert sorted(samples) == sorted(masks)  # no trainval.txt: every mask
    for name, voc in masks.items():
        semantic = read_image(out, samples[name].semantic_mask)
        expected = np.select([voc == 8, voc == 12, voc == 20, voc == 255], [1, 2, 3, 255], 0)
        np.testing.assert_array_equal(semantic, expected)
        assert [(i.class_name, i.class_id) for i in samples[name].instances] == [
            ("Cat", 1),
            ("dog", 2),
            ("tv", 3),
        ]
        assert samples[name].image == f"images/{name}.jpg"
    only_val = LocalStorage(tmp_path / "val")
    import_dataset("voc", LocalStorage(tmp_path), only_val, classes, {"tvmonitor": "tv"}, "val")
    assert [sample.id for sample in read_manifest(only_val)] == ["2007_000001"]


def test_an_unknown_class_is_refused_in_one_line_before_anything_is_written(
    tmp_path, capsys
) -> None:
    write_voc(tmp_path / "VOCdevkit" / "VOC2012", with_person=True)
    config = write_config(tmp_path, ["cat", "dog"])
    out = tmp_path / "out"
    argv = ["import", "-c", str(config), "--format", "voc", "--in", str(tmp_path)]
    assert main([*argv, "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert (
        "2 class name(s) of the source are not among the run's classes: person, tvmonitor" in error
    )
    assert "--map NAME=CLASS" in error
    assert not out.exists()
    # Mapped away (one to ignore, one to background), the same folder imports.
    assert (
        main([*argv, "--out", str(out), "--map", "person=ignore", "--map", "tvmonitor=background"])
        == 0
    )
    semantic = read_image(LocalStorage(out), "masks/2007_000001.png")
    assert (semantic[2:6, 50:56] == IGNORE_INDEX).all() and (semantic[30:36, 2:8] == 0).all()
    with pytest.raises(DatasetImportError, match="'unicorn' is none of the run's classes"):
        import_dataset(
            "voc", LocalStorage(tmp_path), LocalStorage(tmp_path / "x"), ["cat"], {"dog": "unicorn"}
        )
    with pytest.raises(DatasetImportError, match="the source has no class 'dgo'"):
        import_dataset(
            "voc", LocalStorage(tmp_path), LocalStorage(tmp_path / "x"), ["cat"], {"dgo": "cat"}
        )
    assert len(VOC_NAMES) == 21


def test_a_coco_folder_imports_polygons_rle_and_crowds(tmp_path: Path) -> None:
    height, width = 30, 40
    dog = disc((height, width), (15, 22), 7)  # overlaps the cat's square
    crowd = np.zeros((height, width), bool)
    crowd[0:4, 30:40] = True
    tiny = np.zeros((height, width), bool)
    tiny[25:28, 32:36] = True
    compressed = mask_util.encode(np.asfortranarray(dog.astype(np.uint8)))
    annotations = [
        {
            "id": 1,
            "image_id": 7,
            "category_id": 3,
            "iscrowd": 0,
            "segmentation": [[4.0, 9.0, 16.0, 9.0, 16.0, 21.0, 4.0, 21.0], [1.0, 1.0]],
        },
        {
            "id": 2,
            "image_id": 7,
            "category_id": 5,
            "iscrowd": 0,
            "segmentation": {"size": [height, width], "counts": compressed["counts"].decode()},
        },
        {
            "id": 3,
            "image_id": 7,
            "category_id": 5,
            "iscrowd": 1,
            "segmentation": uncompressed_rle(crowd),
        },
        {
            "id": 4,
            "image_id": 7,
            "category_id": 9,
            "iscrowd": 0,
            "segmentation": uncompressed_rle(tiny),
        },
    ]
    document = {
        "images": [
            {"id": 7, "file_name": "photo one.png", "width": width, "height": height},
            {"id": 8, "file_name": "empty.png", "width": width, "height": height},
        ],
        "annotations": annotations,
        "categories": [
            {"id": 3, "name": "CAT"},
            {"id": 5, "name": "dog"},
            {"id": 9, "name": "Puppy"},
            {"id": 11, "name": "zebra"},  # listed, never used: needs no mapping
        ],
    }
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(document))
    (root / "val2017").mkdir()
    for name in ("photo one.png", "empty.png"):
        Image.new("RGB", (width, height)).save(root / "val2017" / name)
    out = LocalStorage(tmp_path / "out")
    import_dataset("coco", LocalStorage(root), out, ["dog", "cat"], {"puppy": "dog"})
    samples = {sample.id: sample for sample in read_manifest(out)}
    assert sorted(samples) == ["empty", "photo_one"]
    assert read_image(out, samples["empty"].semantic_mask).max() == 0
    sample = samples["photo_one"]
    semantic = read_image(out, sample.semantic_mask)
    square = np.zeros((height, width), bool)
    square[9:21, 4:16] = True
    assert [(i.class_name, i.class_id) for i in sample.instances] == [
        ("cat", 2),
        ("dog", 1),
        ("dog", 1),
    ]
    np.testing.assert_array_equal(sample.instances[0].mask(), square)
    np.testing.assert_array_equal(sample.instances[1].mask(), dog)
    assert (semantic[square & dog] == IGNORE_INDEX).all()  # two objects claim it
    assert (semantic[square & ~dog] == 2).all() and (semantic[dog & ~square] == 1).all()
    assert (semantic[crowd] == IGNORE_INDEX).all() and (semantic[tiny] == 1).all()
    assert (semantic[~(square | dog | crowd | tiny)] == 0).all()
