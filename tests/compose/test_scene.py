"""Pasting objects: exact pixel owners under occlusion, scale and flip, dropped instances."""

from __future__ import annotations

import numpy as np
import pytest

from freemask.compose import Cutout, CutoutError, Scene, cut_out
from freemask.records import IGNORE_INDEX


def solid(height: int, width: int, colour: tuple[int, int, int]) -> Cutout:
    """A fully opaque rectangle of one colour."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[:] = colour
    return Cutout(image, np.ones((height, width), np.float32), np.ones((height, width), np.uint8))


def test_later_objects_occlude_earlier_ones_exactly() -> None:
    scene = Scene(np.zeros((40, 40, 3), dtype=np.uint8))
    scene.paste(solid(10, 10, (255, 0, 0)), (5, 5, 20, 20), False, "cat", 1)
    scene.paste(solid(10, 10, (0, 255, 0)), (15, 15, 20, 20), False, "dog", 2)
    image, semantic, instances = scene.finish(min_visible_fraction=0.1)
    first, second = instances
    expected_first = np.zeros((40, 40), bool)
    expected_first[5:25, 5:25] = True
    expected_first[15:35, 15:35] = False
    expected_second = np.zeros((40, 40), bool)
    expected_second[15:35, 15:35] = True
    assert np.array_equal(first.mask, expected_first) and np.array_equal(
        second.mask, expected_second
    )
    assert (semantic[expected_first] == 1).all() and (semantic[expected_second] == 2).all()
    assert (semantic[~(expected_first | expected_second)] == 0).all()
    assert (image[20, 20] == (0, 255, 0)).all() and (image[6, 6] == (255, 0, 0)).all()
    assert first.visible_fraction == pytest.approx(300 / 400) and first.kept and second.kept


def test_mask_stays_aligned_after_scale_and_flip() -> None:
    # A 4x4 object whose left column is missing: after a 2x scale and a flip the gap is on the right.
    label = np.ones((4, 4), np.uint8)
    label[:, 0] = 0
    alpha = label.astype(np.float32)
    image = np.full((4, 4, 3), 200, np.uint8)
    cutout = Cutout(image, alpha, label)
    scene = Scene(np.zeros((20, 20, 3), dtype=np.uint8))
    scene.paste(cutout, (3, 5, 8, 8), True, "box", 1)
    _, semantic, (instance,) = scene.finish(0.1)
    expected = np.zeros((20, 20), bool)
    expected[5:13, 3:9] = True  # columns 3..8 covered, the flipped gap is columns 9..10
    assert np.array_equal(instance.mask, expected)
    assert np.array_equal(semantic == 1, expected)
    assert instance.mask.any(axis=0).nonzero()[0].max() == 8


def test_mostly_hidden_instance_is_dropped_and_its_pixels_ignored() -> None:
    scene = Scene(np.zeros((30, 30, 3), dtype=np.uint8))
    scene.paste(solid(10, 10, (255, 0, 0)), (5, 5, 10, 10), False, "cat", 1)
    scene.paste(solid(10, 10, (0, 0, 255)), (6, 5, 20, 20), False, "dog", 2)
    _, semantic, (hidden, top) = scene.finish(min_visible_fraction=0.3)
    assert not hidden.kept and hidden.visible_fraction == pytest.approx(0.1)
    assert top.kept
    assert (semantic[5:15, 5] == IGNORE_INDEX).all()  # the visible sliver of the dropped cat
    assert not (semantic == 1).any()


def test_uncertain_band_is_ignored_and_fades_alpha() -> None:
    image = np.full((10, 10, 3), 100, np.uint8)
    label = np.zeros((10, 10), np.uint8)
    label[3:7, 3:7] = 1
    label[2, 3:7] = IGNORE_INDEX
    soft = np.zeros((10, 10), np.float32)
    soft[3:7, 3:7] = 1.0
    soft[2, 3:7] = 0.5
    cutout = cut_out(image, label, soft, band=(0.3, 0.7))
    assert cutout.label.shape == (5, 4)  # the band row is part of the crop
    assert np.allclose(cutout.alpha[0], 0.5) and (cutout.label[0] == IGNORE_INDEX).all()
    scene = Scene(np.zeros((10, 10, 3), dtype=np.uint8))
    scene.paste(cutout, (0, 0, 4, 5), False, "cat", 1)
    _, semantic, _ = scene.finish(0.1)
    assert (semantic[0, :4] == IGNORE_INDEX).all() and (semantic[1:5, :4] == 1).all()


@pytest.mark.parametrize(
    ("label", "message"),
    [(np.zeros((8, 8), np.uint8), "empty object mask"), (np.ones((8, 8), np.uint8), "whole image")],
)
def test_uncuttable_masks_are_refused(label: np.ndarray, message: str) -> None:
    with pytest.raises(CutoutError, match=message):
        cut_out(np.zeros((8, 8, 3), np.uint8), label, None, (0.3, 0.7))


def test_box_leaving_the_image_is_refused() -> None:
    scene = Scene(np.zeros((10, 10, 3), dtype=np.uint8))
    with pytest.raises(CutoutError, match="leaves"):
        scene.paste(solid(4, 4, (1, 1, 1)), (8, 0, 5, 5), False, "cat", 1)


def test_a_wide_attention_band_is_cut_to_a_thin_halo() -> None:
    # A 10x10 certain object inside a band reaching to the image's edges (a coarse attention
    # map): only band pixels within band_width of the object may be pasted.
    image = np.full((100, 100, 3), 90, np.uint8)
    label = np.full((100, 100), IGNORE_INDEX, np.uint8)
    label[45:55, 45:55] = 1
    soft = np.full((100, 100), 0.5, np.float32)
    cutout = cut_out(image, label, soft, (0.35, 0.6), band_width=0.04)
    assert cutout.label.shape == (18, 18)  # 10 + 2 * 4 pixels
    assert (cutout.alpha > 0).sum() == 18 * 18
    wide = cut_out(image, label, soft, (0.35, 0.6), band_width=0.5)
    assert wide.label.shape == (100, 100)  # the old behaviour: the whole band is pasted


def test_truth_is_replayed_through_paste_flip_and_occlusion() -> None:
    # Object A's cutout holds its true pixels on the left half only (its right half is the
    # source's background, wrongly labelled); B, pasted over A's right part, shows background
    # where its own source showed background.
    image = np.full((10, 10, 3), 200, np.uint8)
    label = np.ones((10, 10), np.uint8)
    alpha = np.ones((10, 10), np.float32)
    truth_a = np.zeros((10, 10), bool)
    truth_a[:, :5] = True
    truth_b = np.zeros((10, 10), bool)
    truth_b[2:8, 2:8] = True
    scene = Scene(np.zeros((30, 30, 3), np.uint8))
    scene.paste(Cutout(image, alpha, label, truth_a), (0, 0, 20, 20), True, "cat", 1)
    scene.paste(Cutout(image, alpha, label, truth_b), (10, 0, 10, 10), False, "dog", 2)
    truth = scene.truth()
    expected = np.zeros((30, 30), np.uint8)
    expected[0:20, 10:20] = 1  # A flipped: its true half now on the right of its box
    expected[0:10, 10:20] = 0  # B covers the top of it ...
    expected[2:8, 12:18] = 2  # ... and shows its own object only where its source did
    assert np.array_equal(truth, expected)
    _, semantic, _ = scene.finish(0.0)
    assert (semantic[0:20, 0:10] == 1).all()  # the label claims A's left; the truth does not


def test_truth_that_names_another_class_keeps_it_in_the_composite() -> None:
    # A "dog" sample whose truth says its left half is a cat (class 1): the composite's truth
    # keeps the cat there, so the dog label on those pixels counts as a wrong class.
    image = np.full((10, 10, 3), 200, np.uint8)
    label = np.ones((10, 10), np.uint8)
    alpha = np.ones((10, 10), np.float32)
    truth = np.full((10, 10), 2, np.uint8)
    truth[:, :5] = 1
    truth[:2] = 0
    scene = Scene(np.zeros((20, 20, 3), np.uint8))
    scene.paste(Cutout(image, alpha, label, truth), (5, 5, 10, 10), False, "dog", 2)
    replayed = scene.truth()
    assert np.array_equal(replayed[5:15, 5:15], truth)
    assert (replayed[:5] == 0).all() and (replayed[:, :5] == 0).all()


def test_scene_truth_is_none_unless_every_object_has_truth() -> None:
    scene = Scene(np.zeros((20, 20, 3), np.uint8))
    scene.paste(solid(5, 5, (1, 2, 3)), (0, 0, 5, 5), False, "cat", 1)
    assert scene.truth() is None


def test_an_objects_whole_extent_is_pasted_with_the_part_its_label_misses_ignored() -> None:
    # A ring labelled as a crescent: its label holds the left half only.
    rows, cols = np.mgrid[:40, :40]
    ring = ((rows - 20) ** 2 + (cols - 20) ** 2 < 15**2) & (
        (rows - 20) ** 2 + (cols - 20) ** 2 > 6**2
    )
    label = np.where(ring & (cols < 20), 1, 0).astype(np.uint8)
    image = np.full((40, 40, 3), 30, np.uint8)
    image[ring] = (220, 40, 40)
    cropped = cut_out(image, label, None, (0.35, 0.6), truth=ring)
    whole = cut_out(image, label, None, (0.35, 0.6), truth=ring, extent=ring)
    assert cropped.label.shape == (29, 14) and whole.label.shape == (29, 29)
    assert (whole.alpha[whole.truth] == 1.0).all(), "every pixel of the object is pasted"
    assert (whole.label[whole.truth & (whole.label != 1)] == IGNORE_INDEX).all()
    assert (whole.label == 1).sum() == (cropped.label == 1).sum(), "no pixel gains a class"
    scene = Scene(np.zeros((40, 40, 3), np.uint8))
    scene.paste(whole, (5, 5, 29, 29), False, "ring", 3)
    _, semantic, (instance,) = scene.finish(0.0)
    truth = scene.truth()
    assert (truth == 3).sum() == ring.sum(), "the composite shows the whole ring"
    assert set(np.unique(semantic[truth == 3])) == {3, IGNORE_INDEX}
    assert instance.mask.sum() == (label == 1).sum(), "the instance is what the label claims"
