"""Label quality against exact truth: how far a stage's masks are from what the image shows.

A sample has truth when its record names a ``truth_mask`` (the toy world's renderer masks,
carried through redraws and replayed through composition). ``LabelQuality`` accumulates
per-label pixel counts (``label_counts``) over many samples. Ignore (255, or 65535 in a 16-bit
label map: each map's own, by its dtype) in a label claims nothing, so it never counts against
precision, but it is not free: label IoU and recall count a truth pixel labelled ignore as
missed (a label that ignores everything scores 0), and ``ignore_share`` is reported beside
them.

Objects drawn from text have no renderer masks; their truth is the toy world's truth proxy
(``freemask.toyworld.oracle``), whose distance from exact truth is measured on redraws. Beside
label IoU: the wrong-class share (object labels whose truth is another object), object recall
per group of samples (e.g. per object colour) and object completeness after compose (the
share of a drawn object's own pixels its cut-out shows).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from scipy.stats import spearmanr

from freemask.records import Sample, ignore_value
from freemask.storage import Storage, read_image

# The rows of ``label_counts``: per label, pixel counts over the pixels whose truth is known.
HITS, LABELLED, TRUE, FROM_BACKGROUND, IGNORED = range(5)

# A sample whose label scores at least this true IoU is clean: a filter should keep it.
CLEAN_IOU = 0.85


def label_counts(label: np.ndarray, truth: np.ndarray, num_labels: int) -> np.ndarray:
    """[5, num_labels] pixel counts over pixels whose truth is not ignore; per label k: truth
    and label both k (``HITS``), label k (``LABELLED``), truth k (``TRUE``), truth background
    and label k (``FROM_BACKGROUND``), truth k and label ignore (``IGNORED``). Memory is linear
    in the labels (a confusion matrix of 65,534 classes would take 34 GB)."""
    if label.shape != truth.shape:
        raise ValueError(f"label {label.shape} and truth {truth.shape} differ in size")
    known = truth != ignore_value(truth)
    true = truth[known].astype(np.int64)
    labelled = label[known].astype(np.int64)
    ignored = label[known] == ignore_value(label)
    claimed = labelled[~ignored]
    if claimed.max(initial=0) >= num_labels or true.max(initial=0) >= num_labels:
        raise ValueError(f"a class id at or above {num_labels} in label or truth")

    def count(values: np.ndarray) -> np.ndarray:
        return np.bincount(values, minlength=num_labels)

    return np.stack(
        [
            count(true[(true == labelled) & ~ignored]),
            count(claimed),
            count(true),
            count(claimed[true[~ignored] == 0]),
            count(true[ignored]),
        ]
    )


def label_iou(label: np.ndarray, truth: np.ndarray, num_labels: int) -> float:
    """One sample's mIoU over the classes in its truth or label (ignore counts as a miss)."""
    counts = label_counts(label, truth, num_labels).astype(float)
    present = (counts[LABELLED] + counts[TRUE]) > 0
    union = counts[LABELLED] + counts[TRUE] - counts[HITS]
    return float(np.mean(counts[HITS][present] / union[present])) if present.any() else 1.0


