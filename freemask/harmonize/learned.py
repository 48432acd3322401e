"""A small learned harmonizer: a tiny CNN predicts the light ratio that re-lights one object.

A pasted object was lit by another light than its scene. ``LightNet`` looks at a downsampled
copy of the image (``input_size`` square, area-averaged) with the object's mask, the other
objects' mask and two coordinate channels, and predicts, per colour channel, the log of the
gain that takes the object's light to the scene's: a plane over the image, ``a + b (x - cx) +
c (y - cy)`` about the object's centroid (nine numbers: gain, and its slope across and down).
Lights are per-channel gains that vary smoothly over the image (a von Kries transform, as
``freemask.toyworld.render.Light`` lights every pixel), so the plane is applied to the
full-resolution pixels, at any image size, and nothing is resampled. Region-aware pooling, in
RainNet's spirit, reads the two lights: the encoder's features are averaged over the object and
over the background (other objects left out), with their first moments about the centroid
(which way the light falls off), and over the object's brightest features (max pooling). About
0.2 M parameters; weights load from safetensors only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from freemask.errors import FreemaskError

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
INPUTS = 7  # RGB, the object's mask, the other objects' mask, x, y
PARAMETERS = 9  # per channel: log gain at the centroid, its slope along x and along y
MOMENT_SCALE = 4.0  # coordinates (-0.5..0.5) times this: moments on the features' scale


@dataclass(frozen=True)
class LightNetSettings:
    """The network's shape: encoder width, MLP width and the size it reads images at."""

    width: int = 32
    hidden: int = 128
    input_size: int = 64


def _conv(inputs: int, outputs: int, stride: int = 1) -> nn.Module:
    return nn.Sequential(nn.Conv2d(inputs, outputs, 3, stride, 1), nn.ReLU(inplace=True))


