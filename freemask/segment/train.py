"""Training Mask2Former on a manifest, with checkpoints every N steps and exact resumption.

Each step's batch and randomness derive from (seed, step), so a run resumed from a checkpoint
takes exactly the steps an uninterrupted run takes. Under the model prefix:
``checkpoints/step-NNNNNNN/{model.safetensors,state.pt}`` (optimizer and schedule state, loaded
with ``weights_only=True``), ``checkpoints/latest.json`` written last, and at the end
``config.json`` and ``labels.json``, then ``model.safetensors``: the trained model, which
``load_trained`` rebuilds without unpickling anything. ``model.safetensors`` is written last
and is the folder's completion marker: a kill during the save leaves a folder without it,
which counts as not trained and is written again.
"""

from __future__ import annotations

import io
import json
import math
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from freemask.config import SegmentConfig
from freemask.errors import FreemaskError
from freemask.records import Sample, ignore_value
from freemask.segment.augment import Augmentation, augment_example
from freemask.segment.model import Segmenter, configure_segmenter, preprocess
from freemask.storage import Storage, read_image, read_json_object, write_json
from freemask.tracking import NullRun, Run

LATEST = "checkpoints/latest.json"
MODEL_MARKER = "model.safetensors"  # written last by save_trained: the folder is complete
WARMUP_FRACTION = 0.05


@dataclass
class TrainingResult:
    """Where training ended and the loss at each step it ran in this call."""

    steps: int
    resumed_from: int
    losses: dict[int, float] = field(default_factory=dict)


