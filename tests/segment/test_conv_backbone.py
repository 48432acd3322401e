"""builtin:small-mask2former-conv: a ResNet-backbone Mask2Former that trains, saves and reloads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freemask.config import SegmentConfig
from freemask.records import read_manifest
from freemask.segment import load_segmenter, load_trained, predict, train_segmenter
from freemask.segment.model import (
    BUILTIN_IDS,
    BUILTIN_SIZES,
    SMALL_CONV_MASK2FORMER_ID,
    build_tiny_mask2former,
    run_labels,
)
from freemask.storage import LocalStorage, open_storage, read_image
from freemask.toyworld.dataset import write_toy_scenes

CLASSES = ["ball", "box"]


def settings(**fields) -> SegmentConfig:
    return SegmentConfig(
        **{
            "model_id": SMALL_CONV_MASK2FORMER_ID,
            "image_size": 64,
            "batch_size": 2,
            "learning_rate": 1e-3,
            "train_steps": 2,
            "checkpoint_every": 2,
            "device": "cpu",
            **fields,
        }
    )


@pytest.fixture
def scenes(tmp_path):
    folder = str(tmp_path / "scenes")
    write_toy_scenes(folder, CLASSES, 3, seed=5, size=64, objects=(1, 2))
    storage = open_storage(folder)
    return storage, read_manifest(storage)


def test_small_conv_has_a_resnet_backbone_of_the_configured_stages() -> None:
    assert BUILTIN_IDS[SMALL_CONV_MASK2FORMER_ID] == "small-conv"
    shape = BUILTIN_SIZES["small-conv"]
    model = build_tiny_mask2former(run_labels(CLASSES), size="small-conv")
    backbone = model.config.backbone_config
    assert backbone.model_type == "resnet"
    assert list(backbone.hidden_sizes) == shape["hidden_sizes"]
    assert list(backbone.depths) == shape["depths"]
    assert model.config.num_queries == shape["num_queries"]
    assert model.config.num_labels == len(run_labels(CLASSES))
    # The Swin sizes keep their Swin backbone.
    swin = build_tiny_mask2former(run_labels(CLASSES), size="tiny")
    assert swin.config.backbone_config.model_type == "swin"


def test_load_segmenter_builds_the_conv_builtin() -> None:
    segmenter = load_segmenter(settings(), CLASSES, trainable=True)
    assert segmenter.model.config.backbone_config.model_type == "resnet"
    assert segmenter.image_size == 64
    assert segmenter.to_run_label.tolist() == list(range(len(run_labels(CLASSES))))
    images = [np.full((64, 64, 3), 128, np.uint8)]
    (labels,) = predict(segmenter, images)
    assert labels.shape == (64, 64) and set(np.unique(labels)) <= {0, 1, 2}


def test_conv_model_trains_and_reloads_with_identical_predictions(scenes, tmp_path) -> None:
    storage, samples = scenes
    config = settings()
    segmenter = load_segmenter(config, CLASSES, trainable=True)
    start = {key: value.clone() for key, value in segmenter.model.state_dict().items()}
    model_storage = LocalStorage(tmp_path / "model")
    result = train_segmenter(segmenter, samples, storage, model_storage, config)
    assert result.steps == 2 and sorted(result.losses) == [1, 2]
    assert all(np.isfinite(loss) for loss in result.losses.values())
    trained = segmenter.model.state_dict()
    assert any(not torch.equal(start[key], trained[key]) for key in start)  # a step was taken

    reloaded = load_trained(model_storage)
    assert reloaded.model.config.backbone_config.model_type == "resnet"
    for key, value in trained.items():
        torch.testing.assert_close(reloaded.model.state_dict()[key], value)
    images = [read_image(storage, sample.image, mode="RGB") for sample in samples]
    first, second = predict(segmenter, images), predict(reloaded, images)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert first[0].shape == images[0].shape[:2]
    assert set(np.unique(np.concatenate(first))) <= {0, 1, 2}
