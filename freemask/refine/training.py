"""Training AffinityNet on a dataset's own soft masks, and saving or loading its weights.

Training runs where ``placement`` says (the network and each image on its device, channels_last
and autocast on CUDA); the pair loss is computed in fp32, as its log(1 - affinity) needs more
than bf16's 8 bits near affinity 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from safetensors.torch import load, save

from freemask.devices import CPU, Placement
from freemask.errors import FreemaskError
from freemask.refine.affinity import (
    AffinityNet,
    affinity_labels,
    affinity_loss,
    place_affinity,
    to_device,
    to_tensor,
)


@dataclass
class TrainingLog:
    """Mean loss per epoch and the parts of the last epoch's loss."""

    epoch_losses: list[float] = field(default_factory=list)
    parts: dict[str, float] = field(default_factory=dict)


def train_affinity(
    examples: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]],
    *,
    epochs: int,
    learning_rate: float,
    radius: int,
    thresholds: tuple[float, float],
    seed: int = 0,
    placement: Placement = CPU,
) -> tuple[AffinityNet, TrainingLog]:
    """Train on ``examples()`` (called once per epoch; (image HxWx3 uint8, soft [k, H, W])).

    The trained model is returned on ``placement.device``.
    """
    torch.manual_seed(seed)
    model = place_affinity(AffinityNet(), placement)
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
    scaler = placement.grad_scaler()
    low, high = thresholds
    log = TrainingLog()
    model.train()
    for _ in range(epochs):
        losses, parts = [], {"background": [], "foreground": [], "negative": []}
        for image, soft in examples():
            with placement.autocast():
                features = model(to_device(to_tensor(image), placement)).float()
            labels = torch.from_numpy(affinity_labels(soft, tuple(features.shape[2:]), low, high))
            loss = affinity_loss(features, labels.to(features.device), radius)
            optimiser.zero_grad()
            scaler.scale(loss.total).backward()
            scaler.step(optimiser)
            scaler.update()
            losses.append(float(loss.total.detach()))
            parts["background"].append(loss.background)
            parts["foreground"].append(loss.foreground)
            parts["negative"].append(loss.negative)
        log.epoch_losses.append(float(np.mean(losses)) if losses else 0.0)
        log.parts = {name: float(np.mean(values)) for name, values in parts.items() if values}
    return model.eval(), log


def weights_bytes(model: AffinityNet) -> bytes:
    """The model's weights as safetensors bytes."""
    return save({key: value.contiguous() for key, value in model.state_dict().items()})


def model_from_bytes(data: bytes, where: str) -> AffinityNet:
    """An AffinityNet from safetensors bytes; FreemaskError naming ``where`` if they do not fit."""
    model = AffinityNet()
    try:
        model.load_state_dict(load(data))
    except Exception as exc:  # safetensors header errors and shape mismatches alike
        raise FreemaskError(f"{where}: not AffinityNet weights ({exc})") from None
    return model.eval()
