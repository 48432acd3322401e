"""Dataset exporters: COCO instances JSON (RLE masks) and PASCAL VOC folders (palette PNGs;
16-bit greyscale class masks for a run of more than 254 classes)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import numpy as np

from freemask.errors import DegenerateResultError, ExportError, some_names
from freemask.record_checks import require_usable
from freemask.records import (
    IGNORE_INDEX,
    MANIFEST,
    Sample,
    ignore_value,
    label_dtype,
    read_manifest,
)
from freemask.stage_output import require_finished
from freemask.storage import (
    LocalStorage,
    Storage,
    encode_image,
    read_image,
    replace_folder,
    write_json,
)

FORMATS = ("coco", "voc")
# What each format writes at the top of its folder, and the files a reader starts from (an
# object store gets those last).
LAYOUTS = {
    "coco": {"annotations", "images"},
    "voc": {"ImageSets", "JPEGImages", "SegmentationClass", "SegmentationObject", "labels.txt"},
}
INDEXES = {"coco": ("annotations/",), "voc": ("ImageSets/", "labels.txt")}
UPLOAD_THREADS = 16


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
    """Export the manifest under ``source`` into ``target`` as ``fmt`` ('coco' or 'voc').

    Every record is checked against its files before anything is written
    (``freemask.record_checks``), and the export is built beside ``target`` and put in its place
    only once whole, so a refused export leaves ``target`` as it was, an earlier export included.
    A local folder is renamed into place. Where no folder can be renamed (an object store, a
    mount point, a folder whose parent is read-only) the export is built in a local temporary
    folder, then copied over ``target`` file by file (each file whole), its index files last,
    and the files of an earlier export that the new one lacks deleted. Raises ExportError when
    ``target`` holds other files than a ``fmt`` export.
    """
    exporters: dict[str, Callable[..., dict]] = {"coco": export_coco, "voc": export_voc}
    if fmt not in exporters:
        raise ExportError(f"format {fmt!r} is not supported; expected one of {', '.join(FORMATS)}")
    _class_ids(classes)
    _require_export_folder(target, fmt)

    def write(staging: Storage) -> dict:
        return exporters[fmt](source, staging, classes, **options)

    if isinstance(target, LocalStorage) and _renamable(target.root):
        return _replace_local(target, write)
    return _copy_over(target, fmt, write)


def _require_export_folder(target: Storage, fmt: str) -> None:
    """Refuse a target that an export would replace with loss: a file, or a folder holding
    other files than an earlier export of ``fmt``."""
    if isinstance(target, LocalStorage) and target.root.exists() and not target.root.is_dir():
        raise ExportError(f"{target.uri}: exists and is not a folder; export into a folder")
    others = sorted({name.split("/")[0] for name in target.list()} - LAYOUTS[fmt])
    if others:
        raise ExportError(
            f"{target.uri}: holds files that are no part of a {fmt} export "
            f"({', '.join(others[:3])}); export into an empty folder or over an earlier "
            f"{fmt} export"
        )


def _renamable(folder: Path) -> bool:
    """Whether ``folder`` can be replaced by renaming a sibling into its place."""
    existing = next(path for path in [folder.parent, *folder.parent.parents] if path.exists())
    return os.access(existing, os.W_OK) and not os.path.ismount(folder)


def _replace_local(target: LocalStorage, write: Callable[[Storage], dict]) -> dict:
    """Write the export into a sibling folder, then rename it into ``target``'s place."""
    counts: dict = {}

    def fill(partial: Path) -> None:
        partial.mkdir(parents=True)
        counts.update(write(LocalStorage(partial)))

    replace_folder(target.root, fill)
    return counts


