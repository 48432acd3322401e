"""The toy model's gate: it must draw every class, and mark every class where it drew it.

Two checks, both against the renderer's truth, run before anything is benchmarked on a model:

1. **Attention**: per class, rendered single objects are redrawn image-to-image and the
   generate stage's attention mask is scored against the exact mask (``probe``): the mean IoU
   must reach ``min_iou`` and the soft map must be brighter on the object than off it.
2. **Drawing**: a small classifier trained on VAE-reconstructed renders (so that it knows how
   the model's decoder draws) names the class of single objects the model draws from text alone;
   at least ``min_accuracy`` must be their prompt's class.

    python -m freemask.toyworld.gate [--model FOLDER] [--per-class 12]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from freemask.config import GenerateConfig
from freemask.toyworld.model import IMAGE_SIDE, TOY_SD_ID
from freemask.toyworld.probe import attention_probe
from freemask.toyworld.render import (
    OBJECTS,
    SCENES,
    caption_for,
    random_objects,
    random_scene,
)

CLASSIFIER_SIDE = 64  # the classifier sees images at half size: shapes, not texture


@dataclass
class GateReport:
    """Per class: probe IoU, polarity, drawing accuracy and what the drawings were read as
    (share per predicted class); ``passed`` when every class holds."""

    probe_iou: dict[str, float] = field(default_factory=dict)
    polarity: dict[str, float] = field(default_factory=dict)
    drawn_as_class: dict[str, float] = field(default_factory=dict)
    drawn_read_as: dict[str, dict[str, float]] = field(default_factory=dict)
    classifier_accuracy_on_renders: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def gate_settings(model_id: str = TOY_SD_ID, device: str = "auto") -> GenerateConfig:
    """The generate settings the gate measures the model with (the demo's)."""
    return GenerateConfig(
        model_id=model_id,
        device=device,
        height=IMAGE_SIDE,
        width=IMAGE_SIDE,
        num_inference_steps=20,
        guidance_scale=4.0,
        negative_prompt="",
    )


def single_object_scenes(name: str, count: int, seed: int) -> list:
    """``count`` lit single-object scenes of class ``name``."""
    return [
        random_scene(seed * 10_007 + index, IMAGE_SIDE, (1, 1), (name,)) for index in range(count)
    ]


class ShapeClassifier(nn.Module):
    """A small conv net naming the class of a single-object image."""

    def __init__(self, classes: int):
        super().__init__()
        widths = (3, 16, 32, 64, 64)
        layers: list[nn.Module] = []
        for low, high in itertools.pairwise(widths):
            layers += [
                nn.Conv2d(low, high, 3, padding=1),
                nn.BatchNorm2d(high),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(widths[-1], classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).mean(dim=(2, 3)))


def as_classifier_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1] float NHWC images -> normalised NCHW at the classifier's side."""
    tensor = torch.as_tensor(images)
    tensor = tensor.float() / 255 if tensor.dtype == torch.uint8 else tensor.float()
    tensor = tensor.permute(0, 3, 1, 2)
    tensor = F.interpolate(tensor, size=(CLASSIFIER_SIDE, CLASSIFIER_SIDE), mode="area")
    return tensor * 2 - 1


@torch.no_grad()
def vae_reconstruct(vae: Any, images: np.ndarray) -> np.ndarray:
    """Images passed through the VAE (posterior mean), uint8 NHWC."""
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    out = [
        vae.decode(vae.encode(chunk.to(vae.device, vae.dtype)).latent_dist.mean)
        .sample.float()
        .cpu()
        for chunk in batch.split(32)
    ]
    pixels = ((torch.cat(out).clamp(-1, 1) + 1) * 127.5).round().byte()
    return pixels.permute(0, 2, 3, 1).numpy()


