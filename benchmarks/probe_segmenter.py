"""The benchmarks' probe segmenter, which lives in ``freemask.toyworld.probe_segmenter`` (the
toy world's truth proxy is one too); the benchmarks import it from here."""

from freemask.toyworld.probe_segmenter import (
    ProbeNet,
    ProbeSettings,
    augment,
    class_weights,
    load_pairs,
    predict_probe,
    to_tensors,
    train_probe,
)

__all__ = [
    "ProbeNet",
    "ProbeSettings",
    "augment",
    "class_weights",
    "load_pairs",
    "predict_probe",
    "to_tensors",
    "train_probe",
]
