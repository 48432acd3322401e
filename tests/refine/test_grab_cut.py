"""GrabCut completion: a mask seeded on part of an object grows over the whole object."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from test_refine_stage import config_for, write_set

from freemask.evaluation import degrade_mask
from freemask.quality import stage_quality
from freemask.records import read_manifest
from freemask.refine import GrabCutRefiner, GuidedFilterRefiner, refine_soft, run_refine
from freemask.storage import LocalStorage, read_image
from freemask.toyworld.render import random_scene

THRESHOLDS = (0.35, 0.6)
SOLID = ((0, "ball"), (1, "box"), (3, "cone"))  # scene seeds 40, 41 and 43


def iou(first: np.ndarray, second: np.ndarray) -> float:
    return float((first & second).sum() / max((first | second).sum(), 1))


def highlight_only(mask: np.ndarray, seed: int) -> np.ndarray:
    """A soft mask as attention gives a bright object: sure on one corner of it (its
    highlight), unsure over the rest (coarse and blurred, as attention is)."""
    rows, columns = np.nonzero(mask)
    soft = degrade_mask(mask, np.random.default_rng(seed)) * 0.55
    corner = (rows < np.percentile(rows, 40)) & (columns < np.percentile(columns, 40))
    soft[rows[corner], columns[corner]] = 0.9
    return cv2.GaussianBlur(soft.astype(np.float32), (0, 0), 1.0)


@pytest.fixture(scope="module")
def objects() -> list[tuple[np.ndarray, np.ndarray]]:
    """Rendered solid toy objects (image, exact mask)."""
    scenes = [random_scene(40 + index, 128, (1, 1), (name,)) for index, name in SOLID]
    return [(scene.image, scene.instances[0][1]) for scene in scenes]


def test_a_highlight_only_mask_grows_to_the_whole_object(objects) -> None:
    grabcut = GrabCutRefiner(THRESHOLDS[1], 0.05)
    options = {"thresholds": THRESHOLDS, "scope": "band", "min_seed_agreement": 0.9}
    for index, (image, mask) in enumerate(objects):
        soft = highlight_only(mask, index)[None]
        completed = grabcut.refine(image, soft)[1] > THRESHOLDS[1]
        filtered, _ = refine_soft(GuidedFilterRefiner(), image, soft, **options)
        assert iou(completed, mask) > 0.9
        assert iou(filtered[0] > THRESHOLDS[1], mask) < 0.5  # the filter cannot reach it


def test_sure_seeds_are_hard_constraints_and_the_cut_repeats(objects) -> None:
    grabcut = GrabCutRefiner(THRESHOLDS[1], 0.05)
    image, mask = objects[0]
    soft = highlight_only(mask, 0)[None]
    seeds = grabcut.seeds(soft, 0)
    cut = grabcut.cut(image, seeds.copy())
    assert cut[soft[0] > THRESHOLDS[1]].all() and not cut[soft[0] < 0.05].any()
    assert np.array_equal(cut, grabcut.cut(image, seeds.copy()))


def two_tone_ring() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, exact ring, attention): a ring on a blue ground whose right half is the ground's
    own blue and its left half yellow; the attention covers all of it, sure only on the left."""
    rows, columns = np.mgrid[:96, :96]
    radius = np.hypot(rows - 48, columns - 48)
    ring = (radius >= 18) & (radius <= 32)
    image = np.zeros((96, 96, 3), np.uint8)
    image[:] = (30, 60, 200)
    image[ring & (columns < 48)] = (240, 220, 40)
    image[ring & (columns >= 48)] = (40, 70, 190)
    soft = np.where(ring, np.where(columns < 48, 0.95, 0.55), 0.0).astype(np.float32)
    soft = cv2.GaussianBlur(soft, (0, 0), 2.0)
    return image, ring, soft


def test_the_attention_core_keeps_a_part_that_shares_the_background_colour() -> None:
    image, ring, soft = two_tone_ring()
    far_side = ring & (np.mgrid[:96, :96][1] >= 48)
    cut = GrabCutRefiner(0.6, 0.15).cut(image, GrabCutRefiner(0.6, 0.15).seeds(soft[None], 0))
    assert cut[far_side].mean() < 0.5  # by colour alone the blue half is background
    with_core = GrabCutRefiner(0.6, 0.15, core_erosion=0.03)
    cut = with_core.cut(image, with_core.seeds(soft[None], 0))
    assert cut[far_side].mean() > 0.9 and iou(cut, ring) > 0.85
    # The core is the attention's foreground shrunk by about one cell: never its blurred rim.
    core = with_core.core(soft)
    assert core.any() and not core[~ring].any()


def test_another_objects_sure_pixels_are_background() -> None:
    soft = np.zeros((2, 8, 8), np.float32)
    soft[0, :, :5] = 0.9
    soft[1, :, 3:] = 0.9  # overlaps instance 0 on columns 3-4
    seeds = GrabCutRefiner(0.6, 0.05).seeds(soft, 1)
    assert (seeds[:, :3] == cv2.GC_BGD).all() and (seeds[:, 3:] == cv2.GC_FGD).all()


def test_nothing_to_learn_from_leaves_the_mask_as_it_is() -> None:
    image = np.full((16, 16, 3), 128, np.uint8)
    grabcut = GrabCutRefiner(0.6, 0.05)
    empty = grabcut.refine(image, np.zeros((1, 16, 16), np.float32))
    assert (empty[1] < 0.35).all()
    full = grabcut.refine(image, np.ones((1, 16, 16), np.float32))
    assert (full[1] > 0.6).all()


def test_seeds_must_leave_room_for_the_cut() -> None:
    with pytest.raises(ValueError, match=r"background < 0\.5 < foreground"):
        GrabCutRefiner(0.4, 0.05)


def test_the_stage_refines_with_grabcut_and_keeps_the_contract(tmp_path) -> None:
    write_set(tmp_path / "in")
    config = config_for(tmp_path, method="grabcut")
    result = run_refine(config, str(tmp_path / "in"), str(tmp_path / "out"))
    assert result.written == 6
    storage = LocalStorage(tmp_path / "out")
    samples = read_manifest(storage)
    before = stage_quality(
        LocalStorage(tmp_path / "in"), read_manifest(LocalStorage(tmp_path / "in")), ["cat"]
    )
    after = stage_quality(storage, samples, ["cat"])
    assert after["miou"] > before["miou"]
    for sample in samples:
        label = read_image(storage, sample.semantic_mask)
        assert set(np.unique(label)) <= {0, 1, 255}
        assert np.array_equal(sample.instances[0].mask(), label == 1)
