"""Builders for the loop's tests: shapes pools with exact truth, tiny saved segmenters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from helpers import SHAPE_CLASSES, shapes_sample, write_shapes_set

from freemask.active import steps
from freemask.records import Sample, write_manifest
from freemask.segment import Segmenter, build_tiny_mask2former, run_labels, save_trained
from freemask.storage import LocalStorage, encode_image, read_image


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


def select_with_truth_as_judge(tmp_path, config, prepared) -> LocalStorage:
    """Round 1's select on the pool under ``tmp_path/pool``, its pseudo-labels the exact truth."""
    config.segment.validation = str(tmp_path / "pool")  # the whole pool is filtered
    out = prepared(config, tmp_path / "pool")
    for sample in steps.pool_of(out):
        truth = read_image(out, sample.truth_mask)
        out.write_bytes(f"rounds/01/pseudo/{sample.id}.png", encode_image(truth, "x.png"))
    steps.select(config, out, 1)
    return out
