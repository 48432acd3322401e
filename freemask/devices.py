"""Where a stage's model runs: the ``device`` and ``precision`` settings, resolved in one place.

``device``: "auto" (CUDA when ``torch.cuda.is_available()``, else the CPU), "cpu", "cuda" or
"cuda:N". ``precision``: "auto" (on CUDA bf16 where the GPU supports it, else fp16; fp32 on the
CPU, so CPU results stay exactly those of a plain fp32 run), "fp32", "bf16" or "fp16". Reduced
precision is autocast: weights stay fp32, matmuls and convolutions run in the low dtype; fp16
training scales its loss (``grad_scaler``). Asking for CUDA on a machine without it is an error
that says so, not a silent fall-back to the CPU.
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Protocol

import torch

from freemask.errors import FreemaskError

DEVICE_NAMES = re.compile(r"auto|cpu|cuda(:\d+)?")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class DeviceSettings(Protocol):
    """A config section with the two placement settings (segment, refine, harmonize)."""

    device: str
    precision: str


@dataclass(frozen=True)
class Placement:
    """A resolved device and the autocast dtype on it (None: plain fp32)."""

    device: torch.device
    dtype: torch.dtype | None = None

    @property
    def on_cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self) -> AbstractContextManager:
        """Autocast to ``dtype`` on the device; does nothing when ``dtype`` is None."""
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A loss scaler that is active only for fp16 on CUDA (bf16 and fp32 need none)."""
        enabled = self.on_cuda and self.dtype == torch.float16
        return torch.amp.GradScaler(self.device.type, enabled=enabled)

    def memory_format(self) -> torch.memory_format:
        """channels_last for convolutions on CUDA (tensor cores read NHWC), else as is."""
        return torch.channels_last if self.on_cuda else torch.contiguous_format


CPU = Placement(torch.device("cpu"))


def resolve_device(device: str, field: str = "device") -> torch.device:
    """The torch device a ``device`` setting names; FreemaskError naming ``field`` for a name
    that is not one, or for CUDA on a machine without it (or without that GPU index)."""
    if not DEVICE_NAMES.fullmatch(device):
        raise FreemaskError(
            f"{field} {device!r}: not a device; expected 'auto', 'cpu', 'cuda' or 'cuda:N'"
        )
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise FreemaskError(
                f"{field} {device!r}: CUDA is not available on this machine (no GPU, or a "
                "CPU-only torch build); set it to 'auto' or 'cpu'"
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise FreemaskError(f"{field} {device!r}: this machine has {count} GPU(s)")
    return resolved


def resolve_precision(
    precision: str, device: torch.device, field: str = "precision"
) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None: fp32, no autocast)."""
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision not in PRECISIONS:
        raise FreemaskError(
            f"{field} {precision!r}: expected one of 'auto', {', '.join(map(repr, PRECISIONS))}"
        )
    return PRECISIONS[precision]


def placement_of(settings: DeviceSettings, section: str) -> Placement:
    """The placement a config section asks for (``section`` names it in errors)."""
    device = resolve_device(settings.device, f"{section}.device")
    return Placement(device, resolve_precision(settings.precision, device, f"{section}.precision"))
