"""COCO and VOC exports: readable by the standard tools, masks and classes exact (the loaders
of each format's consumers: tests/test_export_formats.py)."""

from pathlib import Path

import numpy as np
import pytest
from helpers import CLASSES, write_dataset
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from freemask.errors import ExportError
from freemask.export import export_dataset, voc_palette
from freemask.records import IGNORE_INDEX, write_manifest
from freemask.storage import LocalStorage


@pytest.fixture
def dataset(tmp_path: Path):
    source = LocalStorage(tmp_path / "compose")
    return source, write_dataset(source, 5)


def test_coco_loads_with_pycocotools_and_masks_decode_exactly(dataset, tmp_path: Path) -> None:
    source, written = dataset
    counts = export_dataset(source, LocalStorage(tmp_path / "coco"), CLASSES, "coco")
    assert counts["images"] == 5 and counts["objects"] == 10 and counts["rle_objects"] == 0
    assert counts["polygon_min_iou"] == 1.0

    coco = COCO(str(tmp_path / "coco" / "annotations" / "instances.json"))
    assert [category["name"] for category in coco.loadCats(coco.getCatIds())] == CLASSES
    for image_id, (sample, masks) in enumerate(written, start=1):
        info = coco.loadImgs(image_id)[0]
        assert (tmp_path / "coco" / "images" / info["file_name"]).is_file()
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=False))
        assert len(annotations) == len(masks)
        for annotation, mask, instance in zip(annotations, masks, sample.instances, strict=True):
            assert isinstance(annotation["segmentation"], list)  # polygons, as COCO's objects
            np.testing.assert_array_equal(coco.annToMask(annotation).astype(bool), mask)
            assert coco.loadCats(annotation["category_id"])[0]["name"] == instance.class_name
            assert annotation["area"] == mask.sum()
            assert annotation["bbox"] == list(
                mask_util.toBbox(mask_util.encode(np.asfortranarray(mask.astype(np.uint8))))
            )


def test_voc_pngs_carry_the_palette_and_class_indices(dataset, tmp_path: Path) -> None:
    source, written = dataset
    counts = export_dataset(
        source, LocalStorage(tmp_path / "voc"), CLASSES, "voc", val_fraction=0.4
    )
    target = tmp_path / "voc" / "VOCdevkit" / "VOC2012"
    assert sorted(path.name for path in (tmp_path / "voc").iterdir()) == ["VOCdevkit"]
    assert counts["images"] == 5 and counts["train"] + counts["val"] == 5
    for sample, masks in written:
        with Image.open(target / "SegmentationClass" / f"{sample.id}.png") as png:
            assert png.mode == "P"
            assert png.getpalette()[: 3 * 256] == voc_palette()
            semantic = np.asarray(png)
        for instance, mask in zip(sample.instances, masks, strict=True):
            inside = mask.copy()
            inside[0, :] = False
            assert (semantic[inside] == CLASSES.index(instance.class_name) + 1).all()
        assert (semantic[0, :] == IGNORE_INDEX).all()
        with Image.open(target / "SegmentationObject" / f"{sample.id}.png") as png:
            objects = np.asarray(png)
        assert set(np.unique(objects)) <= {0, 1, 2, IGNORE_INDEX}
        assert (target / "JPEGImages" / f"{sample.id}.jpg").is_file()
    train = (target / "ImageSets/Segmentation/train.txt").read_text().split()
    val = (target / "ImageSets/Segmentation/val.txt").read_text().split()
    assert sorted(train + val) == sorted(sample.id for sample, _ in written)
    assert (target / "labels.txt").read_text().split("\n")[:2] == ["background", "cat"]


def test_voc_palette_matches_the_pascal_colours() -> None:
    palette = voc_palette()
    assert palette[3:6] == [128, 0, 0]
    assert palette[15 * 3 : 15 * 3 + 3] == [192, 128, 128]
    assert palette[255 * 3 :] == [224, 224, 192]


def test_unknown_class_and_format_are_explained(dataset, tmp_path: Path) -> None:
    source, written = dataset
    with pytest.raises(
        ExportError, match=r"class 'traffic light' is not among the configured classes"
    ):
        export_dataset(source, LocalStorage(tmp_path / "x"), ["cat", "dog"], "coco")
    with pytest.raises(ExportError, match="format 'yolo' is not supported"):
        export_dataset(source, LocalStorage(tmp_path / "x"), CLASSES, "yolo")
    # Instances all of a configured class, but the semantic mask holds another one.
    first = written[0][0]
    cats = [instance for instance in first.instances if instance.class_name == "cat"]
    write_manifest(source, [first.model_copy(update={"instances": cats})])
    with pytest.raises(ExportError, match="semantic mask holds class index 2, but only 1 classes"):
        export_dataset(source, LocalStorage(tmp_path / "y"), ["cat"], "voc")


def test_a_disputed_object_is_a_crowd_region_in_coco_and_ignore_in_voc(dataset, tmp_path) -> None:
    source, written = dataset
    sample, masks = written[0]
    disputed = sample.instances[1].model_copy(update={"disputed": True})
    marked = sample.model_copy(
        update={"instances": [sample.instances[0], disputed], "semantic_mask": None}
    )
    write_manifest(source, [marked, *(s for s, _ in written[1:])])
    export_dataset(source, LocalStorage(tmp_path / "coco"), CLASSES, "coco")
    coco = COCO(str(tmp_path / "coco" / "annotations" / "instances.json"))
    crowd = coco.loadAnns(coco.getAnnIds(imgIds=1, iscrowd=None))
    assert [a["iscrowd"] for a in crowd] == [0, 1]
    assert len(coco.getAnnIds(imgIds=1, iscrowd=False)) == 1
    export_dataset(source, LocalStorage(tmp_path / "voc"), CLASSES, "voc")
    voc = tmp_path / "voc" / "VOCdevkit" / "VOC2012"
    with Image.open(voc / "SegmentationClass" / f"{sample.id}.png") as png:
        semantic = np.asarray(png)
    assert (semantic[masks[1]] == IGNORE_INDEX).all()
    assert (
        semantic[masks[0] & ~masks[1]] == CLASSES.index(sample.instances[0].class_name) + 1
    ).all()
