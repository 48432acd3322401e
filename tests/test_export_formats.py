"""Each export loads as it is in the tools its users read it with: COCO in pycocotools and in
torchvision's segmentation reference, VOC as palette indices under VOCdevkit/VOC2012, the
Hugging Face export in ``datasets.load_dataset``; COCO polygons rasterize to the very masks."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import datasets
import numpy as np
import pytest
from helpers import CLASSES, disc, write_dataset
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from freemask.cli import main
from freemask.errors import ExportError
from freemask.export import export_dataset, mask_polygons, polygons_iou, voc_palette
from freemask.records import (
    IGNORE_INDEX,
    IGNORE_INDEX_16,
    Instance,
    Sample,
    read_manifest,
    write_manifest,
)
from freemask.storage import LocalStorage, encode_image, read_image

REPO = Path(__file__).resolve().parents[1]
DEMO_CLASSES = ["ball", "box", "ring", "cone", "cross"]  # configs/demo.yaml


def encoded(mask: np.ndarray) -> dict:
    return mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))


def torchvision_reference_masks(segmentations: list, height: int, width: int) -> np.ndarray:
    """torchvision's segmentation reference (references/segmentation/coco_utils.py,
    ``convert_coco_poly_to_mask``), in numpy: every ``segmentation`` goes to pycocotools'
    ``frPyObjects(segmentation, h, w)``, is decoded, and its parts are merged."""
    masks = []
    for polygons in segmentations:
        rles = mask_util.frPyObjects(polygons, height, width)
        mask = mask_util.decode(rles)
        if mask.ndim < 3:
            mask = mask[..., None]
        masks.append(mask.any(axis=2))
    return np.stack(masks) if masks else np.zeros((0, height, width), bool)


@pytest.fixture(scope="module")
def demo_dataset(tmp_path_factory) -> tuple[LocalStorage, list[Sample]]:
    """Rendered toy-world scenes of the demo's classes (rings have holes, objects occlude),
    marked as refine and the active filter leave a dataset: a one-pixel ignore rim around
    every object, and each scene's last object disputed (its pixels ignore)."""
    root = tmp_path_factory.mktemp("demo") / "scenes"
    argv = ["toyworld", "scenes", "-c", str(REPO / "configs/demo.yaml"), "--out", str(root)]
    assert main([*argv, "--count", "6", "--seed", "7"]) == 0
    storage = LocalStorage(root)
    marked = []
    for sample in read_manifest(storage):
        semantic = read_image(storage, sample.semantic_mask).copy()
        for instance in sample.instances:
            mask = instance.mask().astype(np.uint8)
            rim = cv2.dilate(mask, np.ones((3, 3), np.uint8)).astype(bool) & ~mask.astype(bool)
            semantic[rim] = IGNORE_INDEX
        last = sample.instances[-1].model_copy(update={"disputed": True})
        semantic[last.mask()] = IGNORE_INDEX
        storage.write_bytes(sample.semantic_mask, encode_image(semantic, sample.semantic_mask))
        marked.append(
            sample.model_copy(
                update={"instances": [*sample.instances[:-1], last], "truth_mask": None}
            )
        )
    write_manifest(storage, marked)
    return storage, marked


# 1. COCO polygons: exact under pycocotools.


def test_polygons_rasterize_back_to_the_mask_with_holes_and_parts() -> None:
    rng = np.random.default_rng(0)
    ring = disc((40, 40), (20, 20), 15) & ~disc((40, 40), (20, 18), 6)
    two_parts = disc((30, 50), (15, 10), 6) | disc((30, 50), (15, 38), 8)
    masks = [ring, two_parts, np.ones((5, 7), bool), np.eye(9, dtype=bool)]
    masks += [rng.random(tuple(rng.integers(3, 40, 2))) < 0.5 for _ in range(100)]
    for mask in masks:
        polygons = mask_polygons(mask)
        assert all(len(polygon) >= 8 and len(polygon) % 2 == 0 for polygon in polygons)
        drawn = mask_util.decode(mask_util.merge(mask_util.frPyObjects(polygons, *mask.shape)))
        np.testing.assert_array_equal(drawn.astype(bool), mask)
        assert polygons_iou(polygons, encoded(mask)) == 1.0
    assert len(mask_polygons(ring)) == 1 and len(mask_polygons(two_parts)) == 2
    assert mask_polygons(np.zeros((4, 4), bool)) == []


# 2. COCO: pycocotools, torchvision's reference loader, ignore regions as crowd annotations.


