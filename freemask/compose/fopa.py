"""FOPA (Fast Object Placement Assessment): a network that scores every placement at once.

Two ResNet-18 encoders read the background (RGB plus an empty mask channel) and the scaled
foreground (RGB plus its mask, centred on a canvas the background's size). A U-Net decoder
brings background features back to the input resolution, and dynamic 3x3 convolutions whose
kernels come from the foreground's features fuse the two; a 1x1 classifier gives, per pixel,
how plausible it is to centre the object there. For 16 scales (k/18 of the background, k =
1..16) one batch gives 16 heatmaps of 256x256; centres closer to the border than half the
object are ruled out, and one of the top-k (scale, position) candidates is drawn.

Module and parameter names follow the published FOPA checkpoint, so its ``best_weight.pth``
loads as it is; ``load_sopa_encoder`` loads the SOPA classifier's ResNet-18 (``SOPA.pth.tar``)
into the background encoder, the published way to initialise training. Weights load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from freemask.compose.placement import Box, PlacementPrior, occlusion
from freemask.compose.scene import Cutout
from freemask.errors import FreemaskError

INPUT_SIZE = 256
SCALES = tuple(k / 18 for k in range(1, 17))
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FOPA_FILE = "best_weight.pth"


class BasicBlock(nn.Module):
    """ResNet's two-convolution residual block."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


def resnet_stage(inplanes: int, planes: int, stride: int) -> nn.Sequential:
    """One ResNet-18 stage: two basic blocks, the first one striding."""
    return nn.Sequential(BasicBlock(inplanes, planes, stride), BasicBlock(planes, planes))


