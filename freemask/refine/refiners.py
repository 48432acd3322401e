"""Refiners: sharpen soft instance masks to the image's edges, behind one call.

``refine(image, soft) -> probabilities``: ``soft`` is [instances, H, W] in [0, 1]; the result is
[1 + instances, H, W], channel 0 the background, summing to 1 per pixel. The background score
is 1 - max(instance scores). ``AffinityRefiner`` propagates the scores by a random walk over a
trained AffinityNet's affinities; ``GuidedFilterRefiner`` filters them with the image as guide.
``refine_soft`` wraps either for the stage: it limits the refiner to the attention's unsure band
and refuses a refinement that breaks the attention's confident seeds.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from freemask.devices import CPU, Placement
from freemask.refine.affinity import IGNORE, AffinityNet, place_affinity, to_device, to_tensor
from freemask.refine.guided_filter import guided_filter
from freemask.refine.random_walk import propagate, transition_matrix


class Refiner(Protocol):
    """Turns an image and its soft instance masks into per-pixel class probabilities."""

    def refine(self, image: np.ndarray, soft: np.ndarray) -> np.ndarray: ...


def class_scores(soft: np.ndarray) -> np.ndarray:
    """[1 + instances, H, W]: background (1 - max instance) then the instances."""
    background = 1.0 - soft.max(axis=0, keepdims=True)
    return np.concatenate([background, soft], axis=0).astype(np.float32)


def _normalise(scores: np.ndarray) -> np.ndarray:
    scores = np.clip(scores, 0.0, None)
    return scores / np.maximum(scores.sum(axis=0, keepdims=True), 1e-8)


def band_labels(soft: np.ndarray, low: float, high: float) -> np.ndarray:
    """Per pixel of soft masks [instances, H, W]: k + 1 where instance k is above ``high`` (and
    highest), 0 where every instance is below ``low``, 255 (unsure) in between."""
    labels = np.full(soft.shape[1:], IGNORE, np.uint8)
    top = soft.max(axis=0)
    labels[top < low] = 0
    confident = top > high
    labels[confident] = soft.argmax(axis=0)[confident] + 1
    return labels


def seed_agreement(soft: np.ndarray, refined: np.ndarray, low: float, high: float) -> float:
    """How much of the attention's confident seeds the refinement keeps: the lower of the
    shares of foreground and of background seed pixels whose label is unchanged (1.0 when a
    kind of seed is absent)."""
    before = band_labels(soft, low, high)
    after = band_labels(refined, low, high)
    shares = []
    for seeds in (before > 0) & (before != IGNORE), before == 0:
        if seeds.any():
            shares.append(float((after[seeds] == before[seeds]).mean()))
    return min(shares, default=1.0)


def refine_soft(
    refiner: Refiner,
    image: np.ndarray,
    soft: np.ndarray,
    *,
    thresholds: tuple[float, float],
    scope: str,
    min_seed_agreement: float,
) -> tuple[np.ndarray, float]:
    """Refined soft masks [instances, H, W] in [0, 1] and the seed agreement they had.

    ``scope: band`` lets the refiner decide only where the attention is unsure (between the
    ``thresholds``); ``all`` everywhere. A refinement that keeps less than
    ``min_seed_agreement`` of the confident seeds is not trusted: the soft masks come back as
    they were.
    """
    low, high = thresholds
    refined = refiner.refine(image, soft)[1:]
    if scope == "band":
        top = soft.max(axis=0)
        unsure = (top >= low) & (top <= high)
        refined = np.where(unsure[None], refined, soft)
    agreement = seed_agreement(soft, refined, low, high)
    if agreement < min_seed_agreement:
        return soft, agreement
    return np.clip(refined, 0.0, 1.0).astype(np.float32), agreement


class GuidedFilterRefiner:
    """Guided filter of each class score with the colour image as guide; no training.

    The window radius is ``radius_fraction`` of the image's shorter side (8 px at 128 px).
    """

    def __init__(self, radius_fraction: float = 1 / 16, eps: float = 1e-3):
        self.radius_fraction = radius_fraction
        self.eps = eps

    def refine(self, image: np.ndarray, soft: np.ndarray) -> np.ndarray:
        return self.filter(image, class_scores(soft))

    def filter(self, image: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Guided-filter each channel of ``scores`` [C, H, W] and renormalise."""
        radius = max(1, round(self.radius_fraction * min(image.shape[:2])))
        channels = [guided_filter(image, channel, radius, self.eps) for channel in scores]
        return _normalise(np.stack(channels))


class AffinityRefiner:
    """Random walk on a trained AffinityNet's affinities (``beta``, 2^``logt`` steps).

    The walk runs on the network's 1/4 grid; its scores reach full resolution through a
    guided filter on the image, in the role dense CRF plays after the walk in AffinityNet.
    The network runs where ``placement`` says; the walk (a sparse product) on the CPU.
    """

    def __init__(
        self,
        model: AffinityNet,
        radius: int = 5,
        beta: float = 8.0,
        logt: int = 8,
        upsample: GuidedFilterRefiner | None = None,
        placement: Placement = CPU,
    ):
        self.model = place_affinity(model, placement).eval()
        self.placement = placement
        self.radius = radius
        self.beta = beta
        self.logt = logt
        self.upsample = upsample or GuidedFilterRefiner()

    @torch.no_grad()
    def features(self, image: np.ndarray) -> torch.Tensor:
        """The network's features [D, h, w] of an RGB image, as fp32 on the CPU."""
        with self.placement.autocast():
            features = self.model(to_device(to_tensor(image), self.placement))[0]
        return features.float().cpu()

    @torch.no_grad()
    def refine(self, image: np.ndarray, soft: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        features = self.features(image)
        grid = features.shape[1:]
        scores = torch.from_numpy(class_scores(soft))[None]
        small = F.adaptive_avg_pool2d(scores, grid)[0].reshape(scores.shape[1], -1).numpy()
        walked = propagate(transition_matrix(features, self.radius, self.beta), small, self.logt)
        walked = torch.from_numpy(walked.reshape(-1, *grid))[None]
        full = F.interpolate(walked, size=(height, width), mode="bilinear", align_corners=False)
        return self.upsample.filter(image, _normalise(full[0].numpy()))