@dataclass
class LabelQuality:
    """Label quality of a set of samples against truth, per class; ``add`` one pair at a time."""

    class_names: list[str]
    counts: np.ndarray = field(init=False)  # label_counts summed over the samples
    samples: int = 0
    # Per group: [object pixels labelled with their true class, object pixels in truth].
    groups: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        labels = len(self.class_names) + 1  # background first
        self.counts = np.zeros((5, labels), dtype=np.int64)

    def add(self, label: np.ndarray, truth: np.ndarray, group: str | None = None) -> None:
        """Count one sample's semantic label against its truth (same size, class ids); with
        ``group`` (e.g. the object's colour) its object recall also counts for that group."""
        counts = label_counts(label, truth, len(self.class_names) + 1)
        self.counts += counts
        self.samples += 1
        if group is not None:
            hits, total = self.groups.setdefault(group, [0, 0])
            self.groups[group] = [
                hits + int(counts[HITS, 1:].sum()),
                total + int(counts[TRUE, 1:].sum()),
            ]

    def summary(self) -> dict[str, Any]:
        """Label mIoU (background included) and, per class and over all objects: IoU,
        precision, recall, the share of object-labelled pixels that are truly background, the
        share that are truly another object (wrong class), and the share of pixels labelled
        ignore; and object recall per group."""
        counts = self.counts.astype(float)
        labels = len(self.class_names) + 1
        hits, labelled, truth = counts[HITS], counts[LABELLED], counts[TRUE]
        background, ignored = counts[FROM_BACKGROUND], counts[IGNORED]
        union = labelled + truth - hits  # a truth pixel labelled ignore is a miss
        # Object-labelled pixels whose truth is another object class.
        wrong = labelled - background - hits
        wrong[0] = 0.0
        iou = np.divide(hits, union, out=np.full(labels, np.nan), where=union > 0)
        per_class = {}
        for index, name in enumerate(["background", *self.class_names]):
            per_class[name] = {
                "iou": _round(iou[index]),
                "precision": _ratio(hits[index], labelled[index]),
                "recall": _ratio(hits[index], truth[index]),
                "background_share": _ratio(background[index], labelled[index]) if index else None,
                "wrong_class_share": _ratio(wrong[index], labelled[index]) if index else None,
                "ignore_share": _ratio(ignored[index], truth[index]),
            }
        objects = slice(1, labels)
        object_labelled = labelled[objects].sum()
        return {
            "samples": self.samples,
            "miou": _round(np.nanmean(iou)) if np.isfinite(iou).any() else None,
            "object_precision": _ratio(hits[objects].sum(), object_labelled),
            "object_recall": _ratio(hits[objects].sum(), truth[objects].sum()),
            "background_share": _ratio(background[objects].sum(), object_labelled),
            "wrong_class_share": _ratio(wrong[objects].sum(), object_labelled),
            "ignore_share": _ratio(ignored.sum(), truth.sum()),
            "per_class": per_class,
            "object_recall_by_group": {
                group: _ratio(hits_, total) for group, (hits_, total) in sorted(self.groups.items())
            },
        }


def _ratio(numerator: float, denominator: float) -> float | None:
    return round(float(numerator / denominator), 6) if denominator > 0 else None


def _round(value: float) -> float | None:
    return round(float(value), 6) if np.isfinite(value) else None


def has_truth(samples: Iterable[Sample]) -> bool:
    """True when every sample names a truth mask (and there is at least one)."""
    samples = list(samples)
    return bool(samples) and all(sample.truth_mask for sample in samples)


def stage_quality(
    storage: Storage,
    samples: list[Sample],
    class_names: list[str],
    group_words: Iterable[str] = (),
) -> dict[str, Any] | None:
    """``LabelQuality.summary`` of ``samples`` under ``storage``; None when any lacks truth.
    A single-object sample whose prompt names one of ``group_words`` before its class (the
    colour in "a photo of a red ball") counts in that word's object recall."""
    if not has_truth(samples):
        return None
    quality = LabelQuality(class_names)
    words = list(group_words)
    for sample in samples:
        names = sample.class_names()
        group = prompt_word(sample.prompt or "", names[0], words) if len(names) == 1 else None
        quality.add(
            read_image(storage, sample.semantic_mask),
            read_image(storage, sample.truth_mask),
            group,
        )
    return quality.summary()


def prompt_word(prompt: str, class_name: str, words: list[str]) -> str | None:
    """The word of ``words`` right before ``class_name`` in ``prompt`` (its colour), if any."""
    tokens = prompt.lower().split()
    for before, word in itertools.pairwise(tokens):
        if word == class_name.lower() and before in words:
            return before
    return None


def own_object(truth: np.ndarray, label: np.ndarray) -> np.ndarray:
    """A single-object sample's own object in its truth: the object pixels (not background,
    not ignore) of the connected parts that its label's object touches; all of them when
    none does. A stray second object drawn elsewhere is not the sample's object."""
    objects = (truth != 0) & (truth != ignore_value(truth))
    _, parts = cv2.connectedComponents(objects.astype(np.uint8), connectivity=8)
    claimed = (label != 0) & (label != ignore_value(label))
    touched = np.unique(parts[claimed & objects])
    return np.isin(parts, touched) if touched.size else objects


def object_completeness(own: np.ndarray, shown_truth: np.ndarray, shown_alpha: np.ndarray) -> float:
    """The share of an object's own pixels (``own``, over its whole source image) that its
    cut-out shows in a composite: the cut-out's crop of ``own`` (``shown_truth``) where its
    alpha is at least 0.5, the pixels that cover the background (1.0 for an empty object)."""
    total = int(np.count_nonzero(own))
    if not total:
        return 1.0
    return float(np.count_nonzero((shown_truth > 0) & (shown_alpha >= 0.5)) / total)


