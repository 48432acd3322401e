"""Train the toy world's text-to-image model on rendered scenes, in resumable chunks (on a CPU,
or a GPU with ``--device cuda``).

    python -m freemask.toyworld.train --out freemask/toyworld/model --work build/toy-sd-train

1. Render a fixed set of captioned scenes (seeded). 2. Train the VAE on random crops (it is
fully convolutional, so crops teach it the whole image's statistics at a fraction of the cost).
3. Encode every scene once and set the VAE's latent scaling factor. 4. Train the UNet and the
text encoder together on the cached latents (epsilon prediction on Stable Diffusion's noise
schedule, weighted toward object pixels; captions dropped 10% of the time for classifier-free
guidance; a grounding loss on the class words' cross-attention; an EMA of both kept for
sampling), then fine-tune the decoder on whole images with the encoder frozen.
5. Save the pipeline (safetensors) and a model card.

Every part saves its state under ``--work``: a killed run started again with the same command
continues where the last checkpoint left it, with the same random streams, and each UNet
checkpoint also leaves a loadable snapshot of the EMA pipeline (``<work>/snapshot``). The work
folder records the settings its checkpoints are made with and refuses others.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from freemask.storage import LocalStorage, replace_folder, write_json
from freemask.toyworld.model import IMAGE_SIDE, build_toy_pipeline, toy_model_path
from freemask.toyworld.render import OBJECTS, VOCABULARY, random_scene


@dataclass
class TrainSettings:
    """What the training run does; every field is a command-line option."""

    out: str = str(toy_model_path())
    work: str = "build/toy-sd-train"
    seed: int = 0
    images: int = 6000
    vae_steps: int = 800
    vae_batch: int = 32
    vae_crop: int = 48
    decoder_steps: int = 400
    decoder_batch: int = 8
    unet_steps: int = 20000
    warmup_steps: int = 200
    unet_batch: int = 32
    learning_rate: float = 1e-3
    ema_decay: float = 0.999
    caption_dropout: float = 0.1
    # Weight of the cross-attention grounding loss (0: off); see ``grounding_loss``.
    grounding_weight: float = 0.1
    # Extra weight of the noise loss on object pixels (0: every pixel alike); see ``noise_loss``.
    object_weight: float = 4.0
    threads: int = 1
    # Where the networks train ("cpu", "cuda", "cuda:1"). Every random draw stays on the CPU, so
    # a run keeps its data order and noise when it moves between devices.
    device: str = "cpu"
    checkpoint_every: int = 250


MAX_OBJECTS = 2
GROUNDING_GRIDS = (IMAGE_SIDE // 8, IMAGE_SIDE // 16)  # the 16x16 and 8x8 attention grids


@dataclass
class Grounding:
    """Where each caption's class words are and what they name: per scene, the token position
    of each object's class word (-1: none) and its visible mask on each attention grid."""

    positions: torch.Tensor  # [N, MAX_OBJECTS] int64
    masks: dict[int, torch.Tensor]  # grid side -> [N, MAX_OBJECTS, side * side] float16


def scenes_of(count: int, seed: int) -> list:
    """The training scenes: ``count`` lit scenes with 0-2 objects."""
    return [
        random_scene(seed * 1_000_003 + index, IMAGE_SIDE, (0, MAX_OBJECTS))
        for index in range(count)
    ]


def images_of(scenes: list) -> torch.Tensor:
    """The scenes' images as one uint8 tensor [N, 3, H, W]."""
    images = np.stack([scene.image for scene in scenes]).transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(images))


def grounding_of(scenes: list, tokens: torch.Tensor, tokenizer: Any) -> Grounding:
    """The class words' token positions and visible masks of ``scenes`` (captions tokenized as
    ``tokens``; every toy word is one token)."""
    class_ids = {tokenizer(name).input_ids[1]: name for name in OBJECTS}
    positions = torch.full((len(scenes), MAX_OBJECTS), -1, dtype=torch.int64)
    masks = {
        side: torch.zeros(len(scenes), MAX_OBJECTS, side * side, dtype=torch.float16)
        for side in GROUNDING_GRIDS
    }
    for index, scene in enumerate(scenes):
        words = [
            position for position, token in enumerate(tokens[index].tolist()) if token in class_ids
        ]
        for slot, position in enumerate(words[:MAX_OBJECTS]):
            visible = torch.from_numpy((scene.owners == slot).astype(np.float32))[None, None]
            if not visible.any():
                continue
            positions[index, slot] = position
            for side in GROUNDING_GRIDS:
                area = F.interpolate(visible, size=(side, side), mode="area")
                masks[side][index, slot] = area.flatten().half()
    return Grounding(positions, masks)