class ConvBNReLU(nn.Module):
    """3x3 convolution, batch norm, ReLU (stored as ``basicconv`` like the published weights)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.basicconv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.basicconv(x)


class DynamicFusion(nn.Module):
    """Filters background features with 3x3 depthwise kernels made from foreground features."""

    def __init__(self, channels: int = 64, out_channels: int = 512, kernel_size: int = 3):
        super().__init__()
        self.kernel_size = kernel_size
        self.fuse = nn.Conv2d(channels, out_channels, 3, 1, 1)
        # The published weights spell this name so; it must stay for them to load.
        self.gernerate_kernel = nn.Sequential(nn.Conv2d(channels, channels, 1))

    def forward(self, background: torch.Tensor, foreground: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = background.shape
        pooled = F.adaptive_avg_pool2d(foreground, self.kernel_size)
        kernels = self.gernerate_kernel(pooled).reshape(-1, 1, self.kernel_size, self.kernel_size)
        filtered = F.conv2d(
            background.reshape(1, -1, height, width),
            kernels,
            padding=self.kernel_size // 2,
            groups=batch * channels,
        )
        return self.fuse(filtered.reshape(batch, channels, height, width))


def _upsample_add(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    return high + F.interpolate(low, size=high.shape[2:], mode="bilinear", align_corners=False)


class FopaNet(nn.Module):
    """The FOPA network (ResNet-18 encoders, U-Net decoder, dynamic fusion, 2-class head)."""

    def __init__(self) -> None:
        super().__init__()
        self.bg_encoder1 = nn.Sequential(
            nn.Conv2d(4, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)
        )
        self.bg_encoder2 = nn.Sequential(nn.MaxPool2d(3, 2, 1), resnet_stage(64, 64, 1))
        self.bg_encoder4 = resnet_stage(64, 128, 2)
        self.bg_encoder8 = resnet_stage(128, 256, 2)
        self.bg_encoder16 = resnet_stage(256, 512, 2)
        self.fg_encoder1 = nn.Sequential(nn.Conv2d(4, 64, 7, 2, 3, bias=False))
        self.fg_encoder2 = nn.Sequential(nn.BatchNorm2d(64), nn.ReLU(inplace=True))
        self.fg_encoder4 = nn.Sequential(nn.MaxPool2d(3, 2, 1), resnet_stage(64, 64, 1))
        self.fg_encoder8 = resnet_stage(64, 128, 2)
        self.fg_encoder16 = resnet_stage(128, 256, 2)
        self.fg_encoder32 = resnet_stage(256, 512, 2)
        # Present in the published weights though the forward pass does not use it.
        self.mask_conv = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
        self.fg_trans16 = nn.Conv2d(512, 64, 1)
        self.fg_trans8 = nn.Conv2d(256, 64, 1)
        self.selfdc_16 = DynamicFusion()
        self.selfdc_8 = DynamicFusion()
        self.upconv16 = ConvBNReLU(512, 256)
        self.upconv8 = ConvBNReLU(256, 128)
        self.upconv4 = ConvBNReLU(128, 64)
        self.upconv2 = ConvBNReLU(64, 64)
        self.upconv1 = ConvBNReLU(64, 64)
        self.classifier = nn.Conv2d(512, 2, 1)

    def forward(
        self, background: torch.Tensor, foreground: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Logits [batch, 2, H, W] for (normalised) background, foreground and mask [0, 1]."""
        bg1 = self.bg_encoder1(torch.cat([background, torch.zeros_like(mask)], dim=1))
        bg2 = self.bg_encoder2(bg1)
        bg4 = self.bg_encoder4(bg2)
        bg8 = self.bg_encoder8(bg4)
        bg16 = self.bg_encoder16(bg8)
        fg = self.fg_encoder2(self.fg_encoder1(torch.cat([foreground, mask], dim=1)))
        fg16 = self.fg_encoder16(self.fg_encoder8(self.fg_encoder4(fg)))
        fg32 = self.fg_encoder32(fg16)
        decoded = _upsample_add(self.upconv16(bg16), bg8)
        decoded = _upsample_add(self.upconv8(decoded), bg4)
        decoded = _upsample_add(self.upconv4(decoded), bg2)
        half = _upsample_add(self.upconv2(decoded), bg1)
        full = self.upconv1(
            F.interpolate(half, scale_factor=2, mode="bilinear", align_corners=True)
        )
        fused = _upsample_add(
            self.selfdc_16(half, self.fg_trans8(fg16)), self.selfdc_8(full, self.fg_trans16(fg32))
        )
        return self.classifier(fused)


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FreemaskError(f"{path}: weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle that needs more than tensors is refused here
        raise FreemaskError(f"{path}: cannot load weights safely ({exc})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise FreemaskError(f"{path}: expected a state dict, got {type(state).__name__}")
    return {key.removeprefix("module."): value for key, value in state.items()}


def load_fopa(weights: str | Path) -> FopaNet:
    """A FopaNet with the published weights from a file or a folder holding ``best_weight.pth``.

    Raises FreemaskError naming a missing file or the parameters the file lacks or adds.
    """
    path = Path(weights)
    if path.is_dir():
        path = path / FOPA_FILE
    state = _load_state(path)
    model = FopaNet()
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise FreemaskError(
            f"{path}: not a FOPA checkpoint: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    model.load_state_dict(state)
    return model.eval()


def load_sopa_encoder(model: FopaNet, weights: str | Path) -> None:
    """Load a SOPA ResNet-18 checkpoint (4-channel ``conv1``, ``layer1..4``) into the background
    encoder, as FOPA's training starts. Raises FreemaskError if a needed tensor is absent."""
    path = Path(weights)
    state = _load_state(path)
    renames = {
        "conv1.": "bg_encoder1.0.",
        "bn1.": "bg_encoder1.1.",
        "layer1.": "bg_encoder2.1.",
        "layer2.": "bg_encoder4.",
        "layer3.": "bg_encoder8.",
        "layer4.": "bg_encoder16.",
    }
    mapped = {}
    for key, value in state.items():
        for old, new in renames.items():
            if key.startswith(old):
                mapped[new + key[len(old) :]] = value
    wanted = [key for key in model.state_dict() if key.startswith("bg_encoder")]
    missing = [key for key in wanted if key not in mapped]
    if missing:
        raise FreemaskError(f"{path}: not a SOPA ResNet-18 checkpoint: missing {missing[:5]}")
    model.load_state_dict(mapped, strict=False)


def _normalise(image: np.ndarray) -> torch.Tensor:
    tensor = torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return (tensor - mean) / std


def scaled_sizes(
    cutout: Cutout, image_size: tuple[int, int], scales: tuple[float, ...] = SCALES
) -> list[tuple[int, int]]:
    """(width, height) of the object at each scale: its longer relative side = scale."""
    rows, cols = image_size
    height, width = cutout.label.shape
    sizes = []
    for scale in scales:
        if height / width > rows / cols:
            new_height = rows * scale
            new_width = new_height / height * width
        else:
            new_width = cols * scale
            new_height = new_width / width * height
        sizes.append((max(int(new_width), 1), max(int(new_height), 1)))
    return sizes


class FopaPlacer:
    """Placement by FOPA heatmaps over 16 scales; draws one of the ``top_k`` best candidates.

    Candidates that would hide more than half of an already placed object are passed over.
    """

    def __init__(
        self,
        model: FopaNet,
        top_k: int = 50,
        device: str = "cpu",
        input_size: int = INPUT_SIZE,
        scales: tuple[float, ...] = SCALES,
    ):
        self.model = model.to(device).eval()
        self.top_k = top_k
        self.device = device
        self.input_size = input_size
        self.scales = scales

    @torch.no_grad()
    def heatmaps(self, background: np.ndarray, cutout: Cutout) -> tuple[np.ndarray, list]:
        """[scales, side, side] placement scores (border rule applied) and object sizes per scale."""
        rows, cols = background.shape[:2]
        sizes = scaled_sizes(cutout, (rows, cols), self.scales)
        side = (self.input_size, self.input_size)
        size = self.input_size
        bg = _normalise(cv2.resize(background, side, interpolation=cv2.INTER_LINEAR))
        foregrounds, masks = [], []
        for width, height in sizes:
            canvas = np.zeros((rows, cols, 3), dtype=np.uint8)
            mask = np.zeros((rows, cols), dtype=np.float32)
            top, left = (rows - height) // 2, (cols - width) // 2
            patch = cv2.resize(cutout.image, (width, height), interpolation=cv2.INTER_LINEAR)
            alpha = cv2.resize(cutout.alpha, (width, height), interpolation=cv2.INTER_LINEAR)
            canvas[top : top + height, left : left + width] = patch[: rows - top, : cols - left]
            mask[top : top + height, left : left + width] = alpha[: rows - top, : cols - left]
            foregrounds.append(_normalise(cv2.resize(canvas, side, interpolation=cv2.INTER_LINEAR)))
            masks.append(torch.from_numpy(cv2.resize(mask, side, interpolation=cv2.INTER_LINEAR)))
        batch = len(sizes)
        logits = self.model(
            bg[None].expand(batch, -1, -1, -1).to(self.device),
            torch.stack(foregrounds).to(self.device),
            torch.stack(masks)[:, None].to(self.device),
        )
        scores = logits.softmax(dim=1)[:, 1].cpu().numpy()
        ruled = np.zeros_like(scores)
        for index, (width, height) in enumerate(sizes):
            half_h = int(height / rows * size / 2)
            half_w = int(width / cols * size / 2)
            if 2 * half_h < size and 2 * half_w < size:
                inner = (slice(half_h, size - half_h), slice(half_w, size - half_w))
                ruled[index][inner] = scores[index][inner]
        return ruled, sizes

    def place(
        self,
        background: np.ndarray,
        cutout: Cutout,
        prior: PlacementPrior,
        occupied: list[Box],
        rng: np.random.Generator,
    ) -> Box | None:
        rows, cols = background.shape[:2]
        scores, sizes = self.heatmaps(background, cutout)
        order = np.argsort(-scores, axis=None, kind="stable")
        candidates: list[Box] = []
        for flat in order:
            if len(candidates) == self.top_k or scores.flat[flat] <= 0:
                break
            scale, row, col = np.unravel_index(flat, scores.shape)
            width, height = sizes[scale]
            x = int(col / self.input_size * cols - width / 2)
            y = int(row / self.input_size * rows - height / 2)
            box = (min(max(x, 0), cols - width), min(max(y, 0), rows - height), width, height)
            if min(width, height) >= 4 and occlusion(box, occupied) <= 0.5:
                candidates.append(box)
        if not candidates:
            return None
        return candidates[int(rng.integers(len(candidates)))]
