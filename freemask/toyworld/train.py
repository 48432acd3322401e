"""Train the toy world's text-to-image model on rendered scenes, on a CPU.

    python -m freemask.toyworld.train --out freemask/toyworld/model

1. Render a fixed set of captioned scenes (seeded). 2. Train the VAE on random crops (it is
fully convolutional, so crops teach it the whole image's statistics at a quarter of the cost).
3. Encode every scene once and set the VAE's latent scaling factor. 4. Train the UNet and the
text encoder together on the cached latents (epsilon prediction on Stable Diffusion's noise
schedule, captions dropped 10% of the time for classifier-free guidance, an EMA of the UNet
kept for sampling). 5. Save the pipeline (safetensors) and a model card.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from freemask.toyworld.model import IMAGE_SIDE, build_toy_pipeline, toy_model_path
from freemask.toyworld.render import random_scene


@dataclass
class TrainSettings:
    """What the training run does; every field is a command-line option."""

    out: str = str(toy_model_path())
    seed: int = 0
    images: int = 6000
    vae_steps: int = 600
    vae_batch: int = 32
    vae_crop: int = 32
    unet_steps: int = 4000
    unet_batch: int = 48
    learning_rate: float = 1e-3
    ema_decay: float = 0.995
    caption_dropout: float = 0.1
    threads: int = 2


def render_dataset(count: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """``count`` scenes with 0-2 objects: images [N, 3, H, W] in [-1, 1] and their captions."""
    scenes = [random_scene(seed * 1_000_003 + index, IMAGE_SIDE, (0, 2)) for index in range(count)]
    images = np.stack([scene.image for scene in scenes]).transpose(0, 3, 1, 2)
    return images.astype(np.float32) / 127.5 - 1, [scene.caption for scene in scenes]


def log_progress(part: str, step: int, steps: int, losses: list[float], every: int = 100) -> None:
    """Print the mean loss of the last ``every`` steps, every ``every`` steps."""
    if (step + 1) % every == 0 or step + 1 == steps:
        print(f"{part} step {step + 1}/{steps}: loss {np.mean(losses[-every:]):.4f}", flush=True)


def train_vae(vae: Any, images: torch.Tensor, settings: TrainSettings) -> list[float]:
    """Fit the VAE to reconstruct random crops (L1 plus a light KL term); returns the losses."""
    generator = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=settings.learning_rate)
    crop, side = settings.vae_crop, images.shape[-1]
    losses = []
    vae.train()
    for step in range(settings.vae_steps):
        index = torch.randint(len(images), (settings.vae_batch,), generator=generator)
        top, left = torch.randint(side - crop + 1, (2,), generator=generator).tolist()
        batch = images[index, :, top : top + crop, left : left + crop]
        posterior = vae.encode(batch).latent_dist
        reconstruction = vae.decode(posterior.sample(generator=generator)).sample
        loss = F.l1_loss(reconstruction, batch) + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        log_progress("vae", step, settings.vae_steps, losses)
    vae.eval()
    return losses


@torch.no_grad()
def encode_latents(vae: Any, images: torch.Tensor) -> torch.Tensor:
    """Posterior means of every image, scaled to unit spread (the VAE records the factor)."""
    means = torch.cat([vae.encode(chunk).latent_dist.mean for chunk in images.split(256)])
    scale = float(1.0 / means.std())
    vae.register_to_config(scaling_factor=scale)
    return means * scale


def train_unet(
    pipe: Any, latents: torch.Tensor, captions: list[str], settings: TrainSettings
) -> list[float]:
    """Train the UNet and text encoder to predict the noise; the UNet ends with its EMA weights."""
    from diffusers import DDPMScheduler

    noise_schedule = DDPMScheduler.from_config(pipe.scheduler.config)
    tokens = pipe.tokenizer(
        [*captions, ""],
        padding="max_length",
        max_length=pipe.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    caption_tokens, empty_tokens = tokens[:-1], tokens[-1]
    parameters = [*pipe.unet.parameters(), *pipe.text_encoder.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=settings.learning_rate, weight_decay=0.01)
    warmup = max(1, settings.unet_steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: (
            min(1.0, (step + 1) / warmup)
            * 0.5
            * (1 + np.cos(np.pi * min(1.0, step / settings.unet_steps)))
        ),
    )
    ema = [parameter.detach().clone() for parameter in pipe.unet.parameters()]
    generator = torch.Generator().manual_seed(settings.seed + 1)
    losses = []
    pipe.unet.train()
    pipe.text_encoder.train()
    for step in range(settings.unet_steps):
        index = torch.randint(len(latents), (settings.unet_batch,), generator=generator)
        batch_tokens = caption_tokens[index].clone()
        dropped = torch.rand(len(index), generator=generator) < settings.caption_dropout
        batch_tokens[dropped] = empty_tokens
        clean = latents[index]
        noise = torch.randn(clean.shape, generator=generator)
        timesteps = torch.randint(
            noise_schedule.config.num_train_timesteps, (len(index),), generator=generator
        )
        noisy = noise_schedule.add_noise(clean, noise, timesteps)
        text = pipe.text_encoder(batch_tokens)[0]
        loss = F.mse_loss(pipe.unet(noisy, timesteps, text).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, list(pipe.unet.parameters()), 1 - settings.ema_decay)
        losses.append(loss.item())
        log_progress("unet", step, settings.unet_steps, losses)
    with torch.no_grad():
        for parameter, average in zip(pipe.unet.parameters(), ema, strict=True):
            parameter.copy_(average)
    pipe.unet.eval()
    pipe.text_encoder.eval()
    return losses


def model_card(settings: TrainSettings, argv: list[str], timings: dict, losses: dict) -> str:
    """The model card: what the model is, how it was trained and how to train it again."""
    return f"""# freemask toy-world diffusion model