class AttentionProbe:
    """An attention processor for cross-attention layers that computes the layer exactly as
    diffusers' ``AttnProcessor`` does and keeps its head-averaged probabilities for the loss."""

    def __init__(self, sink: list[torch.Tensor]):
        self.sink = sink

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states=None,
        attention_mask=None,
        temb=None,
        **_: Any,
    ) -> torch.Tensor:
        batch, pixels, _ = hidden_states.shape
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        probabilities = attn.get_attention_scores(query, key, None)
        self.sink.append(probabilities.view(batch, attn.heads, pixels, -1).mean(dim=1))
        hidden = attn.batch_to_head_dim(torch.bmm(probabilities, value))
        return attn.to_out[1](attn.to_out[0](hidden))


def grounding_loss(
    maps: list[torch.Tensor], grounding: Grounding, index: torch.Tensor, kept: torch.Tensor
) -> torch.Tensor:
    """TokenCompose's token loss: for every object named in a kept caption, one minus the share
    of its class word's attention that falls on its visible pixels, squared; averaged over the
    objects and the cross-attention layers. A small model trained on a few thousand scenes
    does not ground its words by itself (its attention stays flat); Stable Diffusion does, and
    the toy model stands in for it."""
    device = maps[0].device
    positions = grounding.positions[index].to(device)
    valid = (positions >= 0) & kept.to(device)[:, None]
    if not valid.any():
        return torch.zeros((), device=device)
    losses = []
    for probabilities in maps:
        side = math.isqrt(probabilities.shape[1])
        gathered = probabilities.gather(
            2, positions.clamp_min(0)[:, None, :].expand(-1, probabilities.shape[1], -1)
        )
        word_maps = gathered.transpose(1, 2)  # [batch, objects, pixels]
        masks = grounding.masks[side][index].to(device).float()
        share = (word_maps * masks).sum(-1) / word_maps.sum(-1).clamp_min(1e-8)
        losses.append(((1 - share) ** 2)[valid].mean())
    return torch.stack(losses).mean()


def object_coverage(scenes: list, side: int) -> torch.Tensor:
    """Per scene, the share of each cell of a ``side`` x ``side`` grid (the latent grid) that
    its objects cover: [N, 1, side, side] float16."""
    covered = torch.from_numpy(
        np.stack([(scene.owners >= 0).astype(np.float32) for scene in scenes])
    )[:, None]
    return F.interpolate(covered, size=(side, side), mode="area").half()


def noise_loss(
    predicted: torch.Tensor, noise: torch.Tensor, coverage: torch.Tensor, object_weight: float
) -> torch.Tensor:
    """The noise-prediction MSE, with object pixels weighing ``1 + object_weight``: the class
    words' only evidence is the objects' shape, a small part of every image next to the
    backgrounds' texture, and without the weight a small model learns the texture first."""
    weights = 1 + object_weight * coverage.to(predicted.device).float()
    return (((predicted - noise) ** 2) * weights).mean() / weights.mean()


FINGERPRINT_EXEMPT = ("out", "work", "threads", "device", "unet_steps", "checkpoint_every")


def check_work_folder(work: Path, settings: TrainSettings) -> None:
    """Record what ``work``'s checkpoints are made with (``settings.json``), or refuse to go on
    from checkpoints made with other settings or another toy world; the UNet may go on to
    more steps, on other threads or another device."""
    fingerprint = {
        **{k: v for k, v in asdict(settings).items() if k not in FINGERPRINT_EXEMPT},
        "image_side": IMAGE_SIDE,
        "objects": list(OBJECTS),
        "vocabulary": list(VOCABULARY),
    }
    recorded = work / "settings.json"
    if not recorded.exists():
        write_json(LocalStorage(work), recorded.name, fingerprint)
        return
    before = json.loads(recorded.read_text())
    changed = sorted(k for k in {*before, *fingerprint} if before.get(k) != fingerprint.get(k))
    if changed:
        raise SystemExit(
            f"{recorded}: the checkpoints in {work} were made with other "
            f"{', '.join(changed)}; use another --work (or the recorded settings)"
        )


def as_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 images to the VAE's [-1, 1] floats."""
    return images.float() / 127.5 - 1


def log_progress(part: str, step: int, steps: int, losses: list[float], every: int = 100) -> None:
    """Print the mean loss of the last ``every`` steps, every ``every`` steps."""
    if (step + 1) % every == 0 or step + 1 == steps:
        print(f"{part} step {step + 1}/{steps}: loss {np.mean(losses[-every:]):.4f}", flush=True)


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically (tensors and plain values only: loadable with weights_only)."""
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def load_state(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path``, or None when there is none yet."""
    return torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None


