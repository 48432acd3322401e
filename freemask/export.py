"""Dataset exporters: COCO instances JSON (RLE masks) and PASCAL VOC folders (palette PNGs)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import PurePosixPath

import numpy as np

from freemask.errors import ExportError
from freemask.records import IGNORE_INDEX, MANIFEST, Sample, check_rle, read_manifest
from freemask.stage_output import require_finished
from freemask.storage import Storage, encode_image, read_image, write_json

FORMATS = ("coco", "voc")


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


def export_dataset(
    source: Storage, target: Storage, classes: list[str], fmt: str, **options
) -> dict:
    """Export the manifest under ``source`` into ``target`` as ``fmt`` ('coco' or 'voc')."""
    exporters: dict[str, Callable[..., dict]] = {"coco": export_coco, "voc": export_voc}
    if fmt not in exporters:
        raise ExportError(f"format {fmt!r} is not supported; expected one of {', '.join(FORMATS)}")
    return exporters[fmt](source, target, classes, **options)


def export_coco(
    source: Storage, target: Storage, classes: list[str], manifest: str = MANIFEST
) -> dict:
    """Write ``annotations/instances.json`` and ``images/`` in COCO format; return counts.

    Category ids are 1-based in ``classes`` order; segmentations are compressed RLE.
    """
    samples = _checked_samples(source, manifest, classes)
    class_ids = _class_ids(classes)
    images, annotations = [], []
    for image_id, sample in enumerate(samples, start=1):
        file_name = f"{sample.id}{PurePosixPath(sample.image).suffix}"
        target.write_bytes(f"images/{file_name}", source.read_bytes(sample.image))
        images.append(
            {"id": image_id, "file_name": file_name, "width": sample.width, "height": sample.height}
        )
        for instance in sample.instances:
            category_id = _lookup(class_ids, instance.class_name, sample)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_id,
                    "segmentation": {
                        "size": list(instance.rle.size),
                        "counts": instance.rle.counts,
                    },
                    "area": float(instance.area),
                    "bbox": list(instance.bbox),
                    "iscrowd": int(instance.disputed),
                }
            )
    categories = [
        {"id": index, "name": name, "supercategory": "object"} for name, index in class_ids.items()
    ]
    document = {
        "info": {"description": "freemask synthetic dataset", "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    write_json(target, "annotations/instances.json", document)
    return {"format": "coco", "images": len(images), "annotations": len(annotations)}


def export_voc(
    source: Storage,
    target: Storage,
    classes: list[str],
    manifest: str = MANIFEST,
    val_fraction: float = 0.1,
) -> dict:
    """Write a VOC-style folder: JPEGImages, SegmentationClass and SegmentationObject palette PNGs,
    ImageSets/Segmentation/{train,val,trainval}.txt and labels.txt; return counts.

    Class indices: 0 background, k the k-th class of ``classes``, 255 ignore.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ExportError(f"val_fraction {val_fraction}: expected a number in [0, 1)")
    samples = _checked_samples(source, manifest, classes)
    palette = voc_palette()
    class_ids = _class_ids(classes)
    splits: dict[str, list[str]] = {"train": [], "val": []}
    for sample in samples:
        image = read_image(source, sample.image, mode="RGB")
        target.write_bytes(f"JPEGImages/{sample.id}.jpg", encode_image(image, "x.jpg"))
        semantic, objects = _voc_masks(source, sample, class_ids)
        target.write_bytes(
            f"SegmentationClass/{sample.id}.png", encode_image(semantic, "x.png", palette)
        )
        target.write_bytes(
            f"SegmentationObject/{sample.id}.png", encode_image(objects, "x.png", palette)
        )
        splits["val" if _in_validation(sample.id, val_fraction) else "train"].append(sample.id)
    for split, ids in {**splits, "trainval": splits["train"] + splits["val"]}.items():
        target.write_bytes(
            f"ImageSets/Segmentation/{split}.txt", "".join(f"{i}\n" for i in sorted(ids)).encode()
        )
    target.write_bytes(
        "labels.txt", "".join(f"{name}\n" for name in ["background", *classes]).encode()
    )
    return {
        "format": "voc",
        "images": len(samples),
        "train": len(splits["train"]),
        "val": len(splits["val"]),
    }


def _voc_masks(
    source: Storage, sample: Sample, class_ids: dict[str, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The sample's class-index mask and object-index mask (instances 1..n, ignore kept at 255)."""
    shape = (sample.height, sample.width)
    objects = np.zeros(shape, dtype=np.uint8)
    if sample.semantic_mask:
        semantic = read_image(source, sample.semantic_mask)
        if semantic.shape != shape:
            raise ExportError(
                f"sample {sample.id}: semantic mask {sample.semantic_mask} is {semantic.shape}, expected {shape}"
            )
        labelled = semantic[semantic != IGNORE_INDEX]
        if labelled.size and labelled.max() > len(class_ids):
            raise ExportError(
                f"sample {sample.id}: semantic mask holds class index {labelled.max()}, "
                f"but only {len(class_ids)} classes are configured"
            )
    else:
        semantic = np.zeros(shape, dtype=np.uint8)
        for instance in sample.instances:
            class_index = _lookup(class_ids, instance.class_name, sample)
            semantic[instance.mask()] = IGNORE_INDEX if instance.disputed else class_index
    if len(sample.instances) >= IGNORE_INDEX:
        raise ExportError(
            f"sample {sample.id}: {len(sample.instances)} instances; VOC object masks hold 254"
        )
    for number, instance in enumerate(sample.instances, start=1):
        objects[instance.mask()] = number
    objects[semantic == IGNORE_INDEX] = IGNORE_INDEX
    return semantic.astype(np.uint8), objects


def _checked_samples(source: Storage, manifest: str, classes: list[str]) -> list[Sample]:
    """The finished manifest's samples, all checked before anything is written, so a bad
    record fails the export at once rather than half-way: classes known, RLEs decodable."""
    if manifest == MANIFEST:
        require_finished(source, "the dataset to export")
    samples = read_manifest(source, manifest)
    class_ids = _class_ids(classes)
    for sample in samples:
        for index, instance in enumerate(sample.instances):
            _lookup(class_ids, instance.class_name, sample)
            problem = check_rle(instance.rle)
            if problem:
                raise ExportError(
                    f"{source.uri}/{manifest}: sample {sample.id}: instance {index} RLE does "
                    f"not decode ({problem})"
                )
    return samples


def _class_ids(classes: list[str]) -> dict[str, int]:
    if not classes:
        raise ExportError("no classes given; export needs the run's class list (config 'classes')")
    return {name: index for index, name in enumerate(classes, start=1)}


def _lookup(class_ids: dict[str, int], name: str, sample: Sample) -> int:
    if name not in class_ids:
        raise ExportError(
            f"sample {sample.id}: class {name!r} is not among the configured classes ({', '.join(class_ids)})"
        )
    return class_ids[name]


def _in_validation(sample_id: str, fraction: float) -> bool:
    """Deterministic split: a sample's hash decides, so the split is stable across re-exports."""
    bucket = int(hashlib.sha256(sample_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return bucket < fraction
