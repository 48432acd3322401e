"""Runs of more than 254 classes: 16-bit label maps (65535 = ignore) through every stage.

A run of up to 254 classes keeps 8-bit masks with 255 = ignore; past that, every label map a
stage makes or reads is 16-bit, ignore stays distinct from every class id, and the exports
carry class ids past 255 (COCO category ids, VOC 16-bit SegmentationClass PNGs).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import disc
from PIL import Image
from pycocotools.coco import COCO

from freemask.active import relabel_mask
from freemask.active.disputed import ignore_classes
from freemask.active.filter import iou_vs_pseudo_label, sample_classes
from freemask.active.report import overlay
from freemask.compose import Cutout, Scene, cut_out
from freemask.config import GenerateConfig, RunConfig, SegmentConfig
from freemask.errors import ConfigError, ExportError, StorageError
from freemask.export import VOC_ROOT, export_dataset
from freemask.generate.init_images import InitImages
from freemask.generate.masks import ObjectMask
from freemask.generate.prompts import Prompt
from freemask.generate.stage import PlannedSample, to_record
from freemask.local.report import stage_sheet_png
from freemask.quality import LabelQuality, class_ious, own_object
from freemask.records import (
    IGNORE_INDEX,
    IGNORE_INDEX_16,
    Instance,
    Sample,
    StageStamp,
    ignore_index,
    ignore_value,
    label_dtype,
    read_manifest,
    write_manifest,
)
from freemask.refine.stage import refine_labels
from freemask.segment.augment import Augmentation, augment_example
from freemask.segment.evaluate import confusion, iou_counts, iou_from_counts
from freemask.segment.model import TINY_MASK2FORMER_ID, load_segmenter, predict
from freemask.segment.train import targets
from freemask.storage import LocalStorage, encode_image, read_image

LVIS_SIZE = 1203
CLASSES = [f"thing{index:04d}" for index in range(1, LVIS_SIZE + 1)]
IGNORE = IGNORE_INDEX_16


# 1. The encoding: dtype and ignore value by class count, 16-bit PNGs that read back as such.


def test_label_maps_turn_16_bit_past_254_classes_and_stop_at_65534() -> None:
    assert (label_dtype(254), ignore_index(254)) == (np.uint8, 255)
    assert (label_dtype(255), ignore_index(255)) == (np.uint16, 65535)
    assert (label_dtype(65534), ignore_index(65534)) == (np.uint16, 65535)
    with pytest.raises(ConfigError, match="at most 65534 classes"):
        label_dtype(65535)
    assert ignore_value(np.zeros(2, np.uint8)) == IGNORE_INDEX
    assert ignore_value(np.zeros(2, np.uint16)) == IGNORE_INDEX_16


def test_an_instance_may_name_class_65534_but_not_the_ignore_value() -> None:
    mask = disc((8, 8), (4, 4), 2)
    assert Instance.from_mask("last", 65534, mask).class_id == 65534
    with pytest.raises(ValueError, match="class_id"):
        Instance.from_mask("ignore", 65535, mask)


def test_a_16_bit_label_map_round_trips_through_png(tmp_path: Path) -> None:
    labels = np.array([[0, 1, 255, 256], [1000, 1203, 65534, IGNORE]], np.uint16)
    storage = LocalStorage(tmp_path)
    storage.write_bytes("mask.png", encode_image(labels, "mask.png"))
    with Image.open(tmp_path / "mask.png") as png:
        assert png.mode == "I;16"
    back = read_image(storage, "mask.png")
    assert back.dtype == np.uint16 and np.array_equal(back, labels)
    with pytest.raises(StorageError, match="16-bit greyscale PNG only"):
        encode_image(labels, "mask.jpg")
    with pytest.raises(StorageError, match="16-bit greyscale PNG only"):
        encode_image(labels, "mask.png", palette=[0] * 768)


# 2. The stages' label maps.


def test_generate_writes_the_class_id_and_65535_in_a_16_bit_mask() -> None:
    label = np.zeros((6, 6), np.uint8)
    label[2:4, 2:4] = 1
    label[1, :] = IGNORE_INDEX
    mask = ObjectMask(soft=np.zeros((6, 6), np.float16), label=label, scores={})
    item = PlannedSample("thing1000-x", "thing1000", 1000, 0, 7, Prompt("a thing1000", "thing1000"))
    stamp = StageStamp(stage="generate", version="1")
    sample, files = to_record(
        item, np.zeros((6, 6, 3), np.uint8), mask, GenerateConfig(), stamp, None, np.uint16
    )
    written = np.asarray(Image.open(io.BytesIO(files[sample.semantic_mask])))
    assert written.dtype == np.uint16
    assert set(np.unique(written)) == {0, 1000, IGNORE}
    assert (written[2:4, 2:4] == 1000).all() and (written[1] == IGNORE).all()
    assert sample.instances[0].class_id == 1000


def test_an_init_images_truth_keeps_its_ignore_in_the_runs_16_bit_labels(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    source = np.zeros((8, 8), np.uint16)
    source[2:6, 2:6] = 700
    source[0] = IGNORE
    sample = Sample(
        id="init-0",
        image="images/init-0.png",
        semantic_mask="masks/init-0.png",
        width=8,
        height=8,
        instances=[Instance.from_mask("thing0700", 700, source == 700)],
    )
    storage.write_bytes(sample.semantic_mask, encode_image(source, sample.semantic_mask))
    init = InitImages(storage, {"thing0700": [sample]}, label_dtype(LVIS_SIZE))
    truth = init.truth("thing0700", 0, 1100, (8, 8))
    assert truth.dtype == np.uint16
    assert (truth[2:6, 2:6] == 1100).all() and (truth[0] == IGNORE).all()


def test_compose_occludes_class_1000_over_class_300_and_ignores_with_65535() -> None:
    scene = Scene(np.zeros((30, 30, 3), np.uint8), labels=label_dtype(LVIS_SIZE))
    square = np.ones((10, 10), np.uint8)
    opaque = Cutout(
        np.full((10, 10, 3), 200, np.uint8), np.ones((10, 10), np.float32), square, square > 0
    )
    scene.paste(opaque, (2, 2, 10, 10), False, "thing0300", 300)  # hidden but for a sliver
    scene.paste(opaque, (3, 2, 20, 20), False, "thing1000", 1000)
    scene.paste(opaque, (24, 24, 5, 5), False, "thing1203", 1203)
    _, semantic, (hidden, top, corner) = scene.finish(min_visible_fraction=0.3)
    assert semantic.dtype == np.uint16
    assert not hidden.kept and top.kept and corner.kept
    assert (semantic[2:12, 2] == IGNORE).all()  # the dropped object's sliver: ignore, not 255
    assert (semantic[top.mask] == 1000).all() and (semantic[corner.mask] == 1203).all()
    assert set(np.unique(semantic)) == {0, 1000, 1203, IGNORE}
    truth = scene.truth()
    assert truth.dtype == np.uint16 and (truth[top.mask] == 1000).all()
    assert (truth[2:12, 2] == 300).all()  # the truth shows what is there


def test_compose_cuts_out_a_16_bit_object_with_its_65535_band() -> None:
    label = np.zeros((12, 12), np.uint16)
    label[3:9, 3:9] = 900
    label[2, 3:9] = IGNORE
    soft = np.where(label == 900, 1.0, np.where(label == IGNORE, 0.5, 0.0)).astype(np.float32)
    cutout = cut_out(np.zeros((12, 12, 3), np.uint8), label, soft, (0.35, 0.6))
    assert cutout.label.shape == (7, 6)
    assert (cutout.label[0] == IGNORE_INDEX).all() and (cutout.label[1:] == 1).all()


def test_refine_labels_in_the_runs_16_bit_dtype() -> None:
    refined = np.zeros((1, 6, 6), np.float32)
    refined[0, 1:5, 1:5] = 1.0
    refined[0, 0, :] = 0.5  # unsure
    semantic = np.zeros((6, 6), np.uint16)
    semantic[5, :] = IGNORE  # an earlier ignore with no soft mask left under it
    sample = Sample(
        id="s",
        image="i.png",
        width=6,
        height=6,
        instances=[Instance.from_mask("thing1203", 1203, refined[0] > 0.6)],
    )
    labels, instances, kept = refine_labels(
        refined, sample, semantic, refined, (0.35, 0.6), np.uint16
    )
    assert labels.dtype == np.uint16 and kept == [0]
    assert (labels[1:5, 1:5] == 1203).all()
    assert (labels[0] == IGNORE).all() and (labels[5] == IGNORE).all()
    assert instances[0].class_id == 1203


def test_the_filter_leaves_65535_out_and_relabel_and_disputes_keep_it() -> None:
    generated = np.array([[1000, 1000, IGNORE, 0, 300]], np.uint16)
    prediction = np.array([[1000, 7, 1000, 1000, 300]], np.uint16)
    sample = Sample(id="s", image="i.png", width=5, height=1)
    assert sample_classes(sample, generated) == [300, 1000]
    # The ignore pixel is left out: 1000 agrees on 1 of the 3 labelled-or-predicted pixels.
    scores = iou_vs_pseudo_label(generated, prediction, [300, 1000])
    assert scores == {300: 1.0, 1000: pytest.approx(1 / 3)}
    relabelled = relabel_mask(generated, prediction, [1000])
    assert relabelled.dtype == np.uint16
    assert relabelled.tolist() == [[1000, 0, IGNORE, 1000, 0]]
    disputed = ignore_classes(generated, [300])
    assert disputed.dtype == np.uint16 and disputed.tolist() == [[1000, 1000, IGNORE, 0, IGNORE]]


def test_segmenter_targets_evaluation_and_padding_leave_65535_out() -> None:
    truth = np.array([[0, 1000, 1000, IGNORE]], np.uint16)
    prediction = np.array([[0, 1000, 3, 1000]], np.uint16)
    matrix = confusion(prediction, truth, LVIS_SIZE + 1)
    assert matrix.sum() == 3 and matrix[1000, 1000] == 1 and matrix[1000, 3] == 1
    counts = iou_counts(prediction, truth, 65535)  # linear in the labels, even at the most
    assert counts.shape == (3, 65535)
    assert iou_from_counts(counts, [str(k) for k in range(65535)]) == {
        "0": 1.0,
        "3": 0.0,
        "1000": 0.5,
    }
    masks, labels = targets(truth)
    assert labels.tolist() == [0, 1000] and masks.shape == (2, 1, 4)
    semantic = np.full((8, 8), 1100, np.uint16)
    rng = np.random.default_rng(0)
    _, padded = augment_example(
        np.zeros((8, 8, 3), np.uint8), semantic, 16, rng, Augmentation(scale=(0.5, 0.5))
    )
    assert padded.dtype == np.uint16 and set(np.unique(padded)) == {1100, IGNORE}


def test_predictions_are_16_bit_when_the_run_labels_pass_254() -> None:
    settings = SegmentConfig(model_id=TINY_MASK2FORMER_ID, image_size=64)
    segmenter = load_segmenter(settings, ["thing0001", "thing0002"], trainable=False)
    image = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    (labels,) = predict(segmenter, [image])
    assert labels.dtype == np.uint8
    # A checkpoint whose labels map onto classes 300 and 1203 of the run (pseudo-labels).
    segmenter.to_run_label = np.array([0, 300, 1203])
    (labels,) = predict(segmenter, [image])
    assert labels.dtype == np.uint16 and labels.shape == (40, 48)
    assert set(np.unique(labels)) <= {0, 300, 1203}


def test_label_quality_counts_class_1000_and_65535_as_a_miss() -> None:
    truth = np.zeros((4, 4), np.uint16)
    truth[:2] = 1000
    label = truth.copy()
    label[0] = IGNORE  # half the object's pixels ignored
    quality = LabelQuality(CLASSES)
    quality.add(label, truth)
    summary = quality.summary()["per_class"]["thing1000"]
    assert summary["iou"] == pytest.approx(0.5) and summary["precision"] == 1.0
    assert summary["ignore_share"] == pytest.approx(0.5)
    assert class_ious(label, truth, [1000]) == {1000: pytest.approx(0.5)}
    truth[2] = IGNORE  # touching the object: were it an object, it would join it
    assert own_object(truth, label).sum() == 8


def test_overlays_colour_class_ids_past_the_palette(tmp_path: Path) -> None:
    labels = np.array([[0, 1, 255, 1203, IGNORE]], np.uint16)
    image = np.zeros((1, 5, 3), np.uint8)
    shown = overlay(image, labels)
    assert (shown[0, 0] == 0).all() and (shown[0, 4] == 127).all()  # ignore: half white
    assert (shown[0, 2] == shown[0, 1]).all()  # class 255 takes class 1's colour
    storage = LocalStorage(tmp_path)
    sample = _two_object_sample(storage, (300, 1203))
    sheet = Image.open(io.BytesIO(stage_sheet_png(storage, [sample])))
    assert sheet.mode == "RGB"


# 3. Exports of a 16-bit dataset.


def test_exports_of_a_16_bit_dataset_keep_ids_past_255(tmp_path: Path) -> None:
    source = LocalStorage(tmp_path / "data")
    samples = [_two_object_sample(source, ids) for ids in ((1, 300), (256, 1203))]
    write_manifest(source, samples)
    source.write_bytes("_SUCCESS", b"{}\n")
    export_dataset(source, LocalStorage(tmp_path / "coco"), CLASSES, "coco")
    coco = COCO(str(tmp_path / "coco" / "annotations" / "instances.json"))
    assert len(coco.getCatIds()) == LVIS_SIZE
    used = sorted(a["category_id"] for a in coco.loadAnns(coco.getAnnIds(iscrowd=False)))
    assert used == [1, 256, 300, 1203]
    assert coco.loadCats(1203)[0]["name"] == "thing1203"

    export_dataset(source, LocalStorage(tmp_path / "voc"), CLASSES, "voc")
    for sample in samples:
        with Image.open(
            tmp_path / "voc" / VOC_ROOT / "SegmentationClass" / f"{sample.id}.png"
        ) as png:
            assert png.mode == "I;16"
            semantic = np.asarray(png)
        assert np.array_equal(semantic, read_image(source, sample.semantic_mask))
        with Image.open(
            tmp_path / "voc" / VOC_ROOT / "SegmentationObject" / f"{sample.id}.png"
        ) as png:
            assert png.mode == "P"
            objects = np.asarray(png)
        assert set(np.unique(objects)) == {0, 1, 2, IGNORE_INDEX}
        assert (objects[semantic == IGNORE] == IGNORE_INDEX).all()


def test_a_16_bit_mask_naming_a_class_beyond_the_run_is_refused_by_the_export(
    tmp_path: Path,
) -> None:
    source = LocalStorage(tmp_path / "data")
    sample = _two_object_sample(source, (1, 299))
    semantic = read_image(source, sample.semantic_mask).copy()
    semantic[semantic == 299] = 300  # the record names class 299, its mask class 300
    source.write_bytes(sample.semantic_mask, encode_image(semantic, sample.semantic_mask))
    write_manifest(source, [sample])
    source.write_bytes("_SUCCESS", b"{}\n")
    with pytest.raises(ExportError, match="class index 300, but only 299 classes"):
        export_dataset(source, LocalStorage(tmp_path / "voc"), CLASSES[:299], "voc")


def test_an_8_bit_mask_exports_to_16_bit_voc_with_its_ignore_mapped(tmp_path: Path) -> None:
    source = LocalStorage(tmp_path / "data")
    sample = _two_object_sample(source, (1, 200), dtype=np.uint8)
    write_manifest(source, [sample])
    source.write_bytes("_SUCCESS", b"{}\n")
    export_dataset(source, LocalStorage(tmp_path / "voc"), CLASSES, "voc")
    with Image.open(tmp_path / "voc" / VOC_ROOT / "SegmentationClass" / f"{sample.id}.png") as png:
        semantic = np.asarray(png)
    assert semantic.dtype == np.uint16 and set(np.unique(semantic)) == {0, 1, 200, IGNORE}


# 4. The whole path on LVIS's class count: generate, relate, compose, export.


@pytest.mark.slow
def test_a_run_of_1203_classes_generates_composes_and_exports(tmp_path: Path) -> None:
    from freemask.compose import run_backgrounds, run_compose
    from freemask.generate import run_generate
    from freemask.models import TINY_SD_ID, build_tiny_sd
    from freemask.relate import run_relate

    work = tmp_path / "work"
    config = _lvis_config(tmp_path, TINY_SD_ID)
    # Generate draws every class once (the tiny model: one step, large batches).
    run_generate(config, None, str(work / "generate"), pipe=build_tiny_sd(seed=0))
    generated = LocalStorage(work / "generate")
    objects = read_manifest(generated)
    assert len(objects) == LVIS_SIZE
    last = next(s for s in objects if s.instances[0].class_name == "thing1203")
    label = read_image(generated, last.semantic_mask)
    assert label.dtype == np.uint16 and set(np.unique(label)) <= {0, 1203, IGNORE}
    run_relate(config, None, str(work / "relate"))
    run_backgrounds(config, str(work / "relate"), str(work / "backgrounds"))
    run_compose(config, str(work / "generate"), str(work / "compose"))
    composed = LocalStorage(work / "compose")
    scenes = read_manifest(composed)
    assert scenes
    ids = {i.class_id for s in scenes for i in s.instances}
    assert max(ids) > 255

    export_dataset(composed, LocalStorage(tmp_path / "coco"), CLASSES, "coco")
    coco = COCO(str(tmp_path / "coco" / "annotations" / "instances.json"))
    assert len(coco.getCatIds()) == LVIS_SIZE
    assert {a["category_id"] for a in coco.loadAnns(coco.getAnnIds())} == ids
    export_dataset(composed, LocalStorage(tmp_path / "voc"), CLASSES, "voc")
    values: set[int] = set()
    for scene in scenes:
        with Image.open(
            tmp_path / "voc" / VOC_ROOT / "SegmentationClass" / f"{scene.id}.png"
        ) as png:
            semantic = np.asarray(png)
        assert semantic.dtype == np.uint16
        assert np.array_equal(semantic, read_image(composed, scene.semantic_mask))
        values |= {int(v) for v in np.unique(semantic)}
    assert IGNORE in values and max(values - {IGNORE}) > 255
    assert values - {0, IGNORE} <= ids


def _two_object_sample(
    storage: LocalStorage, class_ids: tuple[int, int], dtype=np.uint16
) -> Sample:
    """A 24x32 sample of two discs of ``class_ids`` with an ignore row, written to ``storage``."""
    shape = (24, 32)
    first, second = disc(shape, (12, 9), 6), disc(shape, (12, 23), 6)
    semantic = np.zeros(shape, dtype)
    semantic[first], semantic[second] = class_ids
    semantic[0, :] = ignore_value(semantic)
    identifier = f"scene-{class_ids[0]}-{class_ids[1]}"
    sample = Sample(
        id=identifier,
        image=f"images/{identifier}.png",
        semantic_mask=f"masks/{identifier}.png",
        width=shape[1],
        height=shape[0],
        instances=[
            Instance.from_mask(CLASSES[class_id - 1], class_id, mask)
            for class_id, mask in zip(class_ids, (first, second), strict=True)
        ],
    )
    image = np.random.default_rng(class_ids).integers(0, 256, (*shape, 3), dtype=np.uint8)
    storage.write_bytes(sample.image, encode_image(image, sample.image))
    storage.write_bytes(sample.semantic_mask, encode_image(semantic, sample.semantic_mask))
    return sample


def _lvis_config(tmp_path: Path, model_id: str) -> RunConfig:
    """A run of 1,203 classes, all in one scene of a thesaurus written for them, and a folder
    of backgrounds of that scene."""
    thesaurus = {
        "version": 1,
        "scenes": {"field": {}},
        "classes": {
            name: {"scenes": {"field": 1}, "size": 0.3, "support": "ground"} for name in CLASSES
        },
    }
    (tmp_path / "thesaurus.yaml").write_text(yaml.safe_dump(thesaurus))
    backgrounds = LocalStorage(tmp_path / "backgrounds" / "field")
    for index in range(2):
        image = np.random.default_rng(index).integers(0, 256, (96, 128, 3), dtype=np.uint8)
        backgrounds.write_bytes(f"bg{index}.png", encode_image(image, f"bg{index}.png"))
    return RunConfig.model_validate(
        {
            "name": "lvis-size",
            "workdir": str(tmp_path / "work"),
            "classes": CLASSES,
            "generate": {
                "model_id": model_id,
                "images_per_class": 1,
                "batch_size": 64,
                "height": 64,
                "width": 64,
                "num_inference_steps": 1,
                # Random weights: every mask would be implausible (see tests/generate).
                "reject_implausible": False,
            },
            "relate": {"thesaurus": str(tmp_path / "thesaurus.yaml")},
            "compose": {
                "images": 4,
                "objects_per_image": [2, 3],
                "backgrounds": str(tmp_path / "backgrounds"),
            },
        }
    )
