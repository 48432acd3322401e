"""Builders for the loop's tests: shapes pools with exact truth, tiny saved segmenters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from helpers import SHAPE_CLASSES, shapes_sample, write_shapes_set

from freemask.records import Sample, write_manifest
from freemask.segment import Segmenter, build_tiny_mask2former, run_labels, save_trained
from freemask.storage import LocalStorage, encode_image


def write_truth_pool(root: Path, count: int, corrupt=None) -> tuple[LocalStorage, list[Sample]]:
    """A shapes set whose records name their clean label map as ``truth_mask``."""
    storage, samples = write_shapes_set(root, count, corrupt=corrupt)
    with_truth = []
    for index, sample in enumerate(samples):
        path = f"truth/{sample.id}.png"
        storage.write_bytes(path, encode_image(shapes_sample(index)[1], path))
        with_truth.append(sample.model_copy(update={"truth_mask": path}))
    write_manifest(storage, with_truth)
    storage.write_bytes("_SUCCESS", b"{}\n")  # a finished stage output
    return storage, with_truth


def save_tiny(folder: Path, seed: int, labels: list[str] | None = None) -> Segmenter:
    """A random tiny Mask2Former (seeded) saved as freemask saves trained models."""
    labels = labels or run_labels(SHAPE_CLASSES)
    segmenter = Segmenter(build_tiny_mask2former(labels, seed=seed), 64, np.arange(len(labels)))
    save_trained(segmenter, LocalStorage(folder))
    return segmenter