def test_coco_export_of_the_demo_loads_in_pycocotools_and_the_torchvision_path(
    demo_dataset, tmp_path: Path
) -> None:
    storage, samples = demo_dataset
    counts = export_dataset(storage, LocalStorage(tmp_path / "coco"), DEMO_CLASSES, "coco")
    assert counts["polygon_min_iou"] == 1.0 and counts["rle_objects"] == 0
    assert counts["ignore_unattributed"] == 0
    coco = COCO(str(tmp_path / "coco" / "annotations" / "instances.json"))
    for image_id, sample in enumerate(samples, start=1):
        height, width = sample.height, sample.width
        semantic = read_image(storage, sample.semantic_mask)
        ignored = semantic == IGNORE_INDEX
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=None))
        objects = [a for a in annotations if not a["iscrowd"]]
        crowds = [a for a in annotations if a["iscrowd"]]
        # Every annotation decodes with annToMask; objects are the records' undisputed ones.
        assert [coco.loadCats(a["category_id"])[0]["name"] for a in objects] == [
            i.class_name for i in sample.instances[:-1]
        ]
        for annotation, instance in zip(objects, sample.instances, strict=False):
            assert isinstance(annotation["segmentation"], list)
            np.testing.assert_array_equal(coco.annToMask(annotation).astype(bool), instance.mask())
        crowd_union = np.zeros((height, width), bool)
        for annotation in crowds:
            segmentation = annotation["segmentation"]
            assert segmentation["size"] == [height, width]
            assert all(isinstance(count, int) for count in segmentation["counts"])
            mask = coco.annToMask(annotation).astype(bool)
            assert not (crowd_union & mask).any() and annotation["area"] == mask.sum()
            crowd_union |= mask
        np.testing.assert_array_equal(crowd_union, ignored)  # the ignore band, whole
        # The disputed object is a crowd region of its own class.
        disputed = sample.instances[-1]
        assert any(
            np.array_equal(coco.annToMask(a).astype(bool), disputed.mask())
            and coco.loadCats(a["category_id"])[0]["name"] == disputed.class_name
            for a in crowds
        )
        # An ignore pixel goes to the class of the nearest object pixel (to a pixel: the
        # export measures distance on a 5x5 mask).
        seeds = np.zeros((height, width), np.int32)
        for instance in sample.instances:
            seeds[instance.mask()] = instance.class_id
        distance = {
            c: cv2.distanceTransform((seeds != c).astype(np.uint8), cv2.DIST_L2, 0)
            for c in np.unique(seeds[seeds > 0]).tolist()
        }
        nearest = np.min(list(distance.values()), axis=0)
        rim = ignored & ~disputed.mask()
        for annotation in crowds:
            mask = coco.annToMask(annotation).astype(bool) & rim
            assert (distance[annotation["category_id"]][mask] <= nearest[mask] + 1.0).all()

        # torchvision's reference: frPyObjects on each segmentation, as the loader calls it.
        masks = torchvision_reference_masks([a["segmentation"] for a in annotations], height, width)
        for annotation, mask in zip(annotations, masks, strict=True):
            np.testing.assert_array_equal(mask, coco.annToMask(annotation).astype(bool))
        categories = np.array([a["category_id"] for a in annotations])
        target = (masks * categories[:, None, None]).max(axis=0)
        target[masks.sum(axis=0) > 1] = 255
        np.testing.assert_array_equal(target[~ignored], semantic[~ignored])


# 3. VOC: the VOC2012 layout, palette indices.


def test_voc_export_of_the_demo_is_a_voc2012_folder_of_palette_indices(
    demo_dataset, tmp_path: Path
) -> None:
    storage, samples = demo_dataset
    export_dataset(storage, LocalStorage(tmp_path / "voc"), DEMO_CLASSES, "voc", val_fraction=0.5)
    root = tmp_path / "voc" / "VOCdevkit" / "VOC2012"
    sets = root / "ImageSets" / "Segmentation"
    listed = {name: (sets / f"{name}.txt").read_text().split() for name in ("train", "val")}
    assert listed["train"] and listed["val"]
    assert sorted((sets / "trainval.txt").read_text().split()) == sorted(s.id for s in samples)
    assert (root / "labels.txt").read_text().splitlines() == ["background", *DEMO_CLASSES]
    for sample in samples:
        with Image.open(root / "SegmentationClass" / f"{sample.id}.png") as png:
            assert png.mode == "P" and png.getpalette()[: 3 * 256] == voc_palette()
            np.testing.assert_array_equal(
                np.asarray(png), read_image(storage, sample.semantic_mask)
            )
        with Image.open(root / "SegmentationObject" / f"{sample.id}.png") as png:
            objects = np.asarray(png)
        for number, instance in enumerate(sample.instances[:-1], start=1):
            visible = instance.mask() & (objects != IGNORE_INDEX)
            assert (objects[visible] == number).all()
        with Image.open(root / "JPEGImages" / f"{sample.id}.jpg") as jpeg:
            assert jpeg.format == "JPEG" and jpeg.size == (sample.width, sample.height)


# 4. Hugging Face datasets: features restored from the Parquet schema and the card.


