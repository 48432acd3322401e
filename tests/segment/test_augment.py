"""Training augmentation: flips, scale jitter with crop or pad, colour jitter, and its wiring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from freemask.config import SegmentConfig, load_config
from freemask.errors import ConfigError, FreemaskError
from freemask.records import IGNORE_INDEX, Sample
from freemask.segment import augment
from freemask.segment.augment import Augmentation, augment_example
from freemask.segment.train import augmentation_of, load_example
from freemask.storage import encode_image, open_storage

LABELS = (0, 3, 7)


def example(side: int, seed: int = 0, block: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A random RGB image and label map (values from LABELS), constant on ``block`` squares."""
    rng = np.random.default_rng(seed)
    cells = side // block
    image = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
    semantic = rng.choice(np.array(LABELS, dtype=np.uint8), size=(cells, cells))

    def grow(array: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(array, block, axis=0), block, axis=1)

    return grow(image), grow(semantic)


def run(image, semantic, size, seed, scale=(1.0, 1.0), colour=0.0):
    rng = np.random.default_rng(seed)
    return augment_example(image, semantic, size, rng, Augmentation(scale=scale, colour=colour))


def mirrors(array: np.ndarray) -> list[np.ndarray]:
    return [array, array[:, ::-1]]


@pytest.mark.parametrize("scale", [(0.5, 0.5), (0.6, 0.9), (1.3, 2.0), (0.75, 1.5)])
def test_outputs_are_size_by_size_whatever_the_scale(scale) -> None:
    image, semantic = example(20)
    for seed in range(4):
        out_image, out_semantic = run(image, semantic, 24, seed, scale=scale)
        assert out_image.shape == (24, 24, 3) and out_image.dtype == np.uint8
        assert out_semantic.shape == (24, 24) and out_semantic.dtype == semantic.dtype
        assert out_image.flags["C_CONTIGUOUS"] and out_semantic.flags["C_CONTIGUOUS"]


def test_unit_scale_without_colour_is_the_input_or_its_mirror_flipped_together() -> None:
    image, semantic = example(16, seed=1)
    flipped = []
    for seed in range(16):
        out_image, out_semantic = run(image, semantic, 16, seed)
        same = np.array_equal(out_image, image) and np.array_equal(out_semantic, semantic)
        mirror = np.array_equal(out_image, image[:, ::-1]) and np.array_equal(
            out_semantic, semantic[:, ::-1]
        )
        assert same or mirror, f"seed {seed}: neither the input nor its mirror"
        flipped.append(mirror)
    assert any(flipped) and not all(flipped)  # flips about half the time, not always or never


def test_zooming_out_pads_with_the_ignore_label_and_pad_colour_around_a_resized_copy() -> None:
    # Constant on 2x2 blocks: halving (linear or nearest) is then exactly every other pixel.
    image, semantic = example(32, seed=2, block=2)
    half_image, half_semantic = image[::2, ::2], semantic[::2, ::2]
    corners = set()
    for seed in range(8):
        out_image, out_semantic = run(image, semantic, 32, seed, scale=(0.5, 0.5))
        padded = out_semantic == IGNORE_INDEX
        assert padded.sum() == 32 * 32 - 16 * 16
        assert (out_image[padded] == augment.PAD_COLOUR).all()
        rows, cols = np.nonzero(~padded)
        top, left = rows.min(), cols.min()
        assert rows.max() - top == 15 and cols.max() - left == 15  # one 16x16 square
        inner_image = out_image[top : top + 16, left : left + 16]
        inner_semantic = out_semantic[top : top + 16, left : left + 16]
        assert set(np.unique(inner_semantic)) <= set(LABELS)  # nearest: no new labels
        assert any(
            np.array_equal(inner_image, want_image) and np.array_equal(inner_semantic, want_sem)
            for want_image, want_sem in zip(
                mirrors(half_image), mirrors(half_semantic), strict=True
            )
        )
        corners.add((int(top), int(left)))
    assert len(corners) > 1  # the copy lands at a random offset


def test_zooming_in_crops_a_window_of_the_enlarged_label_map() -> None:
    image, semantic = example(16, seed=3)
    enlarged = np.repeat(np.repeat(semantic, 2, axis=0), 2, axis=1)  # nearest doubling
    for seed in range(6):
        _, out_semantic = run(image, semantic, 16, seed, scale=(2.0, 2.0))
        assert IGNORE_INDEX not in out_semantic
        assert set(np.unique(out_semantic)) <= set(LABELS)
        windows = [
            source[top : top + 16, left : left + 16]
            for source in mirrors(enlarged)
            for top in range(17)
            for left in range(17)
        ]
        assert any(np.array_equal(out_semantic, window) for window in windows)


def test_zoom_in_keeps_labels_from_the_input_set_at_any_factor() -> None:
    image, semantic = example(20, seed=4)
    for seed in range(6):
        _, out_semantic = run(image, semantic, 16, seed, scale=(1.1, 3.0))
        assert set(np.unique(out_semantic)) <= set(LABELS)