def targets(semantic: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask2Former targets from a label map: one binary mask per label present (ignore, 255 or
    65535 in a 16-bit map, left out)."""
    labels = [int(value) for value in np.unique(semantic) if value != ignore_value(semantic)]
    masks = (
        np.stack([semantic == label for label in labels])
        if labels
        else np.zeros((0, *semantic.shape))
    )
    return torch.tensor(masks, dtype=torch.float32), torch.tensor(labels, dtype=torch.long)


def augmentation_of(settings: SegmentConfig) -> Augmentation:
    """The training augmentation ``settings`` ask for."""
    return Augmentation(scale=settings.train_scale, colour=settings.train_colour_jitter)


def load_example(
    storage: Storage,
    sample: Sample,
    size: int,
    rng: np.random.Generator,
    augmentation: Augmentation,
):
    """(image tensor [3, size, size], mask labels, class labels) for one sample, augmented
    with draws from ``rng``."""
    image = read_image(storage, sample.image, mode="RGB")
    semantic = read_image(storage, sample.semantic_mask)
    if image.shape[:2] != semantic.shape[:2]:
        raise FreemaskError(
            f"{storage.uri}/{sample.semantic_mask}: label map is {semantic.shape[1]}x"
            f"{semantic.shape[0]}, its image {sample.image} is {image.shape[1]}x{image.shape[0]}"
        )
    image, semantic = augment_example(image, semantic, size, rng, augmentation)
    masks, labels = targets(semantic)
    return preprocess([image], size)[0], masks, labels


def lr_factor(step: int, total: int) -> float:
    """Linear warm-up over the first 5% of steps, then polynomial decay (power 0.9)."""
    warmup = max(1, int(total * WARMUP_FRACTION))
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, 1.0 - (step - warmup) / max(1, total - warmup)) ** 0.9


def train_segmenter(
    segmenter: Segmenter,
    samples: list[Sample],
    data: Storage,
    model_storage: Storage,
    settings: SegmentConfig,
    *,
    seed: int = 0,
    run: Run | None = None,
    on_step: Callable[[int], None] | None = None,
) -> TrainingResult:
    """Train on ``samples`` (files under ``data``) for ``settings.train_steps`` steps.

    Resumes from ``model_storage``'s latest checkpoint when there is one. ``on_step(step)``
    runs after each step (tests use it to interrupt). Runs where the segmenter is placed,
    autocast in its precision (fp16 with loss scaling).
    """
    usable = [sample for sample in samples if sample.semantic_mask]
    if not usable:
        raise FreemaskError(f"{data.uri}: no labelled samples to train on")
    run = run or NullRun()
    model = segmenter.model.train()
    device = segmenter.device
    placement = segmenter.placement
    memory_format = placement.memory_format()
    scaler = placement.grad_scaler()
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.05)
    total = settings.train_steps
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: lr_factor(step, total))
    augmentation = augmentation_of(settings)
    start = _resume(model, optimiser, schedule, model_storage)
    result = TrainingResult(steps=start, resumed_from=start)
    for step in range(start, total):
        rng = np.random.default_rng([seed, step])
        torch.manual_seed(seed * 1_000_003 + step)  # the loss samples points at random
        picks = rng.choice(len(usable), size=min(settings.batch_size, len(usable)), replace=False)
        batch = [
            load_example(data, usable[i], segmenter.image_size, rng, augmentation) for i in picks
        ]
        with placement.autocast():
            outputs = model(
                pixel_values=torch.stack([b[0] for b in batch]).to(
                    device, memory_format=memory_format
                ),
                mask_labels=[b[1].to(device) for b in batch],
                class_labels=[b[2].to(device) for b in batch],
            )
        optimiser.zero_grad()
        scaler.scale(outputs.loss).backward()
        scaler.unscale_(optimiser)  # clip the true gradients
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimiser)
        scaler.update()
        schedule.step()
        loss = float(outputs.loss.detach())
        if not math.isfinite(loss):
            raise FreemaskError(
                f"training loss became {loss} at step {step + 1}; lower segment.learning_rate"
            )
        result.losses[step + 1] = loss
        result.steps = step + 1
        run.log_metrics({"train.loss": loss, "train.lr": schedule.get_last_lr()[0]}, step=step + 1)
        if (step + 1) % settings.checkpoint_every == 0 or step + 1 == total:
            _checkpoint(model, optimiser, schedule, model_storage, step + 1)
        if on_step:
            on_step(step + 1)
    save_trained(segmenter, model_storage)
    model.eval()
    return result


def _checkpoint(model, optimiser, schedule, storage: Storage, step: int) -> None:
    folder = f"checkpoints/step-{step:07d}"
    storage.write_bytes(f"{folder}/model.safetensors", _weights(model))
    state = io.BytesIO()
    torch.save(
        {"optimizer": optimiser.state_dict(), "schedule": schedule.state_dict(), "step": step},
        state,
    )
    storage.write_bytes(f"{folder}/state.pt", state.getvalue())
    write_json(storage, LATEST, {"step": step, "folder": folder})


def _resume(model, optimiser, schedule, storage: Storage) -> int:
    if not storage.exists(LATEST):
        return 0
    folder = read_json_object(storage, LATEST, required=("folder",))["folder"]
    if not isinstance(folder, str):
        raise FreemaskError(f"{storage.uri}/{LATEST}: folder {folder!r} is not a path")
    model.load_state_dict(read_weights(storage, f"{folder}/model.safetensors"))
    state = read_state(storage, f"{folder}/state.pt")
    optimiser.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    return int(state["step"])


def read_weights(storage: Storage, path: str) -> dict[str, torch.Tensor]:
    """Load safetensors weights, naming the file when they are not safetensors."""
    try:
        return load_safetensors(storage.read_bytes(path))
    except Exception as exc:  # safetensors raises its own untyped errors
        raise FreemaskError(f"{storage.uri}/{path}: not readable safetensors ({exc})") from None


def read_state(storage: Storage, path: str) -> dict:
    """Load a training state with ``weights_only=True``; FreemaskError if it is refused."""
    try:
        state = torch.load(io.BytesIO(storage.read_bytes(path)), weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FreemaskError(
            f"{storage.uri}/{path}: refused by torch.load(weights_only=True) ({first})"
        ) from None
    missing = [
        key
        for key in ("optimizer", "schedule", "step")
        if not isinstance(state, dict) or key not in state
    ]
    if missing:
        raise FreemaskError(f"{storage.uri}/{path}: not a training state (missing {missing})")
    return state


def _weights(model) -> bytes:
    return save_safetensors({key: value.contiguous() for key, value in model.state_dict().items()})


def save_trained(segmenter: Segmenter, storage: Storage) -> None:
    """Write the trained model: model config, label mapping, then the weights (safetensors),
    whose presence marks the folder complete."""
    storage.write_bytes(
        "config.json", json.dumps(segmenter.model.config.to_dict(), default=str).encode()
    )
    write_json(
        storage,
        "labels.json",
        {"image_size": segmenter.image_size, "to_run_label": segmenter.to_run_label.tolist()},
    )
    storage.write_bytes(MODEL_MARKER, _weights(segmenter.model))


def load_trained(storage: Storage, settings: SegmentConfig | None = None) -> Segmenter:
    """Rebuild a segmenter written by ``save_trained`` (no pickle), placed as ``settings``
    say (device, precision, prediction batch); without settings on the CPU."""
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation

    if not storage.exists(MODEL_MARKER):
        raise FreemaskError(f"{storage.uri}: no trained model ({MODEL_MARKER}) here")
    config = Mask2FormerConfig.from_dict(read_json_object(storage, "config.json"))
    model = Mask2FormerForUniversalSegmentation(config)
    try:
        model.load_state_dict(read_weights(storage, MODEL_MARKER))
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise FreemaskError(
            f"{storage.uri}/{MODEL_MARKER}: does not fit config.json ({first})"
        ) from None
    labels = read_json_object(storage, "labels.json", required=("image_size", "to_run_label"))
    segmenter = Segmenter(model.eval(), labels["image_size"], np.asarray(labels["to_run_label"]))
    return configure_segmenter(segmenter, settings) if settings else segmenter
