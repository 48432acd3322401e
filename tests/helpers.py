"""Builders for small, exact datasets used across tests."""

from __future__ import annotations

import numpy as np

from freemask.records import IGNORE_INDEX, Instance, Sample, StageStamp, sample_id
from freemask.storage import Storage, encode_image

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
    from freemask.records import write_manifest

    built = [make_sample(index) for index in range(count)]
    for _, files, _ in built:
        for path, data in files.items():
            storage.write_bytes(path, data)
    write_manifest(storage, [sample for sample, _, _ in built])
    return [(sample, masks) for sample, _, masks in built]