A small text-to-image latent diffusion model (`StableDiffusionPipeline`: UNet with
cross-attention, AutoencoderKL with a 4x downsampling VAE, a 2-layer CLIP text encoder over the
toy vocabulary) trained on procedurally rendered scenes of `freemask.toyworld.render`: five
shapes (ball, box, ring, star, cone) in six colours on four backgrounds (field, beach, floor,
sky) at {IMAGE_SIDE} px, captioned "a photo of a red ball and a blue box on a field". It exists so
that the generate stage's attention masks and the method's gains can be measured offline.

- Training command: `python -m freemask.toyworld.train {" ".join(argv)}`
- Data seed: {settings.seed} ({settings.images} rendered scenes with 0-2 objects)
- Settings: `{json.dumps({k: v for k, v in asdict(settings).items() if k != "out"})}`
- Time: VAE {timings["vae_seconds"]:.0f} s, UNet {timings["unet_seconds"]:.0f} s, total
  {timings["total_seconds"]:.0f} s on {settings.threads} CPU threads ({platform.processor() or platform.machine()}),
  torch {torch.__version__}
- Final losses (mean of the last 100 steps): VAE {losses["vae"]:.4f}, UNet {losses["unet"]:.4f}
- Weights: safetensors only. Licence: Apache-2.0, as the project.
"""


def parse_settings(argv: list[str]) -> TrainSettings:
    """Command-line options, one per ``TrainSettings`` field."""
    parser = argparse.ArgumentParser(prog="python -m freemask.toyworld.train", description=__doc__)
    for name, default in asdict(TrainSettings()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    return TrainSettings(**vars(parser.parse_args(argv)))


def train(settings: TrainSettings, argv: list[str] | None = None) -> Path:
    """Run the whole training and save the pipeline to ``settings.out``; returns the folder."""
    torch.set_num_threads(settings.threads)
    started = time.perf_counter()
    pipe = build_toy_pipeline(settings.seed)
    # 1. Data.
    images, captions = render_dataset(settings.images, settings.seed)
    images_tensor = torch.from_numpy(images)
    # 2-3. VAE, then latents.
    vae_losses = train_vae(pipe.vae, images_tensor, settings)
    vae_done = time.perf_counter()
    latents = encode_latents(pipe.vae, images_tensor)
    # 4. UNet and text encoder.
    unet_losses = train_unet(pipe, latents, captions, settings)
    finished = time.perf_counter()
    # 5. Save.
    out = Path(settings.out)
    pipe.save_pretrained(out, safe_serialization=True)
    timings = {
        "vae_seconds": vae_done - started,
        "unet_seconds": finished - vae_done,
        "total_seconds": finished - started,
    }
    losses = {"vae": float(np.mean(vae_losses[-100:])), "unet": float(np.mean(unet_losses[-100:]))}
    card = model_card(settings, argv if argv is not None else [], timings, losses)
    (out / "MODEL_CARD.md").write_text(card)
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m freemask.toyworld.train``."""
    argv = sys.argv[1:] if argv is None else argv
    folder = train(parse_settings(argv), argv)
    print(f"saved the toy model to {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
