"""AffinityNet: learn which nearby pixels belong together from the masks' confident parts.

Labels come from the soft masks themselves: on the network's feature grid (1/4 of the image),
a cell is confident foreground of instance k when instance k's soft mask exceeds the high
threshold, confident background when every soft mask is under the low threshold, unlabelled
otherwise. Pairs of cells within ``radius`` get affinity 1 (same confident label) or 0
(different); pairs with an unlabelled cell are ignored. The network predicts the affinity of a
pair as exp(-mean |f_i - f_j|) of its features and is trained with the balanced loss
bg/4 + fg/4 + neg/2 (positive background pairs, positive foreground pairs, negative pairs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from freemask.devices import Placement

STRIDE = 4
IGNORE = 255


def conv_block(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1):
    """3x3 convolution, group norm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, dilation, dilation, bias=False),
        nn.GroupNorm(8, out_channels),
        nn.ReLU(inplace=True),
    )


class AffinityNet(nn.Module):
    """A light convolutional backbone: RGB image -> ``feature_dim`` features at stride 4.

    Dilated layers widen the view without shrinking the grid; features from two depths are
    concatenated so both colour edges and larger context reach the affinity.
    """

    def __init__(self, width: int = 32, feature_dim: int = 32):
        super().__init__()
        self.stem = nn.Sequential(conv_block(3, width, 2), conv_block(width, width))
        self.down = nn.Sequential(conv_block(width, 2 * width, 2), conv_block(2 * width, 2 * width))
        self.context = nn.Sequential(
            conv_block(2 * width, 2 * width, dilation=2),
            conv_block(2 * width, 2 * width, dilation=4),
        )
        self.head = nn.Conv2d(4 * width + width, feature_dim, 1)
        # The cell's mean colour joins the features with a learned weight: colour edges
        # separate objects from the first step of training.
        self.colour_weight = nn.Parameter(torch.tensor(float(feature_dim)))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Features [batch, feature_dim + 3, H/4, W/4] of images [batch, 3, H, W] in [0, 1]."""
        stem = self.stem(image - 0.5)
        down = self.down(stem)
        context = self.context(down)
        grid = down.shape[2:]
        stem_small = F.adaptive_avg_pool2d(stem, grid)
        colour = F.adaptive_avg_pool2d(image, grid) * self.colour_weight
        return torch.cat([self.head(torch.cat([stem_small, down, context], dim=1)), colour], dim=1)


def place_affinity(model: AffinityNet, placement: Placement) -> AffinityNet:
    """The network on ``placement.device`` (convolution weights channels_last on CUDA)."""
    return model.to(device=placement.device, memory_format=placement.memory_format())


def to_device(images: torch.Tensor, placement: Placement) -> torch.Tensor:
    """An image batch [B, 3, H, W] on ``placement.device``, in its memory format."""
    return images.to(placement.device, memory_format=placement.memory_format())


def pair_offsets(radius: int) -> list[tuple[int, int]]:
    """(dy, dx) offsets to the neighbours within ``radius``, one of each symmetric pair."""
    return [
        (dy, dx)
        for dy in range(0, radius + 1)
        for dx in range(-radius, radius + 1)
        if (dy > 0 or dx > 0) and dy * dy + dx * dx <= radius * radius
    ]


def shifted_pairs(grid: torch.Tensor, offset: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(values at i, values at i + offset) over every cell i whose neighbour is on the grid.

    ``grid`` is [..., H, W]; both results are [..., H - dy, W - |dx|].
    """
    dy, dx = offset
    height, width = grid.shape[-2:]
    left, right = max(0, -dx), width - max(0, dx)
    first = grid[..., : height - dy, left:right]
    second = grid[..., dy:, left + dx : right + dx]
    return first, second


def affinity_labels(soft: np.ndarray, grid: tuple[int, int], low: float, high: float) -> np.ndarray:
    """Per feature-grid cell: k+1 for confident instance k, 0 confident background, 255 unknown.

    ``soft`` is [instances, H, W] in [0, 1]; it is area-averaged onto ``grid`` (rows, cols).
    """
    tensor = torch.from_numpy(soft.astype(np.float32))[None]
    small = F.adaptive_avg_pool2d(tensor, grid)[0].numpy()
    labels = np.full(grid, IGNORE, dtype=np.uint8)
    best = small.argmax(axis=0)
    top = small.max(axis=0)
    labels[top < low] = 0
    confident = top > high
    labels[confident] = best[confident] + 1
    return labels


def pair_affinity(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """exp(-mean |f_i - f_j|) over the feature dimension (dim 0 or 1 of [B, D, ...])."""
    return torch.exp(-(first - second).abs().mean(dim=-3))


@dataclass
class PairLoss:
    """The balanced affinity loss and its parts."""

    total: torch.Tensor
    background: float
    foreground: float
    negative: float


def affinity_loss(features: torch.Tensor, labels: torch.Tensor, radius: int) -> PairLoss:
    """Balanced loss over labelled pairs: bg/4 + fg/4 + neg/2 (absent parts count zero).

    ``features`` [1, D, h, w], ``labels`` [h, w] (0 background, k instance, 255 unknown).
    """
    sums = {"bg": [], "fg": [], "neg": []}
    for offset in pair_offsets(radius):
        first_f, second_f = shifted_pairs(features[0], offset)
        first_l, second_l = shifted_pairs(labels, offset)
        known = (first_l != IGNORE) & (second_l != IGNORE)
        if not known.any():
            continue
        affinity = pair_affinity(first_f, second_f).clamp(1e-5, 1 - 1e-5)
        same = first_l == second_l
        sums["bg"].append(-torch.log(affinity[known & same & (first_l == 0)]))
        sums["fg"].append(-torch.log(affinity[known & same & (first_l > 0)]))
        sums["neg"].append(-torch.log(1 - affinity[known & ~same]))
    means = {}
    for name, parts in sums.items():
        values = torch.cat(parts) if parts else torch.zeros(0)
        means[name] = values.mean() if values.numel() else features.sum() * 0.0
    total = means["bg"] / 4 + means["fg"] / 4 + means["neg"] / 2
    parts = [float(means[name].detach()) for name in ("bg", "fg", "neg")]
    return PairLoss(total, *parts)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> [1, 3, H, W] float in [0, 1]."""
    return torch.tensor(image).permute(2, 0, 1)[None].float() / 255.0
