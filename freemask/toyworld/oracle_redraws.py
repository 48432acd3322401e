"""Drawn-looking training scenes for the truth proxy: renders redrawn by the toy model.

A render passed through the VAE has the decoder's softness but not the UNet's hand: objects drawn
from text come out of the denoiser with its own shading, smears and part shapes, and a proxy
trained on VAE round trips alone misreads them (it agreed with the toy labeller at 0.83 on text
draws, 0.90 on redraws). Here rendered scenes are redrawn image-to-image with their own captions at
a spread of strengths, so the denoiser has redrawn them yet kept their layout: the render's mask
stays the truth. Redraws are cached in chunks under ``work``, so a killed run resumes.
Measured with 2,400 of them beside the 3,600 round trips: no gain (``freemask.toyworld.oracle``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from freemask.records import read_manifest
from freemask.storage import LocalStorage
from freemask.toyworld.dataset import write_toy_scenes
from freemask.toyworld.gate import gate_settings
from freemask.toyworld.probe_segmenter import load_pairs
from freemask.toyworld.render import OBJECTS

# Strengths cycle per chunk: 0.6 is the calibration redraws' own; lower keeps more of the render,
# higher lets the denoiser draw more while the layout (and so the truth) mostly holds.
STRENGTHS = (0.45, 0.6, 0.7)
CHUNK = 96
BATCH = 16


def redrawn_scenes(work: Path, scenes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(redrawn images, the renders' exact labels) of ``scenes`` renders with 1-2 objects of any
    class at any size, each redrawn from its caption at a strength of ``STRENGTHS``."""
    folder = work / f"redraw-renders-{seed}"
    write_toy_scenes(str(folder), list(OBJECTS), scenes, seed=seed, objects=(1, 2))
    storage = LocalStorage(folder)
    samples = sorted(read_manifest(storage), key=lambda s: s.id)
    images, labels = load_pairs(storage, samples)
    captions = [sample.prompt or "" for sample in samples]
    pipe = None
    drawn = []
    for index, start in enumerate(range(0, scenes, CHUNK)):
        cache = work / f"redraws-{seed}-{scenes}-{index:04d}.npy"
        if not cache.exists():
            pipe = pipe or _image_to_image()
            end = min(start + CHUNK, scenes)
            strength = STRENGTHS[index % len(STRENGTHS)]
            chunk = np.concatenate(
                [
                    _redraw(
                        pipe,
                        images[at : min(at + BATCH, end)],
                        captions[at:end],
                        strength,
                        seed + at,
                    )
                    for at in range(start, end, BATCH)
                ]
            )
            partial = cache.with_suffix(".partial.npy")
            np.save(partial, chunk)
            partial.replace(cache)
            print(f"oracle: redrew scenes {end}/{scenes} at strength {strength}", flush=True)
        drawn.append(np.load(cache))
    return np.concatenate(drawn), labels


def _image_to_image():
    from freemask.generate.stage import image_to_image
    from freemask.models import load_sd_pipeline

    return image_to_image(load_sd_pipeline(gate_settings(device="cpu")))


@torch.no_grad()
def _redraw(
    pipe, images: np.ndarray, captions: list[str], strength: float, first_seed: int
) -> np.ndarray:
    settings = gate_settings(device="cpu")  # the demo's drawing settings
    result = pipe(
        captions[: len(images)],
        image=torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255,
        strength=strength,
        negative_prompt=[settings.negative_prompt] * len(images),
        num_inference_steps=settings.num_inference_steps,
        guidance_scale=settings.guidance_scale,
        generator=[
            torch.Generator("cpu").manual_seed(first_seed * 7919 + k) for k in range(len(images))
        ],
        output_type="np",
    )
    return np.round(result.images * 255).astype(np.uint8)