def train_classifier(
    vae: Any, per_class: int = 160, steps: int = 300, seed: int = 0, held_out: int = 40
) -> tuple[ShapeClassifier, float]:
    """Train the classifier on VAE-reconstructed single-object renders; returns it and its
    accuracy on held-out reconstructed renders."""
    torch.manual_seed(seed)
    images, labels, held = [], [], []
    for index, name in enumerate(OBJECTS):
        scenes = single_object_scenes(name, per_class + held_out, seed=900 + index + 10 * seed)
        images.append(vae_reconstruct(vae, np.stack([scene.image for scene in scenes])))
        labels.append(np.full(len(scenes), index))
        held.append(np.arange(len(scenes)) >= per_class)
    pixels = as_classifier_input(np.concatenate(images))
    targets = torch.from_numpy(np.concatenate(labels))
    testing = torch.from_numpy(np.concatenate(held))
    model = ShapeClassifier(len(OBJECTS))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    # Warm up, then anneal: at a constant rate it ended at 90% on held-out renders, at 99% so.
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    train_index = torch.nonzero(~testing).flatten()
    model.train()
    for _ in range(steps):
        batch = train_index[torch.randint(len(train_index), (64,), generator=generator)]
        images_batch = pixels[batch]
        if torch.rand((), generator=generator) < 0.5:
            images_batch = images_batch.flip(-1)
        loss = F.cross_entropy(model(images_batch), targets[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(pixels[testing]).argmax(1) == targets[testing]).float().mean().item()
    return model, accuracy


def shares_read_as(predicted: torch.Tensor) -> dict[str, float]:
    """Per class, the share of ``predicted`` class indices naming it, as exact fractions of
    counts (a float32 mean makes 18 of 20 0.89999998, under a 90% bar it meets)."""
    counts = torch.bincount(predicted, minlength=len(OBJECTS)).tolist()
    return {name: counts[index] / len(predicted) for index, name in enumerate(OBJECTS)}


@torch.no_grad()
def draw_single_objects(
    pipe: Any, name: str, count: int, settings: GenerateConfig, seed: int
) -> np.ndarray:
    """``count`` images the model draws from single-object captions of class ``name``."""
    rng = np.random.default_rng([seed, OBJECTS.index(name)])
    captions = []
    for _ in range(count):
        obj = random_objects(rng, 1, (name,))
        captions.append(caption_for(str(rng.choice(list(SCENES))), obj))
    result = pipe(
        captions,
        negative_prompt=[settings.negative_prompt] * count,
        height=settings.height,
        width=settings.width,
        num_inference_steps=settings.num_inference_steps,
        guidance_scale=settings.guidance_scale,
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type="np",
    )
    return result.images


def run_gate(
    pipe: Any,
    settings: GenerateConfig,
    per_class: int = 12,
    min_iou: float = 0.6,
    min_accuracy: float = 0.9,
    seed: int = 0,
    min_classifier_accuracy: float = 0.95,
) -> GateReport:
    """Measure ``pipe`` against both checks; the report lists every failure."""
    pipe.set_progress_bar_config(disable=True)
    report = GateReport()
    classifier, report.classifier_accuracy_on_renders = train_classifier(pipe.vae, seed=seed)
    if report.classifier_accuracy_on_renders < min_classifier_accuracy:
        # Its misreadings would be blamed on the model: the drawing check says nothing then.
        report.failures.append(
            f"gate inconclusive: its classifier names only "
            f"{report.classifier_accuracy_on_renders:.0%} of held-out renders "
            f"< {min_classifier_accuracy:.0%}"
        )
    for name in OBJECTS:
        scenes = single_object_scenes(name, per_class, seed=50_000 + seed)
        scores = attention_probe(pipe, scenes, settings, seed=seed)
        report.probe_iou[name] = float(np.mean([score.iou for score in scores]))
        report.polarity[name] = float(np.mean([score.polarity for score in scores]))
        drawn = draw_single_objects(pipe, name, per_class, settings, seed=seed)
        predicted = classifier(as_classifier_input(drawn)).argmax(1)
        report.drawn_read_as[name] = shares_read_as(predicted)
        report.drawn_as_class[name] = report.drawn_read_as[name][name]
        if report.polarity[name] <= 0:
            report.failures.append(
                f"{name}: attention marks the background (polarity {report.polarity[name]:.3f})"
            )
        if report.probe_iou[name] < min_iou:
            report.failures.append(f"{name}: probe IoU {report.probe_iou[name]:.3f} < {min_iou}")
        if report.drawn_as_class[name] < min_accuracy:
            report.failures.append(
                f"{name}: {report.drawn_as_class[name]:.0%} of drawn objects recognised < {min_accuracy:.0%}"
            )
    return report


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m freemask.toyworld.gate``: prints the report, exit 1 on failure."""
    from freemask.models import load_sd_pipeline

    parser = argparse.ArgumentParser(prog="python -m freemask.toyworld.gate", description=__doc__)
    parser.add_argument("--model", default=TOY_SD_ID)
    parser.add_argument("--per-class", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = gate_settings(args.model, args.device)
    report = run_gate(load_sd_pipeline(settings), settings, args.per_class, seed=args.seed)
    print(json.dumps({**asdict(report), "passed": report.passed}, indent=2))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