def completeness_summary(per_class: dict[str, list[float]], low: float = 0.6) -> dict[str, Any]:
    """Object completeness over objects: mean, 10th percentile, share under ``low``, and the
    mean per class."""
    values = [value for scores in per_class.values() for value in scores]
    return {
        "objects": len(values),
        "mean": _mean(values),
        "p10": _round(np.percentile(values, 10)) if values else None,
        "share_below": {str(low): _mean([float(v < low) for v in values])},
        "per_class": {name: _mean(scores) for name, scores in per_class.items()},
    }


def discard_precision(
    storage: Storage,
    kept: list[Sample],
    discarded: list[Sample],
    num_labels: int,
    score_key: str | None = None,
) -> dict[str, float | None] | None:
    """How well a filter told good labels from bad, against truth; None without truth.

    ``gap`` is the kept samples' mean true label IoU minus the discarded ones' (positive when
    the filter throws out the worse labels). ``oracle_gap`` is the gap a filter that knew the
    truth would reach discarding as many samples: the most any filter can show on this pool
    (a pool of uniformly good labels has nothing to find). ``judge_rank_correlation`` is the
    Spearman correlation of the samples' ``score_key`` score with their true IoU.
    ``clean_discarded`` is the share of clean samples (true IoU >= ``CLEAN_IOU``) that the
    filter discarded (None when there is none)."""
    if not has_truth([*kept, *discarded]):
        return None

    def true_iou(sample: Sample) -> float:
        return label_iou(
            read_image(storage, sample.semantic_mask),
            read_image(storage, sample.truth_mask),
            num_labels,
        )

    kept_scores = [true_iou(s) for s in kept]
    discarded_scores = [true_iou(s) for s in discarded]
    samples, truth = [*kept, *discarded], [*kept_scores, *discarded_scores]
    ranked = sorted(truth)
    worst, best = ranked[: len(discarded)], ranked[len(discarded) :]
    result = {
        "kept_true_iou": _mean(kept_scores),
        "discarded_true_iou": _mean(discarded_scores),
        "gap": _difference(kept_scores, discarded_scores),
        "oracle_gap": _difference(best, worst),
        "judge_rank_correlation": None,
        "clean_discarded": _clean_discarded(kept_scores, discarded_scores),
    }
    if score_key and len(samples) > 2 and all(score_key in s.scores for s in samples):
        judged = [s.scores[score_key] for s in samples]
        if len(set(judged)) > 1 and len(set(truth)) > 1:
            result["judge_rank_correlation"] = _round(spearmanr(judged, truth).statistic)
    return result


def class_ious(label: np.ndarray, truth: np.ndarray, class_ids: Iterable[int]) -> dict[int, float]:
    """Per class id: the IoU of its labelled and its true pixels (ignore counts as a miss)."""
    known = truth != ignore_value(truth)
    scores = {}
    for class_id in class_ids:
        labelled, true = (label == class_id) & known, truth == class_id
        union = np.logical_or(labelled, true).sum()
        scores[class_id] = float(np.logical_and(labelled, true).sum() / union) if union else 1.0
    return scores


def dispute_precision(
    storage: Storage, before: list[Sample], disputed: list[list[int]]
) -> dict[str, float | None] | None:
    """Whether a judge disputed the worse labels, against truth; None without truth.

    ``before`` holds samples as they were, ``disputed`` the class ids disputed in each. Every
    class of those samples is scored by its true IoU in the original label: ``gap`` is the
    undisputed classes' mean minus the disputed ones' (positive: the disputes hit worse
    labels)."""
    if not has_truth(before):
        return None
    hit, spared = [], []
    for sample, classes in zip(before, disputed, strict=True):
        label = read_image(storage, sample.semantic_mask)
        ids = {instance.class_id for instance in sample.instances if not instance.disputed}
        scores = class_ious(label, read_image(storage, sample.truth_mask), ids)
        hit += [scores[c] for c in classes if c in scores]
        spared += [v for c, v in scores.items() if c not in classes]
    return {
        "disputed_true_iou": _mean(hit),
        "undisputed_true_iou": _mean(spared),
        "gap": _difference(spared, hit),
    }


def _clean_discarded(kept: list[float], discarded: list[float]) -> float | None:
    clean_kept = sum(score >= CLEAN_IOU for score in kept)
    clean_discarded = sum(score >= CLEAN_IOU for score in discarded)
    clean = clean_kept + clean_discarded
    return round(clean_discarded / clean, 6) if clean else None


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 6) if values else None


def _difference(first: list[float], second: list[float]) -> float | None:
    if not first or not second:
        return None
    return round(float(np.mean(first) - np.mean(second)), 6)
