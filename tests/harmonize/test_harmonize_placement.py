"""PCTNet runs where harmonize.device says; the colour transform is applied in fp32 there."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freemask.config import HarmonizeConfig
from freemask.devices import Placement
from freemask.errors import FreemaskError
from freemask.harmonize.pctnet import PCTNet, PCTNetHarmonizer
from freemask.harmonize.stage import make_harmonizer


def scene(size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    mask = np.zeros((size, size), bool)
    mask[12:36, 10:30] = True
    return rng.integers(0, 255, (size, size, 3), dtype=np.uint8), mask


def test_every_tensor_of_a_harmonization_is_on_the_placed_device() -> None:
    # On the meta device any input left on the CPU would fail the first operation it meets.
    harmonizer = PCTNetHarmonizer(PCTNet(), Placement(torch.device("meta")))
    model = harmonizer.model
    assert all(t.device.type == "meta" for t in [*model.parameters(), *model.buffers()])
    result = harmonizer.harmonized(*scene())
    assert result.device.type == "meta" and result.shape == (1, 3, 48, 48)
    assert result.dtype == torch.float32


def test_pctnet_on_a_machine_without_cuda_is_refused_when_cuda_is_asked(
    tmp_path, monkeypatch
) -> None:
    torch.save(PCTNet().state_dict(), tmp_path / "PCTNet_ViT.pth")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = HarmonizeConfig(method="pctnet", weights=str(tmp_path), device="cuda")
    with pytest.raises(FreemaskError, match=r"harmonize.device 'cuda': CUDA is not available"):
        make_harmonizer(config)
    # The classical method has no network: its device setting is never consulted.
    assert make_harmonizer(config.model_copy(update={"method": "color_transfer"})) is not None


@pytest.mark.gpu
def test_pctnet_on_cuda_matches_the_cpu_within_low_precision() -> None:
    torch.manual_seed(0)
    model = PCTNet()
    image, mask = scene()
    on_cpu = PCTNetHarmonizer(model).harmonize(image, mask)
    cuda = Placement(torch.device("cuda"), torch.bfloat16)
    on_gpu = PCTNetHarmonizer(model, cuda).harmonize(image, mask)
    assert on_gpu.dtype == np.uint8 and np.array_equal(on_gpu[~mask], image[~mask])
    assert np.abs(on_gpu.astype(int) - on_cpu.astype(int)).mean() < 4.0
