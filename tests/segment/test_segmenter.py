"""The tiny Mask2Former: training lowers the loss, exact resume, saving, labels, evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freemask.config import SegmentConfig
from freemask.errors import FreemaskError
from freemask.segment import (
    TINY_MASK2FORMER_ID,
    confusion,
    evaluate,
    iou_from_confusion,
    label_mapping,
    load_segmenter,
    load_trained,
    predict,
    train_segmenter,
)
from freemask.storage import LocalStorage, read_image

CLASSES = ["box", "ball"]


def settings(**fields) -> SegmentConfig:
    return SegmentConfig(
        **{
            "model_id": TINY_MASK2FORMER_ID,
            "image_size": 64,
            "batch_size": 4,
            "learning_rate": 1e-3,
            "train_steps": 40,
            "checkpoint_every": 10,
            **fields,
        }
    )


def test_training_lowers_the_loss(shapes_set, tmp_path) -> None:
    storage, samples = shapes_set
    segmenter = load_segmenter(settings(), CLASSES, trainable=True)
    result = train_segmenter(
        segmenter, samples, storage, LocalStorage(tmp_path / "model"), settings()
    )
    losses = list(result.losses.values())
    assert result.steps == 40 and len(losses) == 40
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


def test_interrupted_training_resumes_from_its_checkpoint(shapes_set, tmp_path) -> None:
    storage, samples = shapes_set
    config = settings(train_steps=12, checkpoint_every=4)
    whole = load_segmenter(config, CLASSES, trainable=True)
    train_segmenter(whole, samples, storage, LocalStorage(tmp_path / "whole"), config)

    def crash(step: int) -> None:
        if step == 6:
            raise KeyboardInterrupt

    target = LocalStorage(tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        train_segmenter(
            load_segmenter(config, CLASSES, trainable=True),
            samples,
            storage,
            target,
            config,
            on_step=crash,
        )
    steps_run = []
    resumed = train_segmenter(
        load_segmenter(config, CLASSES, trainable=True),
        samples,
        storage,
        target,
        config,
        on_step=steps_run.append,
    )
    assert resumed.resumed_from == 4 and steps_run == list(range(5, 13))
    final = load_trained(target).model.state_dict()
    for key, value in whole.model.state_dict().items():
        torch.testing.assert_close(final[key], value)


def test_trained_model_reloads_without_pickle_and_predicts_run_labels(shapes_set, tmp_path) -> None:
    storage, samples = shapes_set
    config = settings(train_steps=60)
    segmenter = load_segmenter(config, CLASSES, trainable=True)
    train_segmenter(segmenter, samples, storage, LocalStorage(tmp_path / "model"), config)
    reloaded = load_trained(LocalStorage(tmp_path / "model"))
    images = [read_image(storage, sample.image, mode="RGB") for sample in samples[:3]]
    first, second = predict(segmenter, images), predict(reloaded, images)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert first[0].shape == (64, 64) and set(np.unique(np.concatenate(first))) <= {0, 1, 2}
    scores = evaluate(reloaded, samples, storage, CLASSES)
    assert scores["samples"] == 16 and 0.0 < scores["miou"] <= 1.0
    assert set(scores["per_class_iou"]) <= {"background", "box", "ball"}
    # Labels made for other classes (a validation set of another run) are named, not crashed on.
    with pytest.raises(FreemaskError, match=r"label values \[2\] name no class of this run"):
        evaluate(reloaded, samples, storage, CLASSES[:1])


def test_label_mapping_maps_checkpoint_labels_and_names_the_unmapped() -> None:
    checkpoint = {0: "wall", 1: "plant", 2: "cat", 3: "chair"}
    mapping = label_mapping(checkpoint, ["cat", "pottedplant"], {"pottedplant": "plant"})
    assert mapping.tolist() == [0, 2, 1, 0]
    with pytest.raises(FreemaskError, match="'unicorn'"):
        label_mapping(checkpoint, ["cat", "unicorn"], {})


def test_confusion_ignores_255_and_iou_counts_present_labels() -> None:
    truth = np.array([[0, 1, 1, 255]], np.uint8)
    prediction = np.array([[0, 1, 0, 2]], np.uint8)
    matrix = confusion(prediction, truth, 3)
    assert matrix.sum() == 3
    ious = iou_from_confusion(matrix, ["background", "box", "ball"])
    assert ious == {"background": 0.5, "box": 0.5}
