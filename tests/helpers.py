"""Builders for small, exact datasets used across tests."""

from __future__ import annotations

import numpy as np

from freemask.records import (
    IGNORE_INDEX,
    Instance,
    Sample,
    StageStamp,
    sample_id,
    write_manifest,
)
from freemask.storage import LocalStorage, Storage, encode_image

CLASSES = ["cat", "dog", "traffic light"]


def disc(shape: tuple[int, int], center: tuple[int, int], radius: int) -> np.ndarray:
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - center[0]) ** 2 + (cols - center[1]) ** 2 <= radius**2


def make_sample(
    index: int, shape: tuple[int, int] = (48, 64)
) -> tuple[Sample, dict[str, bytes], list[np.ndarray]]:
    """A sample with two overlapping objects (the second occludes the first) and an ignore band."""
    rng = np.random.default_rng(index)
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    first = disc(shape, (20, 20), 12)
    second = disc(shape, (26, 34), 10)
    first &= ~second
    classes = [CLASSES[index % 3], CLASSES[(index + 1) % 3]]
    semantic = np.zeros(shape, dtype=np.uint8)
    semantic[first] = CLASSES.index(classes[0]) + 1
    semantic[second] = CLASSES.index(classes[1]) + 1
    semantic[0, :] = IGNORE_INDEX
    instances = [
        Instance.from_mask(name, CLASSES.index(name) + 1, mask)
        for name, mask in zip(classes, [first, second], strict=True)
    ]
    identifier = sample_id("cfg", classes[0], index)
    sample = Sample(
        id=identifier,
        image=f"images/{identifier}.png",
        semantic_mask=f"masks/{identifier}.png",
        width=shape[1],
        height=shape[0],
        instances=instances,
        prompt=f"a photo of a {classes[0]}",
        seed=index,
        source=[StageStamp(stage="compose", version="1")],
        scores={"attention_confidence": 0.5 + index / 100},
    )
    files = {
        sample.image: encode_image(image, sample.image),
        sample.semantic_mask: encode_image(semantic, sample.semantic_mask),
    }
    return sample, files, [first, second]


def write_dataset(storage: Storage, count: int) -> list[tuple[Sample, list[np.ndarray]]]:
    """Write ``count`` samples and their manifest; return the samples with their exact masks."""

    built = [make_sample(index) for index in range(count)]
    for _, files, _ in built:
        for path, data in files.items():
            storage.write_bytes(path, data)
    write_manifest(storage, [sample for sample, _, _ in built])
    storage.write_bytes("_SUCCESS", b"{}\n")  # a finished stage output
    return [(sample, masks) for sample, _, masks in built]


SHAPE_CLASSES = ["box", "ball"]


def shapes_sample(index: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(index)
    image = rng.integers(90, 140, (size, size, 3), dtype=np.uint8)
    semantic = np.zeros((size, size), np.uint8)
    top, left = rng.integers(4, size // 2, 2)
    side = int(rng.integers(14, 24))
    image[top : top + side, left : left + side] = (220, 30, 30)
    semantic[top : top + side, left : left + side] = 1
    rows, cols = np.ogrid[:size, :size]
    centre = rng.integers(size // 2, size - 10, 2)
    disc = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= int(rng.integers(6, 10)) ** 2
    image[disc] = (30, 30, 220)
    semantic[disc] = 2
    return image, semantic


def write_shapes_set(root, count: int, start: int = 0, corrupt=None):
    """Write shapes samples ``start``.. as a manifest; ``corrupt(index, semantic)`` may replace a
    sample's label map (its instances then follow the corrupted map)."""
    storage = LocalStorage(root)
    samples = []
    for index in range(start, start + count):
        image, semantic = shapes_sample(index)
        if corrupt is not None:
            semantic = corrupt(index, semantic)
        identifier = f"shapes-{index:03d}"
        sample = Sample(
            id=identifier,
            image=f"images/{identifier}.png",
            semantic_mask=f"masks/{identifier}.png",
            width=64,
            height=64,
            instances=[
                Instance.from_mask(name, class_id, semantic == class_id)
                for class_id, name in enumerate(SHAPE_CLASSES, start=1)
            ],
        )
        storage.write_bytes(sample.image, encode_image(image, sample.image))
        storage.write_bytes(sample.semantic_mask, encode_image(semantic, sample.semantic_mask))
        samples.append(sample)
    write_manifest(storage, samples)
    storage.write_bytes("_SUCCESS", b"{}\n")  # a finished stage output
    return storage, samples