def _copy_over(target: Storage, fmt: str, write: Callable[[Storage], dict]) -> dict:
    """Write the export into a local temporary folder, then copy it over ``target``: the index
    files last, then delete what an earlier export left that this one lacks."""
    with tempfile.TemporaryDirectory(prefix="freemask-export-") as temp:
        staging = LocalStorage(temp)
        counts = write(staging)
        names = staging.list()
        body = [name for name in names if not name.startswith(INDEXES[fmt])]
        index = [name for name in names if name.startswith(INDEXES[fmt])]

        def upload(name: str) -> None:
            target.write_bytes(name, staging.read_bytes(name))

        with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
            list(pool.map(upload, body))
            list(pool.map(upload, index))
            list(pool.map(target.delete, sorted(set(target.list()) - set(names))))
    return counts


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

    Class indices: 0 background, k the k-th class of ``classes``, 255 ignore. A palette PNG holds
    at most 256 indices, so with more than 254 classes SegmentationClass PNGs are 16-bit
    greyscale instead (no palette), with 65535 = ignore; SegmentationObject PNGs stay 8-bit
    palette PNGs (objects 1..254, 255 ignore) either way.
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
        class_palette = palette if semantic.dtype == np.uint8 else None
        target.write_bytes(
            f"SegmentationClass/{sample.id}.png", encode_image(semantic, "x.png", class_palette)
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
    """The sample's class-index mask (in the run's label dtype: uint8 with 255 = ignore, or
    uint16 with 65535 = ignore beyond 254 classes) and its uint8 object-index mask (instances
    1..n, 255 where the class mask is ignore)."""
    shape = (sample.height, sample.width)
    dtype = label_dtype(len(class_ids))
    ignore = ignore_value(dtype)
    objects = np.zeros(shape, dtype=np.uint8)
    if sample.semantic_mask:
        stored = read_image(source, sample.semantic_mask)
        if stored.shape != shape:
            raise ExportError(
                f"sample {sample.id}: semantic mask {sample.semantic_mask} is {stored.shape}, expected {shape}"
            )
        ignored = stored == ignore_value(stored)
        labelled = stored[~ignored]
        if labelled.size and labelled.max() > len(class_ids):
            raise ExportError(
                f"sample {sample.id}: semantic mask holds class index {labelled.max()}, "
                f"but only {len(class_ids)} classes are configured"
            )
        semantic = stored.astype(dtype)
        semantic[ignored] = ignore
    else:
        semantic = np.zeros(shape, dtype=dtype)
        for instance in sample.instances:
            class_index = _lookup(class_ids, instance.class_name, sample)
            semantic[instance.mask()] = ignore if instance.disputed else class_index
    if len(sample.instances) >= IGNORE_INDEX:
        raise ExportError(
            f"sample {sample.id}: {len(sample.instances)} instances; VOC object masks hold 254"
        )
    for number, instance in enumerate(sample.instances, start=1):
        objects[instance.mask()] = number
    objects[semantic == ignore] = IGNORE_INDEX
    return semantic, objects


def _checked_samples(source: Storage, manifest: str, classes: list[str]) -> list[Sample]:
    """The finished manifest's samples, all checked before anything is written, so a bad
    record fails the export at once rather than half-way: ids and file names fit, files are
    regular files of the prefix, images have the declared size, masks fit and decode, classes
    are the run's (``freemask.record_checks``)."""
    if manifest == MANIFEST:
        require_finished(source, "the dataset to export")
    samples = read_manifest(source, manifest)
    if not samples:
        raise DegenerateResultError(
            f"{source.uri}/{manifest}: holds no samples; an empty dataset is not exported "
            "(see the stage's rejected.jsonl or the active loop's round summaries for why)"
        )
    _class_ids(classes)
    require_usable(source, samples, classes, f"{source.uri}/{manifest}", error=ExportError)
    return samples


def _class_ids(classes: list[str]) -> dict[str, int]:
    if not classes:
        raise ExportError("no classes given; export needs the run's class list (config 'classes')")
    return {name: index for index, name in enumerate(classes, start=1)}


def _lookup(class_ids: dict[str, int], name: str, sample: Sample) -> int:
    if name not in class_ids:
        raise ExportError(
            f"sample {sample.id}: class {name!r} is not among the configured classes "
            f"({some_names(list(class_ids))})"
        )
    return class_ids[name]


def _in_validation(sample_id: str, fraction: float) -> bool:
    """Deterministic split: a sample's hash decides, so the split is stable across re-exports."""
    bucket = int(hashlib.sha256(sample_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return bucket < fraction
