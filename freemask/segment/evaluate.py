"""Evaluating a segmenter on a labelled manifest: per-class IoU and mIoU (ignore left out: 255,
or 65535 in a 16-bit label map).

IoU needs, per label, only the pixels where truth and prediction agree on it, the truth's and
the prediction's: ``evaluate`` counts those three (memory linear in the labels), where a full
confusion matrix would take 34 GB at 65,534 classes.
"""

from __future__ import annotations

import numpy as np

from freemask.errors import FreemaskError
from freemask.records import Sample, ignore_value
from freemask.segment.model import Segmenter, predict, run_labels
from freemask.storage import Storage, read_image


def confusion(prediction: np.ndarray, truth: np.ndarray, labels: int) -> np.ndarray:
    """[truth, prediction] pixel counts over pixels whose truth is not ignore (by its dtype)."""
    valid = truth != ignore_value(truth)
    index = truth[valid].astype(np.int64) * labels + prediction[valid].astype(np.int64)
    return np.bincount(index, minlength=labels * labels).reshape(labels, labels)


def iou_counts(prediction: np.ndarray, truth: np.ndarray, labels: int) -> np.ndarray:
    """[3, labels] pixel counts over pixels whose truth is not ignore: per label, where truth
    and prediction both hold it, where truth does, where prediction does."""
    valid = truth != ignore_value(truth)
    truth_ids = truth[valid].astype(np.int64)
    predicted = prediction[valid].astype(np.int64)
    return np.stack(
        [
            np.bincount(truth_ids[truth_ids == predicted], minlength=labels)[:labels],
            np.bincount(truth_ids, minlength=labels)[:labels],
            np.bincount(predicted, minlength=labels)[:labels],
        ]
    )


def iou_from_counts(counts: np.ndarray, names: list[str]) -> dict[str, float]:
    """Per-label IoU (from ``iou_counts``) for labels that occur in the truth or predictions."""
    intersection, truth, predicted = counts
    union = truth + predicted - intersection
    return {names[k]: float(intersection[k] / union[k]) for k in range(len(names)) if union[k] > 0}


def iou_from_confusion(matrix: np.ndarray, names: list[str]) -> dict[str, float]:
    """Per-label IoU for labels that occur in the truth or the predictions."""
    counts = np.stack([np.diag(matrix), matrix.sum(axis=1), matrix.sum(axis=0)])
    return iou_from_counts(counts, names)


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
    counts = np.zeros((3, len(names)), dtype=np.int64)
    labelled = [sample for sample in samples if sample.semantic_mask]
    for start in range(0, len(labelled), batch):
        chunk = labelled[start : start + batch]
        images = [read_image(storage, sample.image, mode="RGB") for sample in chunk]
        for sample, prediction in zip(chunk, predict(segmenter, images), strict=True):
            truth = read_image(storage, sample.semantic_mask)
            ignore = ignore_value(truth)
            values = np.unique(truth)
            unknown = values[(values >= len(names)) & (values != ignore)]
            if unknown.size:
                shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
                raise FreemaskError(
                    f"{storage.uri}/{sample.semantic_mask}: label values {unknown[:10].tolist()} "
                    f"name no class of this run; expected 0 to {len(names) - 1} ({shown}) "
                    f"or {ignore}: were these labels made for other classes?"
                )
            counts += iou_counts(prediction, truth, len(names))
    per_class = iou_from_counts(counts, names)
    miou = float(np.mean(list(per_class.values()))) if per_class else 0.0
    return {"miou": miou, "per_class_iou": per_class, "samples": len(labelled)}