def coordinates(height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[2, H, W]: x and y of each pixel centre in -0.5..0.5 (as ``Light.field`` measures)."""
    ys = torch.linspace(-0.5, 0.5, height, device=device)
    xs = torch.linspace(-0.5, 0.5, width, device=device)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y])


def centroid(mask: torch.Tensor) -> torch.Tensor:
    """[B, 2]: the (x, y) centre of each mask [B, 1, H, W] in -0.5..0.5 (0, 0 when empty)."""
    grid = coordinates(*mask.shape[-2:], device=mask.device)[None]
    area = mask.sum((2, 3)).clamp_min(1e-6)
    return (mask * grid).sum((2, 3)) / area


class LightNet(nn.Module):
    """Predicts the per-channel log-gain plane [B, 9] that re-lights the masked object."""

    def __init__(self, width: int = 32, hidden: int = 128, input_size: int = 64):
        super().__init__()
        self.input_size = input_size
        wide = 2 * width
        self.encoder = nn.Sequential(
            _conv(INPUTS, width),
            _conv(width, width, 2),
            _conv(width, wide),
            _conv(wide, wide, 2),
            _conv(wide, wide),
        )
        pooled = 7 * wide + 2 * 3 + 3  # 3 moments x 2 regions + max; colour means; centroid, area
        self.head = nn.Sequential(
            nn.Linear(pooled, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, PARAMETERS),
        )
        nn.init.zeros_(self.head[-1].weight)  # starts as the identity: no change
        nn.init.zeros_(self.head[-1].bias)

    @classmethod
    def from_settings(cls, settings: LightNetSettings) -> LightNet:
        return cls(settings.width, settings.hidden, settings.input_size)

    def forward(
        self, image: torch.Tensor, mask: torch.Tensor, others: torch.Tensor
    ) -> torch.Tensor:
        """Log-gain planes for images [B, 3, H, W] in [0, 1], masks [B, 1, H, W] in [0, 1]."""
        side = (self.input_size, self.input_size)
        image, mask, others = (
            F.interpolate(t, size=side, mode="area") for t in (image, mask, others)
        )
        grid = coordinates(*side, device=image.device)[None].expand(len(image), -1, -1, -1)
        features = self.encoder(torch.cat([image, mask, others, grid], 1))
        size = features.shape[-2:]
        fore = F.interpolate(mask, size=size, mode="area")
        back = (1 - F.interpolate(mask + others, size=size, mode="area")).clamp_min(0)
        centre = centroid(mask)
        offset = coordinates(*size, device=image.device)[None] - centre[..., None, None]
        offset = offset * MOMENT_SCALE
        pooled = [centre, mask.mean((1, 2, 3))[:, None]]
        for weight in (fore, back):
            total = weight.sum((2, 3)).clamp_min(1e-6)
            pooled.append((weight * features).sum((2, 3)) / total)
            for axis in (0, 1):
                moment = weight * offset[:, axis : axis + 1]
                pooled.append((moment * features).sum((2, 3)) / total)
        pooled.append(features.masked_fill(fore < 0.5, 0).amax((2, 3)))
        full_back = (1 - mask - others).clamp_min(0)
        for weight in (mask, full_back):
            pooled.append((weight * image).sum((2, 3)) / weight.sum((2, 3)).clamp_min(1e-6))
        return self.head(torch.cat(pooled, 1))


def relight(image: torch.Tensor, mask: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """``image`` [B, 3, H, W] in [0, 1] with each pixel's channels multiplied by the gain plane
    ``params`` [B, 9] describes about ``mask``'s centroid, clamped to [0, 1]."""
    grid = coordinates(*image.shape[-2:], device=image.device)[None]
    offset = grid - centroid(mask)[..., None, None]  # [B, 2, H, W]
    gain, slope_x, slope_y = params[:, 0:3], params[:, 3:6], params[:, 6:9]
    log_gain = (
        gain[..., None, None]
        + slope_x[..., None, None] * offset[:, 0:1]
        + slope_y[..., None, None] * offset[:, 1:2]
    )
    return (image * torch.exp(log_gain)).clamp(0.0, 1.0)


class LearnedHarmonizer:
    """Harmonize one object of an RGB uint8 image with a ``LightNet`` (the stage's protocol)."""

    def __init__(self, model: LightNet, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    @torch.no_grad()
    def __call__(self, image: np.ndarray, mask: np.ndarray, others: np.ndarray) -> np.ndarray:
        """``image`` with the pixels of ``mask`` re-lit; every other pixel byte-identical."""
        if not mask.any():
            return image
        pixels = torch.tensor(image, device=self.device)  # a copy: images may be read-only
        pixels = pixels.permute(2, 0, 1)[None].float() / 255.0

        def plane(values: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(values.astype(np.float32))[None, None].to(self.device)

        fore = plane(mask)
        params = self.model(pixels, fore, plane(others & ~mask))
        relit = relight(pixels, fore, params)[0].permute(1, 2, 0)
        relit = (relit * 255).round().byte().cpu().numpy()
        return np.where(mask[..., None], relit, image)


def save_light_net(model: LightNet, settings: LightNetSettings, folder: Path) -> None:
    """Write ``model.safetensors`` and ``config.json`` (the settings) into ``folder``."""
    from safetensors.torch import save_file

    state = {name: value.contiguous() for name, value in model.state_dict().items()}
    save_file(state, folder / WEIGHTS_FILE)
    (folder / CONFIG_FILE).write_text(json.dumps(asdict(settings), indent=2) + "\n")


def load_light_net(folder: str | Path) -> LightNet:
    """The ``LightNet`` in ``folder`` (``model.safetensors`` and ``config.json``). Raises
    FreemaskError naming the folder when it holds no safetensors weights (pickles are never
    loaded) or when they do not fit the config."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        pickled = sorted(p.name for p in folder.glob("*") if p.suffix in {".pth", ".pt", ".bin"})
        hint = f" (only {', '.join(pickled)}: pickles are never loaded)" if pickled else ""
        raise FreemaskError(
            f"harmonize.weights {str(folder)!r}: no {WEIGHTS_FILE}{hint}; a learned harmonizer "
            "ships as a folder with model.safetensors and config.json "
            "(python -m freemask.toyworld.harmonizer writes one)"
        )
    try:
        settings = LightNetSettings(**json.loads((folder / CONFIG_FILE).read_text()))
        model = LightNet.from_settings(settings)
        model.load_state_dict(load_file(weights))
    except (OSError, ValueError, TypeError, RuntimeError, SafetensorError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise FreemaskError(
            f"harmonize.weights {str(folder)!r}: not a learned harmonizer ({first})"
        ) from None
    return model.eval()