def test_the_same_seed_gives_the_same_example_and_another_seed_another() -> None:
    image, semantic = example(24, seed=5)
    first = run(image, semantic, 16, 11, scale=(0.75, 1.5), colour=0.2)
    again = run(image, semantic, 16, 11, scale=(0.75, 1.5), colour=0.2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    for other_seed in (12, 13):
        other = run(image, semantic, 16, other_seed, scale=(0.75, 1.5), colour=0.2)
        assert not np.array_equal(first[0], other[0])
    # A generator used for several examples in a row replays the same sequence.
    sequences = []
    for _ in range(2):
        rng = np.random.default_rng([7, 3])
        augmentation = Augmentation(scale=(0.75, 1.5), colour=0.2)
        sequences.append([augment_example(image, semantic, 16, rng, augmentation) for _ in "ab"])
    for (a_image, a_sem), (b_image, b_sem) in zip(*sequences, strict=True):
        assert np.array_equal(a_image, b_image) and np.array_equal(a_sem, b_sem)


def test_colour_jitter_changes_pixels_but_not_labels() -> None:
    image, semantic = example(16, seed=6)
    for seed in range(5):
        out_image, out_semantic = run(image, semantic, 16, seed, colour=0.5)
        assert any(np.array_equal(out_semantic, want) for want in mirrors(semantic))
        assert not any(np.array_equal(out_image, want) for want in mirrors(image))


def test_colour_jitter_keeps_grey_grey_and_the_order_of_channels() -> None:
    rng = np.random.default_rng(7)
    levels = rng.integers(40, 216, (16, 16), dtype=np.uint8)
    grey = np.repeat(levels[..., None], 3, axis=2)
    semantic = np.zeros((16, 16), np.uint8)
    warm = np.empty((16, 16, 3), np.uint8)
    warm[:] = (150, 120, 90)  # red > green > blue
    warm[:8] = (170, 130, 100)
    for seed in range(6):
        out_grey, _ = run(grey, semantic, 16, seed, colour=0.6)
        assert not any(np.array_equal(out_grey, want) for want in mirrors(grey))
        assert np.array_equal(out_grey[..., 0], out_grey[..., 1])
        assert np.array_equal(out_grey[..., 1], out_grey[..., 2])
        out_warm, _ = run(warm, semantic, 16, seed, colour=0.6)
        red, green, blue = (out_warm[..., channel].astype(int) for channel in range(3))
        assert (red >= green).all() and (green >= blue).all() and (red > blue).any()


def test_config_refuses_a_scale_range_whose_min_exceeds_its_max(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="train_scale"):
        SegmentConfig(train_scale=(1.5, 0.75))
    path = tmp_path / "run.yaml"
    path.write_text("classes: [cat]\nsegment:\n  train_scale: [1.5, 0.75]\n")
    with pytest.raises(ConfigError, match="train_scale"):
        load_config(path, environ={})
    assert SegmentConfig(train_scale=(1.0, 1.0)).train_scale == (1.0, 1.0)


def test_augmentation_of_follows_the_settings() -> None:
    settings = SegmentConfig(train_scale=(0.5, 2.0), train_colour_jitter=0.3)
    assert augmentation_of(settings) == Augmentation(scale=(0.5, 2.0), colour=0.3)
    default = SegmentConfig()
    assert augmentation_of(default) == Augmentation(
        scale=default.train_scale, colour=default.train_colour_jitter
    )


def write_sample(tmp_path: Path, image: np.ndarray, semantic: np.ndarray):
    storage = open_storage(tmp_path / "data")
    sample = Sample(
        id="one",
        image="images/one.png",
        semantic_mask="masks/one.png",
        width=image.shape[1],
        height=image.shape[0],
    )
    storage.write_bytes(sample.image, encode_image(image, sample.image))
    storage.write_bytes(sample.semantic_mask, encode_image(semantic, sample.semantic_mask))
    return storage, sample


def test_load_example_refuses_a_label_map_of_another_size(tmp_path: Path) -> None:
    image, _ = example(24, seed=8)
    _, semantic = example(16, seed=8)
    storage, sample = write_sample(tmp_path, image, semantic)
    with pytest.raises(FreemaskError) as caught:
        load_example(storage, sample, 16, np.random.default_rng(0), Augmentation())
    message = str(caught.value)
    assert f"{storage.uri}/masks/one.png" in message
    assert "16x16" in message and "24x24" in message


def test_load_example_leaves_padding_out_of_the_targets(tmp_path: Path) -> None:
    image, semantic = example(32, seed=9)
    storage, sample = write_sample(tmp_path, image, semantic)
    augmentation = Augmentation(scale=(0.5, 0.5))
    pixels, masks, labels = load_example(
        storage, sample, 32, np.random.default_rng(1), augmentation
    )
    assert tuple(pixels.shape) == (3, 32, 32)
    assert set(labels.tolist()) <= set(LABELS) and IGNORE_INDEX not in labels.tolist()
    assert masks.shape == (len(labels), 32, 32)
    # Every pixel of the 16x16 copy has one label; the padding has none.
    assert masks.sum(dim=0).max() == 1 and int(masks.sum()) == 16 * 16
