"""Stage 6, segment: Mask2Former (transformers) to pseudo-label, train and evaluate."""

from freemask.segment.evaluate import confusion, evaluate, iou_from_confusion
from freemask.segment.labeller import load_labeller, predicts_run_labels
from freemask.segment.model import (
    BUILTIN_IDS,
    SMALL_MASK2FORMER_ID,
    TINY_MASK2FORMER_ID,
    Segmenter,
    build_tiny_mask2former,
    configure_segmenter,
    label_mapping,
    load_segmenter,
    place_segmenter,
    predict,
    run_labels,
)
from freemask.segment.train import MODEL_MARKER, load_trained, save_trained, train_segmenter

__all__ = [
    "BUILTIN_IDS",
    "MODEL_MARKER",
    "SMALL_MASK2FORMER_ID",
    "TINY_MASK2FORMER_ID",
    "Segmenter",
    "build_tiny_mask2former",
    "configure_segmenter",
    "confusion",
    "evaluate",
    "iou_from_confusion",
    "label_mapping",
    "load_labeller",
    "load_segmenter",
    "load_trained",
    "place_segmenter",
    "predict",
    "predicts_run_labels",
    "run_labels",
    "save_trained",
    "train_segmenter",
]
