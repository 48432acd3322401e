"""The segmenter runs where segment.device says: model, batches and targets all on that device.

Without a GPU the checks use PyTorch's ``meta`` device: a tensor left on the CPU meets a meta
tensor and fails, so a forgotten ``.to()`` cannot pass unnoticed. The ``gpu`` tests run the
real thing on CUDA.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from freemask.config import SegmentConfig
from freemask.devices import Placement
from freemask.errors import FreemaskError
from freemask.segment import (
    TINY_MASK2FORMER_ID,
    Segmenter,
    build_tiny_mask2former,
    evaluate,
    load_segmenter,
    load_trained,
    place_segmenter,
    predict,
    run_labels,
    train_segmenter,
)
from freemask.segment.model import preprocess
from freemask.storage import LocalStorage, read_image

CLASSES = ["box", "ball"]
META = Placement(torch.device("meta"))


def settings(**fields) -> SegmentConfig:
    return SegmentConfig(
        **{
            "model_id": TINY_MASK2FORMER_ID,
            "image_size": 64,
            "batch_size": 2,
            "learning_rate": 1e-3,
            "train_steps": 3,
            "checkpoint_every": 500,
            **fields,
        }
    )


class DeviceSpy(torch.nn.Module):
    """Stands in for Mask2Former: its parameter sits on ``device``; it records the device of
    every tensor it is given and answers with CPU outputs (and a real CPU loss)."""

    def __init__(self, device: str, labels: int = len(CLASSES) + 1):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1, device=device))
        self.labels = labels
        self.seen: list[torch.device] = []

    def forward(self, pixel_values, mask_labels=(), class_labels=()):
        self.seen += [pixel_values.device, *(t.device for t in [*mask_labels, *class_labels])]
        batch = pixel_values.shape[0]
        weight = torch.ones(1, requires_grad=True)
        return SimpleNamespace(
            class_queries_logits=torch.zeros(batch, 3, self.labels + 1),
            masks_queries_logits=torch.zeros(batch, 3, 16, 16),
            loss=(weight**2).sum(),
        )


def test_placing_moves_every_parameter_and_buffer_and_the_model_runs_there() -> None:
    model = build_tiny_mask2former(run_labels(CLASSES))
    segmenter = place_segmenter(Segmenter(model, 64, np.arange(3)), META, predict_batch_size=7)
    tensors = [*model.parameters(), *model.buffers()]
    assert tensors and all(t.device.type == "meta" for t in tensors)
    assert segmenter.placement == META and segmenter.predict_batch_size == 7
    images = [np.zeros((48, 40, 3), np.uint8)] * 2
    with torch.no_grad():  # no tensor the forward pass makes itself stays on the CPU
        outputs = model.eval()(pixel_values=preprocess(images, 64).to("meta"))
    assert outputs.masks_queries_logits.device.type == "meta"


def test_prediction_sends_its_batch_to_the_model_and_returns_cpu_arrays() -> None:
    spy = DeviceSpy("meta")
    segmenter = Segmenter(spy, 64, np.arange(3))
    labels = predict(segmenter, [np.zeros((20, 30, 3), np.uint8)] * 3)
    assert spy.seen == [torch.device("meta")]
    assert [label.shape for label in labels] == [(20, 30)] * 3
    assert all(isinstance(label, np.ndarray) for label in labels)


def test_evaluation_uses_the_configured_prediction_batch(shapes_set) -> None:
    storage, samples = shapes_set
    spy = DeviceSpy("meta")
    segmenter = Segmenter(spy, 64, np.arange(3), predict_batch_size=5)
    evaluate(segmenter, samples, storage, CLASSES)
    assert len(spy.seen) == -(-len(samples) // 5)


def test_training_sends_images_masks_and_classes_to_the_model_device(shapes_set, tmp_path) -> None:
    storage, samples = shapes_set
    spy = DeviceSpy("meta")

    def stop(step: int) -> None:
        if step == 2:  # before the last step's checkpoint: meta weights cannot be saved
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_segmenter(
            Segmenter(spy, 64, np.arange(3)),
            samples,
            storage,
            LocalStorage(tmp_path / "model"),
            settings(),
            on_step=stop,
        )
    # Two steps of two samples, each with its image, its mask targets and its class targets.
    assert len(spy.seen) >= 2 * (1 + 2 + 2)
    assert set(spy.seen) == {torch.device("meta")}


def test_loaders_place_the_model_as_configured(shapes_set, tmp_path, monkeypatch) -> None:
    config = settings(device="cpu", predict_batch_size=3)
    segmenter = load_segmenter(config, CLASSES, trainable=True)
    assert segmenter.device == torch.device("cpu") and segmenter.predict_batch_size == 3
    storage, samples = shapes_set
    model_store = LocalStorage(tmp_path / "model")
    train_segmenter(segmenter, samples, storage, model_store, settings(train_steps=1))
    assert load_trained(model_store, config).predict_batch_size == 3
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(FreemaskError, match=r"segment.device 'cuda': CUDA is not available"):
        load_segmenter(settings(device="cuda"), CLASSES, trainable=True)
    with pytest.raises(FreemaskError, match=r"segment.device 'cuda': CUDA is not available"):
        load_trained(model_store, settings(device="cuda"))


@pytest.mark.gpu
def test_training_and_prediction_run_on_cuda(shapes_set, tmp_path) -> None:
    storage, samples = shapes_set
    config = settings(device="cuda", train_steps=4)
    segmenter = load_segmenter(config, CLASSES, trainable=True)
    assert all(p.device.type == "cuda" for p in segmenter.model.parameters())
    assert segmenter.placement.dtype in (torch.bfloat16, torch.float16)
    model_store = LocalStorage(tmp_path / "model")
    result = train_segmenter(segmenter, samples, storage, model_store, config)
    assert result.steps == 4 and all(np.isfinite(list(result.losses.values())))
    images = [read_image(storage, sample.image, mode="RGB") for sample in samples[:3]]
    labels = predict(load_trained(model_store, config), images)
    assert [label.shape for label in labels] == [image.shape[:2] for image in images]
    assert all(label.dtype == np.uint8 for label in labels)
