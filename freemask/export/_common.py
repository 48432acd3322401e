"""What every exporter shares: the checked samples, class ids, label maps and the split."""

from __future__ import annotations

import hashlib

import numpy as np

from freemask.errors import DegenerateResultError, ExportError, some_names
from freemask.record_checks import require_usable
from freemask.records import MANIFEST, Sample, ignore_value, label_dtype, read_manifest
from freemask.stage_output import require_finished
from freemask.storage import Storage, read_image

SPLITS = ("train", "val")


def checked_samples(source: Storage, manifest: str, classes: list[str]) -> list[Sample]:
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
    class_ids(classes)
    require_usable(source, samples, classes, f"{source.uri}/{manifest}", error=ExportError)
    return samples


def class_ids(classes: list[str]) -> dict[str, int]:
    """Class name -> its 1-based id (0 is background); ExportError for an empty list."""
    if not classes:
        raise ExportError("no classes given; export needs the run's class list (config 'classes')")
    return {name: index for index, name in enumerate(classes, start=1)}


def lookup(ids: dict[str, int], name: str, sample: Sample) -> int:
    """The id of class ``name``; ExportError naming the sample when the run has no such class."""
    if name not in ids:
        raise ExportError(
            f"sample {sample.id}: class {name!r} is not among the configured classes "
            f"({some_names(list(ids))})"
        )
    return ids[name]


def semantic_labels(source: Storage, sample: Sample, ids: dict[str, int]) -> np.ndarray:
    """The sample's class-index mask in the run's label dtype (uint8 with 255 = ignore, or
    uint16 with 65535 = ignore beyond 254 classes): its semantic mask where it has one, else
    its instances painted in order (a disputed one as ignore). ExportError when the mask names
    a class the run does not have."""
    shape = (sample.height, sample.width)
    dtype = label_dtype(len(ids))
    ignore = ignore_value(dtype)
    if not sample.semantic_mask:
        semantic = np.zeros(shape, dtype=dtype)
        for instance in sample.instances:
            class_index = lookup(ids, instance.class_name, sample)
            semantic[instance.mask()] = ignore if instance.disputed else class_index
        return semantic
    stored = read_image(source, sample.semantic_mask)
    if stored.shape != shape:
        raise ExportError(
            f"sample {sample.id}: semantic mask {sample.semantic_mask} is {stored.shape}, "
            f"expected {shape}"
        )
    ignored = stored == ignore_value(stored)
    labelled = stored[~ignored]
    if labelled.size and labelled.max() > len(ids):
        raise ExportError(
            f"sample {sample.id}: semantic mask holds class index {labelled.max()}, "
            f"but only {len(ids)} classes are configured"
        )
    semantic = stored.astype(dtype)
    semantic[ignored] = ignore
    return semantic


def split_of(sample_id: str, val_fraction: float) -> str:
    """'val' or 'train': a sample's hash decides, so the split is stable across re-exports."""
    bucket = int(hashlib.sha256(sample_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if bucket < val_fraction else "train"


def check_val_fraction(val_fraction: float) -> None:
    if not 0.0 <= val_fraction < 1.0:
        raise ExportError(f"val_fraction {val_fraction}: expected a number in [0, 1)")
