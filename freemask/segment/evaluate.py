"""Evaluating a segmenter on a labelled manifest: per-class IoU and mIoU (255 ignored)."""

from __future__ import annotations

import numpy as np

from freemask.errors import FreemaskError
from freemask.records import IGNORE_INDEX, Sample
from freemask.segment.model import Segmenter, predict, run_labels
from freemask.storage import Storage, read_image


def confusion(prediction: np.ndarray, truth: np.ndarray, labels: int) -> np.ndarray:
    """[truth, prediction] pixel counts over pixels whose truth is not 255."""
    valid = truth != IGNORE_INDEX
    index = truth[valid].astype(np.int64) * labels + prediction[valid].astype(np.int64)
    return np.bincount(index, minlength=labels * labels).reshape(labels, labels)


def iou_from_confusion(matrix: np.ndarray, names: list[str]) -> dict[str, float]:
    """Per-label IoU for labels that occur in the truth or the predictions."""
    intersection = np.diag(matrix)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - intersection
    return {names[k]: float(intersection[k] / union[k]) for k in range(len(names)) if union[k] > 0}


def evaluate(
    segmenter: Segmenter,
    samples: list[Sample],
    storage: Storage,
    classes: list[str],
    batch: int | None = None,
) -> dict[str, object]:
    """mIoU (background included, as VOC counts it) and per-class IoU over labelled samples,
    ``batch`` images per forward pass (default: the segmenter's ``predict_batch_size``)."""
    batch = batch or segmenter.predict_batch_size
    names = run_labels(classes)
    matrix = np.zeros((len(names), len(names)), dtype=np.int64)
    labelled = [sample for sample in samples if sample.semantic_mask]
    for start in range(0, len(labelled), batch):
        chunk = labelled[start : start + batch]
        images = [read_image(storage, sample.image, mode="RGB") for sample in chunk]
        for sample, prediction in zip(chunk, predict(segmenter, images), strict=True):
            truth = read_image(storage, sample.semantic_mask)
            unknown = np.setdiff1d(np.unique(truth), [*range(len(names)), IGNORE_INDEX])
            if unknown.size:
                raise FreemaskError(
                    f"{storage.uri}/{sample.semantic_mask}: label values {unknown.tolist()} name "
                    f"no class of this run; expected 0 to {len(names) - 1} ({', '.join(names)}) "
                    f"or {IGNORE_INDEX}: were these labels made for other classes?"
                )
            matrix += confusion(prediction, truth, len(names))
    per_class = iou_from_confusion(matrix, names)
    miou = float(np.mean(list(per_class.values()))) if per_class else 0.0
    return {"miou": miou, "per_class_iou": per_class, "samples": len(labelled)}
