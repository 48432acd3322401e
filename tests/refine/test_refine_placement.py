"""AffinityNet runs where refine.device says: the network and every image on that device.

Without a GPU the checks use PyTorch's ``meta`` device, where a tensor left on the CPU meets a
meta tensor and fails; the ``gpu`` test trains and refines on CUDA.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
import torch

from freemask.devices import Placement
from freemask.refine import AffinityRefiner, train_affinity
from freemask.refine.affinity import AffinityNet, place_affinity, to_device, to_tensor

META = Placement(torch.device("meta"))


class DeviceSpy(torch.nn.Module):
    """Stands in for AffinityNet: its parameter follows ``.to()``; it records where each image
    arrives and answers with CPU features (with gradients, so training can step)."""

    seen: ClassVar[list[torch.device]] = []

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        DeviceSpy.seen.append(image.device)
        height, width = image.shape[2] // 4, image.shape[3] // 4
        return torch.rand(
            1, 8, height, width, generator=torch.Generator().manual_seed(0)
        ).requires_grad_()


def examples():
    rng = np.random.default_rng(0)
    soft = np.zeros((1, 32, 32), np.float32)
    soft[0, 8:24, 8:24] = 1.0
    for _ in range(3):
        yield rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), soft


def test_placing_moves_every_parameter_and_the_network_runs_there() -> None:
    model = place_affinity(AffinityNet(), META)
    assert all(t.device.type == "meta" for t in [*model.parameters(), *model.buffers()])
    image = to_device(to_tensor(np.zeros((32, 32, 3), np.uint8)), META)
    assert model(image).device.type == "meta"


def test_training_sends_every_image_to_the_placed_network(monkeypatch) -> None:
    monkeypatch.setattr("freemask.refine.training.AffinityNet", DeviceSpy)
    DeviceSpy.seen = []
    model, log = train_affinity(
        examples, epochs=2, learning_rate=1e-3, radius=2, thresholds=(0.3, 0.7), placement=META
    )
    assert DeviceSpy.seen == [torch.device("meta")] * 6
    assert model.anchor.device.type == "meta" and len(log.epoch_losses) == 2


def test_refinement_runs_the_network_on_its_device_and_walks_on_the_cpu() -> None:
    DeviceSpy.seen = []
    refiner = AffinityRefiner(DeviceSpy(), radius=2, logt=2, placement=META)
    assert refiner.model.anchor.device.type == "meta"
    image, soft = next(examples())
    probabilities = refiner.refine(image, soft)
    assert DeviceSpy.seen == [torch.device("meta")]
    assert probabilities.shape == (2, 32, 32) and np.allclose(probabilities.sum(axis=0), 1.0)


@pytest.mark.gpu
def test_affinity_trains_and_refines_on_cuda() -> None:
    cuda = Placement(torch.device("cuda"), torch.bfloat16)
    model, log = train_affinity(
        examples, epochs=2, learning_rate=1e-3, radius=2, thresholds=(0.3, 0.7), placement=cuda
    )
    assert next(model.parameters()).device.type == "cuda"
    assert all(np.isfinite(log.epoch_losses))
    image, soft = next(examples())
    probabilities = AffinityRefiner(model, radius=2, logt=2, placement=cuda).refine(image, soft)
    assert probabilities.shape == (2, 32, 32) and np.allclose(probabilities.sum(axis=0), 1.0)
