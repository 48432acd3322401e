"""PCTNet (ViT variant): learned harmonization by per-pixel colour transforms.

At 256x256 a small vision transformer (4x4 patches of image + mask, 9 encoder layers of width
256, 2 heads) predicts, per pixel, the 12 parameters of an affine colour transform (a 3x3
matrix and an offset). The parameter map is upsampled (bicubic) to the full image and applied
there, so full-resolution detail is never resampled; the result replaces the masked region.
About 4.8 M parameters. Module and parameter names follow the published ``PCTNet_ViT.pth``
so it loads as it is (``torch.load(weights_only=True)``). The harmonizer runs it where its
``placement`` says (autocast on CUDA); the colour transform is applied in fp32.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from freemask.devices import CPU, Placement
from freemask.errors import FreemaskError

LOW_RESOLUTION = 256
PATCH = 4
PARAMETERS = 12  # 3x3 matrix + 3 offsets
PCTNET_FILE = "PCTNet_ViT.pth"


class Patchify(nn.Module):
    """[B, C, H, W] -> [B, (H/p)(W/p), p*p*C]: non-overlapping p x p patches, channels last."""

    def __init__(self, patch: int = PATCH):
        super().__init__()
        self.patch = patch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        p = self.patch
        patches = x.reshape(batch, channels, height // p, p, width // p, p)
        return patches.permute(0, 2, 4, 3, 5, 1).reshape(batch, -1, p * p * channels)


class ViTHarmonizer(nn.Module):
    """Transformer encoder over image+mask patches; a transposed convolution back to pixels."""

    def __init__(self, output_channels: int = PARAMETERS, dim: int = 256, layers: int = 9):
        super().__init__()
        self.patch_to_embedding = nn.Sequential(Patchify(), nn.Linear(PATCH * PATCH * 4, dim))
        self.transformer_enc = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(dim, nhead=2, dim_feedforward=2 * dim, activation="gelu"),
            num_layers=layers,
            enable_nested_tensor=False,
        )
        self.dec = nn.Sequential(
            nn.ConvTranspose2d(dim, output_channels, kernel_size=PATCH, stride=PATCH), nn.Tanh()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embedded = self.patch_to_embedding(x)  # [B, L, C]
        encoded = self.transformer_enc(embedded.permute(1, 0, 2))  # sequence first
        batch, length, channels = embedded.shape
        side = int(length**0.5)
        return self.dec(encoded.permute(1, 2, 0).reshape(batch, channels, side, side))


class PCTNet(nn.Module):
    """Predicts a per-pixel affine colour transform for the masked region."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = ViTHarmonizer()
        self.get_params = nn.Conv2d(PARAMETERS, PARAMETERS, kernel_size=1)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Transform parameters [B, 12, 256, 256] for an image in [0, 1] and its mask."""
        return self.get_params(self.encoder(torch.cat([image, mask], dim=1)))


def apply_transform(image: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Per pixel: clamp(M x + b, 0, 1), with M = params[0:9] (row-major 3x3), b = params[9:12]."""
    batch, _, height, width = image.shape
    matrix = params[:, :9].reshape(batch, 3, 3, height, width)
    offset = params[:, 9:12]
    return (torch.einsum("bijhw,bjhw->bihw", matrix, image) + offset).clamp(0.0, 1.0)


def load_pctnet(weights: str | Path) -> PCTNet:
    """PCTNet with the published ViT weights (a file, or a folder holding PCTNet_ViT.pth)."""
    path = Path(weights)
    if path.is_dir():
        path = path / PCTNET_FILE
    if not path.is_file():
        raise FreemaskError(f"{path}: weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle needing more than tensors is refused here
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise FreemaskError(
            f"{path}: cannot load weights safely, refused by torch.load(weights_only=True) "
            f"({first})"
        ) from None
    model = PCTNet()
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise FreemaskError(
            f"{path}: not PCTNet ViT weights ({str(exc).splitlines()[0]})"
        ) from None
    return model.eval()


class PCTNetHarmonizer:
    """Harmonize one object of an image with PCTNet, on ``placement``'s device."""

    def __init__(self, model: PCTNet, placement: Placement = CPU):
        self.model = model.to(placement.device).eval()
        self.placement = placement
        self.device = placement.device

    @torch.no_grad()
    def harmonize(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The RGB uint8 image with the masked object harmonized."""
        result = self.harmonized(image, mask)
        return (result[0].permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)

    @torch.no_grad()
    def harmonized(self, image: np.ndarray, mask: np.ndarray) -> torch.Tensor:
        """The harmonized image [1, 3, H, W] in [0, 1], fp32 on the model's device."""
        height, width = mask.shape
        full = torch.tensor(image).permute(2, 0, 1)[None].float().to(self.device) / 255.0
        full_mask = torch.from_numpy(mask.astype(np.float32))[None, None].to(self.device)
        side = (LOW_RESOLUTION, LOW_RESOLUTION)
        small = torch.from_numpy(cv2.resize(image, side, interpolation=cv2.INTER_LINEAR))
        small = small.permute(2, 0, 1)[None].float().to(self.device) / 255.0
        small_mask = torch.from_numpy(
            cv2.resize(mask.astype(np.float32), side, interpolation=cv2.INTER_LINEAR)
        )[None, None].to(self.device)
        with self.placement.autocast():
            params = self.model(small, small_mask)
        params = F.interpolate(
            params.float(), size=(height, width), mode="bicubic", align_corners=False
        )
        return apply_transform(full, params) * full_mask + full * (1 - full_mask)
