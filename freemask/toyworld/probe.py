"""Do the toy model's attention masks find the objects? Measured against the renderer's masks.

A rendered single-object scene is noised part of the way (``strength``) and redrawn from its
caption, as image-to-image diffusion does, with the generate stage's attention capture and
mask extraction. The redrawn image keeps the rendered layout, so the renderer's exact mask is
the truth for the attention mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from freemask.config import GenerateConfig
from freemask.generate.attention import AttentionStore, capture_attention
from freemask.generate.masks import masks_from_attention
from freemask.generate.prompts import Prompt, class_token_indices
from freemask.toyworld.render import ToyScene


@dataclass(frozen=True)
class ProbeScore:
    """One scene's attention mask against its truth: IoU of the hard mask, and polarity, the
    soft map's mean on the object minus its mean elsewhere (negative: it marks the background)."""

    iou: float
    polarity: float


def mask_iou(predicted: np.ndarray, truth: np.ndarray) -> float:
    """IoU of two boolean masks (1.0 when both are empty)."""
    union = np.logical_or(predicted, truth).sum()
    return float(np.logical_and(predicted, truth).sum() / union) if union else 1.0


@torch.no_grad()
def attention_probe(
    pipe: Any,
    scenes: list[ToyScene],
    settings: GenerateConfig,
    strength: float = 0.6,
    seed: int = 0,
) -> list[ProbeScore]:
    """Score each scene's attention mask (its first object's class word) against its truth."""
    from diffusers import StableDiffusionImg2ImgPipeline

    redraw = StableDiffusionImg2ImgPipeline(**pipe.components, requires_safety_checker=False)
    redraw.set_progress_bar_config(disable=True)
    height, width = scenes[0].image.shape[:2]
    scale = pipe.vae_scale_factor
    store = AttentionStore(
        latent_size=(height // scale, width // scale),
        cross_resolutions=settings.cross_attention_resolutions,
        self_resolution=settings.self_attention_resolution,
        window=settings.timestep_window,
    )
    ids = [f"scene-{index}" for index in range(len(scenes))]
    names = [scene.instances[0][0] for scene in scenes]
    tokens = [
        class_token_indices(pipe.tokenizer, Prompt(scene.caption, name), sample_id)
        for scene, name, sample_id in zip(scenes, names, ids, strict=True)
    ]
    # Image-to-image runs only the last int(steps * strength) steps of the schedule.
    steps_run = int(settings.num_inference_steps * strength)
    store.begin(tokens, num_steps=steps_run, guided=settings.guidance_scale > 1)
    images = torch.from_numpy(np.stack([scene.image for scene in scenes])).permute(0, 3, 1, 2)
    with capture_attention(redraw.unet, store):
        redraw(
            [scene.caption for scene in scenes],
            image=images.float() / 255,
            strength=strength,
            negative_prompt=[settings.negative_prompt] * len(scenes),
            num_inference_steps=settings.num_inference_steps,
            guidance_scale=settings.guidance_scale,
            generator=torch.Generator("cpu").manual_seed(seed),
            output_type="np",
            callback_on_step_end=store.on_step_end,
        )
    masks = masks_from_attention(store, settings, (height, width), ids)
    scores = []
    for mask, scene in zip(masks, scenes, strict=True):
        truth = scene.instances[0][1]
        soft = mask.soft.astype(np.float32)
        scores.append(
            ProbeScore(
                iou=mask_iou(mask.label == 1, truth),
                polarity=float(soft[truth].mean() - soft[~truth].mean()),
            )
        )
    return scores
