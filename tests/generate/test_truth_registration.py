"""Registering a start image's label onto its redraw: the shift comes from the images' edges."""

from __future__ import annotations

import numpy as np
import pytest

from freemask.generate.truth_registration import redraw_shift, shifted
from freemask.records import IGNORE_INDEX


def textured_scene(seed: int = 0, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A mottled background with a two-tone disc and a bar on it; returns (image, label)."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 1, (size // 8, size // 8, 3))
    image = np.clip(
        110 + 25 * np.kron(noise, np.ones((8, 8, 1))) + rng.normal(0, 4, (size, size, 3)), 0, 255
    )
    rows, cols = np.mgrid[:size, :size]
    disc = (rows - 40) ** 2 + (cols - 50) ** 2 < 18**2
    image[disc] = (220, 60, 40)
    image[disc & (cols > 50)] = (240, 200, 60)
    bar = (rows > 60) & (rows < 66) & (cols > 20) & (cols < 80)
    image[bar] = (30, 40, 200)
    label = np.where(disc | bar, 3, 0).astype(np.uint8)
    return image.astype(np.uint8), label


def moved_image(image: np.ndarray, shift: tuple[int, int], seed: int) -> np.ndarray:
    """``image`` rolled by ``shift`` with fresh pixel noise, as a redraw that moved it."""
    noise = np.random.default_rng(seed).normal(0, 6, image.shape)
    return np.clip(np.roll(image, shift, axis=(0, 1)) + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shift", [(0, 0), (2, -1), (-3, 3), (1, 0)])
def test_the_shift_a_redraw_moved_its_object_by_is_found(shift: tuple[int, int]) -> None:
    start, label = textured_scene()
    drawn = moved_image(start, shift, seed=1)
    assert redraw_shift(start, drawn, label, reach=4) == shift
    assert np.array_equal(shifted(label, shift), np.roll(label, shift, axis=(0, 1)))


def test_a_shift_beyond_reach_is_not_invented() -> None:
    start, label = textured_scene()
    down, right = redraw_shift(start, moved_image(start, (6, 0), seed=2), label, reach=2)
    assert abs(down) <= 2 and abs(right) <= 2


def test_no_object_or_no_reach_keeps_the_label_in_place() -> None:
    start, label = textured_scene()
    drawn = moved_image(start, (2, 2), seed=3)
    assert redraw_shift(start, drawn, label, reach=0) == (0, 0)
    assert redraw_shift(start, drawn, np.zeros_like(label), reach=4) == (0, 0)
    ignore_only = np.full_like(label, IGNORE_INDEX)
    assert redraw_shift(start, drawn, ignore_only, reach=4) == (0, 0)


def test_flat_images_keep_the_label_in_place() -> None:
    flat = np.full((64, 64, 3), 128, np.uint8)
    label = np.zeros((64, 64), np.uint8)
    label[20:40, 20:40] = 1
    assert redraw_shift(flat, flat.copy(), label, reach=3) == (0, 0)


def test_moving_a_label_uncovers_background_and_keeps_its_ignore() -> None:
    label = np.zeros((6, 6), np.uint8)
    label[0, :] = IGNORE_INDEX
    label[2:4, 2:4] = 5
    moved = shifted(label, (1, -2))
    assert (moved[0] == 0).all(), "uncovered rows are background"
    assert (moved[1, :4] == IGNORE_INDEX).all() and (moved[1, 4:] == 0).all()
    assert (moved[3:5, 0:2] == 5).all() and (moved == 5).sum() == 4