def descend(optimizer: torch.optim.Optimizer, loss: torch.Tensor, losses: list[float]) -> None:
    """One optimiser step down ``loss``; the loss is appended to ``losses``."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    losses.append(loss.item())


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
        batch = as_model_input(images[index, :, top : top + crop, left : left + crop])
        batch = batch.to(vae.device)
        posterior = vae.encode(batch).latent_dist
        reconstruction = vae.decode(posterior.sample(generator=generator)).sample
        loss = F.l1_loss(reconstruction, batch) + 1e-6 * posterior.kl().mean()
        descend(optimizer, loss, losses)
        log_progress("vae", step, settings.vae_steps, losses)
    vae.eval()
    return losses


@torch.no_grad()
def encode_latents(vae: Any, images: torch.Tensor) -> torch.Tensor:
    """Posterior means of every image, scaled to unit spread (the VAE records the factor)."""
    means = torch.cat(
        [
            vae.encode(as_model_input(chunk).to(vae.device)).latent_dist.mean.cpu()
            for chunk in images.split(64)
        ]
    )
    scale = float(1.0 / means.std())
    vae.register_to_config(scaling_factor=scale)
    return means * scale


def vae_and_latents(
    pipe: Any, images: torch.Tensor, settings: TrainSettings, work: Path
) -> tuple[torch.Tensor, dict[str, float]]:
    """Train the VAE and encode the scenes, or load either from ``work`` when done before (the
    latents, 100 MB, can be left behind and are encoded again from the saved VAE)."""
    weights, cached = work / "vae.safetensors", work / "latents.safetensors"
    if weights.exists():
        pipe.vae.load_state_dict(load_file(weights))
        info = json.loads((work / "vae.json").read_text())
    else:
        started = time.perf_counter()
        losses = train_vae(pipe.vae, images, settings)
        info = {
            "vae_seconds": time.perf_counter() - started,
            "vae_loss": float(np.mean(losses[-100:])),
        }
        write_json(LocalStorage(work), "vae.json", info)
        save_file(pipe.vae.state_dict(), weights.with_suffix(".partial"))
        os.replace(weights.with_suffix(".partial"), weights)  # last: the VAE's "done"
    if cached.exists():
        saved = load_file(cached)
        pipe.vae.register_to_config(scaling_factor=float(saved["scaling_factor"]))
        return saved["latents"], info
    latents = encode_latents(pipe.vae, images)
    scale = torch.tensor(pipe.vae.config.scaling_factor)
    save_file(
        {"latents": latents.contiguous(), "scaling_factor": scale}, cached.with_suffix(".partial")
    )
    os.replace(cached.with_suffix(".partial"), cached)
    return latents, info


def finetune_decoder(vae: Any, images: torch.Tensor, settings: TrainSettings, work: Path) -> dict:
    """Fine-tune the VAE's decoder on whole images, encoder frozen (so the latents the UNet
    learns stay the same), for sharper edges and truer colours; resumable through ``work``."""
    weights = work / "decoder.safetensors"
    if weights.exists():
        vae.decoder.load_state_dict(load_file(weights))
        return json.loads((work / "decoder.json").read_text())
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(settings.seed + 2)
    optimizer = torch.optim.AdamW(vae.decoder.parameters(), lr=settings.learning_rate / 2)
    losses = []
    vae.decoder.train()
    for step in range(settings.decoder_steps):
        index = torch.randint(len(images), (settings.decoder_batch,), generator=generator)
        batch = as_model_input(images[index]).to(vae.device)
        with torch.no_grad():
            latents = vae.encode(batch).latent_dist.mean
        reconstruction = vae.decode(latents).sample
        loss = F.l1_loss(reconstruction, batch) + F.mse_loss(reconstruction, batch)
        descend(optimizer, loss, losses)
        log_progress("decoder", step, settings.decoder_steps, losses)
    vae.eval()
    info = {
        "decoder_seconds": time.perf_counter() - started,
        "decoder_loss": float(np.mean(losses[-100:])) if losses else float("nan"),
    }
    write_json(LocalStorage(work), "decoder.json", info)
    save_file(vae.decoder.state_dict(), weights.with_suffix(".partial"))
    os.replace(weights.with_suffix(".partial"), weights)  # last: the decoder's "done"
    return info


def averaged_parameters(pipe: Any) -> list[torch.Tensor]:
    """The parameters trained together and averaged together: the UNet's and the text
    encoder's (an averaged UNet beside the latest text encoder would read embeddings that its
    cross-attention was not averaged against)."""
    return [*pipe.unet.parameters(), *pipe.text_encoder.parameters()]


def snapshot(pipe: Any, ema: list[torch.Tensor], folder: Path) -> None:
    """Save the pipeline with the EMA weights to ``folder`` (replaced whole)."""
    parameters = averaged_parameters(pipe)
    live = [parameter.detach().clone() for parameter in parameters]
    with torch.no_grad():
        torch._foreach_copy_(parameters, ema)
    replace_folder(folder, lambda partial: pipe.save_pretrained(partial, safe_serialization=True))
    with torch.no_grad():
        torch._foreach_copy_(parameters, live)


def train_unet(
    pipe: Any, latents: torch.Tensor, scenes: list, settings: TrainSettings, work: Path
) -> dict[str, float]:
    """Train the UNet and text encoder to predict the noise, resuming from ``work``; both end
    with their EMA weights. Returns the UNet's seconds and final loss."""
    from diffusers import DDPMScheduler

    noise_schedule = DDPMScheduler.from_config(pipe.scheduler.config)
    captions = [scene.caption for scene in scenes]
    longest = max(captions, key=lambda caption: len(pipe.tokenizer(caption).input_ids))
    if len(pipe.tokenizer(longest).input_ids) > pipe.tokenizer.model_max_length:
        raise ValueError(
            f"caption {longest!r} has more than the text encoder's "
            f"{pipe.tokenizer.model_max_length} token positions"
        )
    tokens = pipe.tokenizer(
        [*captions, ""],
        padding="max_length",
        max_length=pipe.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    caption_tokens, empty_tokens = tokens[:-1], tokens[-1]
    grounding = grounding_of(scenes, caption_tokens, pipe.tokenizer)
    attention_maps: list[torch.Tensor] = []
    if settings.grounding_weight > 0:
        probe = AttentionProbe(attention_maps)
        pipe.unet.set_attn_processor(
            {
                name: probe if name.endswith("attn2.processor") else processor
                for name, processor in pipe.unet.attn_processors.items()
            }
        )
    parameters = averaged_parameters(pipe)
    coverage = object_coverage(scenes, latents.shape[-1])
    optimizer = torch.optim.AdamW(parameters, lr=settings.learning_rate, weight_decay=0.01)
    # Warm-up, then a constant rate (the EMA does the averaging): the rate at a step does not
    # depend on the total, so training can go on in chunks to any number of steps and end the
    # same as one uninterrupted run.
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / settings.warmup_steps)
    )
    ema = [parameter.detach().clone() for parameter in parameters]
    generator = torch.Generator().manual_seed(settings.seed + 1)
    checkpoint = work / "unet-state.pt"
    state = load_state(checkpoint)
    start, seconds, losses = 0, 0.0, []
    if state is not None:
        pipe.unet.load_state_dict(state["unet"])
        pipe.text_encoder.load_state_dict(state["text_encoder"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        ema = [average.to(pipe.unet.device) for average in state["ema"]]
        generator.set_state(state["generator"])
        start, seconds, losses = int(state["step"]), float(state["seconds"]), list(state["losses"])
        if start > settings.unet_steps:
            raise SystemExit(
                f"{checkpoint}: the checkpoint is at step {start}, past --unet-steps "
                f"{settings.unet_steps}; a run can stop at a checkpoint, not go back"
            )
        print(f"unet: resuming at step {start}", flush=True)
    pipe.unet.train()
    pipe.text_encoder.train()
    resumed_at = time.perf_counter() - seconds
    for step in range(start, settings.unet_steps):
        index = torch.randint(len(latents), (settings.unet_batch,), generator=generator)
        batch_tokens = caption_tokens[index].clone()
        dropped = torch.rand(len(index), generator=generator) < settings.caption_dropout
        batch_tokens[dropped] = empty_tokens
        clean = latents[index]
        noise = torch.randn(clean.shape, generator=generator)
        timesteps = torch.randint(
            noise_schedule.config.num_train_timesteps, (len(index),), generator=generator
        )
        device = pipe.unet.device
        clean, noise, timesteps = clean.to(device), noise.to(device), timesteps.to(device)
        noisy = noise_schedule.add_noise(clean, noise, timesteps)
        text = pipe.text_encoder(batch_tokens.to(device))[0]
        attention_maps.clear()
        predicted = pipe.unet(noisy, timesteps, text).sample
        loss = noise_loss(predicted, noise, coverage[index], settings.object_weight)
        if settings.grounding_weight > 0:
            loss = loss + settings.grounding_weight * grounding_loss(
                attention_maps, grounding, index, ~dropped
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, parameters, 1 - settings.ema_decay)
        losses.append(loss.item())
        log_progress("unet", step, settings.unet_steps, losses)
        done = step + 1
        if done % settings.checkpoint_every == 0 or done == settings.unet_steps:
            save_state(
                checkpoint,
                {
                    "unet": pipe.unet.state_dict(),
                    "text_encoder": pipe.text_encoder.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "ema": ema,
                    "generator": generator.get_state(),
                    "step": done,
                    "seconds": time.perf_counter() - resumed_at,
                    "losses": losses,
                },
            )
            snapshot(pipe, ema, work / "snapshot")
    with torch.no_grad():
        torch._foreach_copy_(parameters, ema)
    if settings.grounding_weight > 0:
        from diffusers.models.attention_processor import AttnProcessor2_0

        pipe.unet.set_attn_processor(AttnProcessor2_0())
    pipe.unet.eval()
    pipe.text_encoder.eval()
    return {
        "unet_seconds": time.perf_counter() - resumed_at,
        "unet_loss": float(np.mean(losses[-100:])) if losses else float("nan"),
    }


def machine(settings: TrainSettings) -> str:
    """Where the networks trained, in words."""
    if settings.device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(torch.device(settings.device))} ({settings.device})"
    return f"{settings.threads} CPU thread(s) ({platform.processor() or platform.machine()})"


def model_card(settings: TrainSettings, argv: list[str], facts: dict[str, float]) -> str:
    """The model card: what the model is, how it was trained and how to train it again."""
    fields = {k: v for k, v in asdict(settings).items() if k not in ("out", "work")}
    return f"""# freemask toy-world diffusion model

A small text-to-image latent diffusion model (`StableDiffusionPipeline`: UNet with
cross-attention on the 16x16 and 8x8 latent grids, AutoencoderKL with a 4x downsampling VAE,
a 2-layer CLIP text encoder over the toy vocabulary) trained on procedurally rendered scenes of
`freemask.toyworld.render`: five shapes (ball, box, ring, cone, cross) in six colours on four
backgrounds (field, beach, floor, sky) under random lights, at {IMAGE_SIDE} px, captioned
"a photo of a red ball and a blue box on a field". It exists so that the generate stage's
attention masks and the method's gains can be measured offline.

- Training command: `python -m freemask.toyworld.train {" ".join(argv)}`
- Data seed: {settings.seed} ({settings.images} rendered scenes with 0-2 objects)
- Settings: `{json.dumps(fields)}`
- Time: VAE {facts["vae_seconds"]:.0f} s, UNet {facts["unet_seconds"]:.0f} s, decoder
  {facts["decoder_seconds"]:.0f} s on {machine(settings)}, torch {torch.__version__}
- Final losses (mean of the last 100 steps): VAE {facts["vae_loss"]:.4f}, UNet
  {facts["unet_loss"]:.4f}, decoder {facts["decoder_loss"]:.4f}
- Weights: safetensors only. Licence: Apache-2.0, as the project.
"""


def parse_settings(argv: list[str]) -> TrainSettings:
    """Command-line options, one per ``TrainSettings`` field."""
    parser = argparse.ArgumentParser(prog="python -m freemask.toyworld.train", description=__doc__)
    for name, default in asdict(TrainSettings()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    return TrainSettings(**vars(parser.parse_args(argv)))


def train(settings: TrainSettings, argv: list[str] | None = None) -> Path:
    """Run (or resume) the whole training and save the pipeline to ``settings.out``."""
    torch.set_num_threads(settings.threads)
    work = Path(settings.work)
    work.mkdir(parents=True, exist_ok=True)
    check_work_folder(work, settings)
    pipe = build_toy_pipeline(settings.seed).to(settings.device)
    # 1. Data.
    scenes = scenes_of(settings.images, settings.seed)
    images = images_of(scenes)
    # 2-3. VAE, then latents.
    latents, facts = vae_and_latents(pipe, images, settings, work)
    # 4. UNet and text encoder; the decoder sharpened on the frozen encoder's latents.
    facts |= train_unet(pipe, latents, scenes, settings, work)
    facts |= finetune_decoder(pipe.vae, images, settings, work)
    # 5. Save.
    out = Path(settings.out)
    card = model_card(settings, argv if argv is not None else [], facts)

    def write_model(folder: Path) -> None:
        pipe.to("cpu").save_pretrained(folder, safe_serialization=True)
        (folder / "MODEL_CARD.md").write_text(card)

    replace_folder(out, write_model)
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m freemask.toyworld.train``."""
    argv = sys.argv[1:] if argv is None else argv
    folder = train(parse_settings(argv), argv)
    print(f"saved the toy model to {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
