"""The PASCAL VOC export, laid out as the VOC2012 release is: ``VOCdevkit/VOC2012/`` with
``JPEGImages/``, ``SegmentationClass/`` and ``SegmentationObject/`` palette PNGs,
``ImageSets/Segmentation/{train,val,trainval}.txt`` and ``labels.txt`` (the class names, one a
line, background first), so that VOC readers (torchvision's ``VOCSegmentation(root, "2012")``,
mmsegmentation's and detectron2's VOC layouts) find it under the export folder."""

from __future__ import annotations

import numpy as np

from freemask.errors import ExportError
from freemask.export._common import (
    SPLITS,
    check_val_fraction,
    checked_samples,
    class_ids,
    semantic_labels,
    split_of,
)
from freemask.records import IGNORE_INDEX, MANIFEST, Sample, ignore_value
from freemask.storage import Storage, encode_image, read_image

VOC_ROOT = "VOCdevkit/VOC2012"


def voc_palette() -> list[int]:
    """The 256-colour PASCAL VOC palette as a flat [r, g, b, ...] list (255 -> light ignore colour)."""
    palette: list[int] = []
    for index in range(256):
        red = green = blue = 0
        code = index
        for bit in range(8):
            red |= ((code >> 0) & 1) << (7 - bit)
            green |= ((code >> 1) & 1) << (7 - bit)
            blue |= ((code >> 2) & 1) << (7 - bit)
            code >>= 3
        palette.extend((red, green, blue))
    return palette


def export_voc(
    source: Storage,
    target: Storage,
    classes: list[str],
    manifest: str = MANIFEST,
    val_fraction: float = 0.1,
) -> dict:
    """Write ``VOCdevkit/VOC2012/`` (see the module's docstring); return counts.

    Class indices: 0 background, k the k-th class of ``classes``, 255 ignore. A palette PNG holds
    at most 256 indices, so with more than 254 classes SegmentationClass PNGs are 16-bit
    greyscale instead (no palette), with 65535 = ignore; SegmentationObject PNGs stay 8-bit
    palette PNGs (objects 1..254, 255 ignore) either way.
    """
    check_val_fraction(val_fraction)
    samples = checked_samples(source, manifest, classes)
    palette = voc_palette()
    ids = class_ids(classes)
    root = target.child(VOC_ROOT)
    splits: dict[str, list[str]] = {split: [] for split in SPLITS}
    for sample in samples:
        image = read_image(source, sample.image, mode="RGB")
        root.write_bytes(f"JPEGImages/{sample.id}.jpg", encode_image(image, "x.jpg"))
        semantic = semantic_labels(source, sample, ids)
        class_palette = palette if semantic.dtype == np.uint8 else None
        root.write_bytes(
            f"SegmentationClass/{sample.id}.png", encode_image(semantic, "x.png", class_palette)
        )
        objects = _object_indices(sample, semantic)
        root.write_bytes(
            f"SegmentationObject/{sample.id}.png", encode_image(objects, "x.png", palette)
        )
        splits[split_of(sample.id, val_fraction)].append(sample.id)
    for split, names in {**splits, "trainval": splits["train"] + splits["val"]}.items():
        root.write_bytes(
            f"ImageSets/Segmentation/{split}.txt", "".join(f"{i}\n" for i in sorted(names)).encode()
        )
    root.write_bytes("labels.txt", "".join(f"{n}\n" for n in ["background", *classes]).encode())
    return {
        "format": "voc",
        "images": len(samples),
        "train": len(splits["train"]),
        "val": len(splits["val"]),
    }


def _object_indices(sample: Sample, semantic: np.ndarray) -> np.ndarray:
    """The sample's uint8 object-index mask: instances 1..n in order, 255 where ``semantic``
    is ignore."""
    if len(sample.instances) >= IGNORE_INDEX:
        raise ExportError(
            f"sample {sample.id}: {len(sample.instances)} instances; VOC object masks hold 254"
        )
    objects = np.zeros(semantic.shape, dtype=np.uint8)
    for number, instance in enumerate(sample.instances, start=1):
        objects[instance.mask()] = number
    objects[semantic == ignore_value(semantic)] = IGNORE_INDEX
    return objects
