"""Device and precision settings: 'auto' follows CUDA, a missing GPU is a clear error."""

from __future__ import annotations

import pytest
import torch

from freemask.config import GenerateConfig, HarmonizeConfig, RefineConfig, SegmentConfig
from freemask.devices import (
    CPU,
    Placement,
    placement_of,
    resolve_device,
    resolve_precision,
)
from freemask.errors import ConfigError, FreemaskError


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def one_gpu(monkeypatch):
    """A machine that reports one GPU (nothing is run on it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def test_auto_is_the_cpu_without_cuda_and_the_gpu_with_it(no_cuda, monkeypatch) -> None:
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_asking_for_cuda_without_it_names_the_field(no_cuda) -> None:
    with pytest.raises(FreemaskError, match=r"segment.device 'cuda': CUDA is not available"):
        resolve_device("cuda", "segment.device")
    with pytest.raises(FreemaskError, match=r"refine.device 'cuda:0': CUDA is not available"):
        placement_of(RefineConfig(device="cuda:0"), "refine")


def test_a_gpu_index_beyond_the_machine_is_refused(one_gpu) -> None:
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(FreemaskError, match=r"'cuda:1': this machine has 1 GPU\(s\)"):
        resolve_device("cuda:1", "harmonize.device")


def test_a_name_that_is_no_device_is_refused_by_config_and_resolver(tmp_path) -> None:
    with pytest.raises(FreemaskError, match="not a device; expected 'auto', 'cpu', 'cuda'"):
        resolve_device("gpu", "segment.device")
    path = tmp_path / "run.yaml"
    path.write_text("classes: [cat]\nsegment:\n  device: gpu\n")
    from freemask.config import load_config

    with pytest.raises(
        ConfigError, match=r"run.yaml:3: segment.device: got 'gpu'; expected 'auto'"
    ):
        load_config(path, environ={})
    for section in (GenerateConfig, RefineConfig, HarmonizeConfig, SegmentConfig):
        with pytest.raises(ValueError, match="expected 'auto', 'cpu', 'cuda' or 'cuda:N'"):
            section(device="mps")
        assert section().device == "auto"


def test_generate_resolves_its_device_with_the_shared_helper(no_cuda) -> None:
    from freemask.models import load_sd_pipeline

    with pytest.raises(FreemaskError, match=r"generate.device 'cuda': CUDA is not available"):
        load_sd_pipeline(GenerateConfig(model_id="no/such-model", device="cuda"))


def test_auto_precision_is_fp32_on_the_cpu_and_bf16_or_fp16_on_gpus(monkeypatch) -> None:
    assert resolve_precision("auto", torch.device("cpu")) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_precision("auto", torch.device("cuda")) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_precision("auto", torch.device("cuda")) == torch.float16
    assert resolve_precision("fp32", torch.device("cuda")) is None
    assert resolve_precision("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(FreemaskError, match=r"segment.precision 'fp8'"):
        resolve_precision("fp8", torch.device("cpu"), "segment.precision")


def test_cpu_placement_computes_in_fp32_and_a_low_precision_one_autocasts() -> None:
    first, second = torch.randn(4, 4), torch.randn(4, 4)
    assert placement_of(SegmentConfig(device="cpu"), "segment") == CPU
    with CPU.autocast():
        assert not torch.is_autocast_enabled("cpu")
        assert (first @ second).dtype == torch.float32
    with Placement(torch.device("cpu"), torch.bfloat16).autocast():
        assert (first @ second).dtype == torch.bfloat16
    assert not CPU.grad_scaler().is_enabled()
    assert CPU.memory_format() == torch.contiguous_format
    assert Placement(torch.device("cuda")).memory_format() == torch.channels_last