def test_hf_export_of_the_demo_loads_with_its_features(demo_dataset, tmp_path: Path) -> None:
    storage, samples = demo_dataset
    target = tmp_path / "hf"
    counts = export_dataset(storage, LocalStorage(target), DEMO_CLASSES, "hf", val_fraction=0.5)
    assert counts["train"] + counts["validation"] == len(samples) and counts["validation"]
    assert (target / "README.md").read_text().startswith("---\ndataset_info:")
    by_id = {sample.id: sample for sample in samples}
    cache = tmp_path / "cache"
    loaded = datasets.load_dataset(str(target), cache_dir=str(cache))
    plain = datasets.load_dataset("parquet", data_dir=str(target / "data"), cache_dir=str(cache))
    assert set(loaded) == set(plain) == {"train", "validation"}
    for split in loaded.values():
        features = split.features
        assert features["image"] == datasets.Image() == features["semantic_mask"]
        category = features["objects"].feature["category"]
        assert category.names == ["background", *DEMO_CLASSES]
        for row in split:
            sample = by_id[row["id"]]
            image = np.asarray(row["image"].convert("RGB"))
            np.testing.assert_array_equal(image, read_image(storage, sample.image, mode="RGB"))
            semantic = np.asarray(row["semantic_mask"])
            np.testing.assert_array_equal(semantic, read_image(storage, sample.semantic_mask))
            assert [category.int2str(o["category"]) for o in row["objects"]] == [
                i.class_name for i in sample.instances
            ]
            for obj, instance in zip(row["objects"], sample.instances, strict=True):
                rle = {"size": obj["rle"]["size"], "counts": obj["rle"]["counts"].encode()}
                np.testing.assert_array_equal(mask_util.decode(rle).astype(bool), instance.mask())
                assert obj["bbox"] == list(instance.bbox) and obj["disputed"] == instance.disputed
    for split in plain:
        assert plain[split].features == loaded[split].features


def test_hf_export_keeps_16_bit_masks_past_254_classes(tmp_path: Path) -> None:
    classes = [f"thing{index}" for index in range(1, 301)]
    storage = LocalStorage(tmp_path / "data")
    semantic = np.zeros((24, 32), np.uint16)
    mask = disc((24, 32), (12, 16), 6)
    semantic[mask] = 300
    semantic[0, :] = IGNORE_INDEX_16
    sample = Sample(
        id="big",
        image="images/big.png",
        semantic_mask="masks/big.png",
        width=32,
        height=24,
        instances=[Instance.from_mask("thing300", 300, mask)],
    )
    storage.write_bytes(sample.image, encode_image(np.zeros((24, 32, 3), np.uint8), "x.png"))
    storage.write_bytes(sample.semantic_mask, encode_image(semantic, "x.png"))
    write_manifest(storage, [sample])
    storage.write_bytes("_SUCCESS", b"{}\n")
    export_dataset(storage, LocalStorage(tmp_path / "hf"), classes, "hf", val_fraction=0.0)
    loaded = datasets.load_dataset(str(tmp_path / "hf"), cache_dir=str(tmp_path / "cache"))
    row = loaded["train"][0]
    np.testing.assert_array_equal(np.asarray(row["semantic_mask"]), semantic)
    assert loaded["train"].features["objects"].feature["category"].int2str(300) == "thing300"
    assert "65535 for pixels to ignore" in (tmp_path / "hf" / "README.md").read_text()


def test_every_format_replaces_an_earlier_export_and_the_old_voc_layout(tmp_path: Path) -> None:
    source = LocalStorage(tmp_path / "data")
    write_dataset(source, 3)
    old_voc = tmp_path / "voc"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (old_voc / folder).mkdir(parents=True)
    (old_voc / "labels.txt").write_text("background\n")
    export_dataset(source, LocalStorage(old_voc), CLASSES, "voc")
    assert sorted(path.name for path in old_voc.iterdir()) == ["VOCdevkit"]
    for fmt in ("coco", "hf"):
        export_dataset(source, LocalStorage(tmp_path / fmt), CLASSES, fmt)
        export_dataset(source, LocalStorage(tmp_path / fmt), CLASSES, fmt)
    assert sorted(path.name for path in (tmp_path / "hf").iterdir()) == ["README.md", "data"]
    shutil.rmtree(tmp_path / "hf" / "data")
    (tmp_path / "hf" / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="no part of a hf export"):
        export_dataset(source, LocalStorage(tmp_path / "hf"), CLASSES, "hf")


def test_the_export_command_writes_the_hf_format_titled_by_the_run(tmp_path: Path) -> None:
    source = LocalStorage(tmp_path / "data")
    write_dataset(source, 3)
    config = tmp_path / "run.yaml"
    config.write_text(f"name: shapes-v2\nworkdir: {tmp_path / 'work'}\nclasses: {CLASSES}\n")
    argv = ["export", "-c", str(config), "--in", source.uri, "--out", str(tmp_path / "hf")]
    assert main([*argv, "--format", "hf", "--val-fraction", "0"]) == 0
    assert "\n# shapes-v2\n" in (tmp_path / "hf" / "README.md").read_text()
    assert [p.name for p in (tmp_path / "hf" / "data").iterdir()] == [
        "train-00000-of-00001.parquet"
    ]
