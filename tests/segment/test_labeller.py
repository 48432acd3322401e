"""The independent pseudo-labeller: loaded from a freemask model, a checkpoint folder or an id."""

from __future__ import annotations

import numpy as np
import pytest

from freemask.config import SegmentConfig
from freemask.errors import FreemaskError
from freemask.segment import (
    TINY_MASK2FORMER_ID,
    Segmenter,
    build_tiny_mask2former,
    load_labeller,
    predict,
    predicts_run_labels,
    run_labels,
    save_trained,
)
from freemask.storage import LocalStorage

CLASSES = ["box", "ball"]


def labeller_settings(labeller: str) -> SegmentConfig:
    return SegmentConfig(model_id=TINY_MASK2FORMER_ID, image_size=64, labeller=labeller)


def test_a_freemask_model_labels_as_it_was_saved_and_can_be_fine_tuned(tmp_path) -> None:
    labels = run_labels(CLASSES)
    saved = Segmenter(build_tiny_mask2former(labels, seed=4), 64, np.arange(len(labels)))
    save_trained(saved, LocalStorage(tmp_path / "model"))
    loaded = load_labeller(labeller_settings(str(tmp_path / "model")), CLASSES)
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert np.array_equal(predict(loaded, [image])[0], predict(saved, [image])[0])
    assert predicts_run_labels(loaded, CLASSES)


def test_a_checkpoint_with_other_labels_is_mapped_and_not_fine_tuned(tmp_path) -> None:
    model = build_tiny_mask2former(["background", "cat", "ball", "box"], seed=1)
    model.save_pretrained(tmp_path / "checkpoint")
    loaded = load_labeller(labeller_settings(str(tmp_path / "checkpoint")), CLASSES)
    assert loaded.to_run_label.tolist() == [0, 0, 2, 1]
    assert not predicts_run_labels(loaded, CLASSES)


def test_a_builtin_labeller_loads_offline_and_a_missing_one_names_the_field(tmp_path) -> None:
    assert predicts_run_labels(
        load_labeller(labeller_settings(TINY_MASK2FORMER_ID), CLASSES), CLASSES
    )
    with pytest.raises(FreemaskError, match=r"segment\.labeller"):
        load_labeller(labeller_settings(str(tmp_path / "missing")), CLASSES)
