"""Cost of reading masks from attention while drawing: capture vs the plain pipeline call.

On the tiny Stable Diffusion pipeline (same classes and layout as the real one), at 64 and 256
px, 20 steps, same model and seeds, in one process: the median time of a plain pipeline call,
of the same call with attention capture, and of capture plus turning the aggregates into masks.
Runs alternate so that drift hits both sides alike. Captured-state bytes are set against what
a store-every-step approach holds (every captured map of every step kept until the end), at 20
and at 40 steps.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch

from freemask.config import GenerateConfig
from freemask.generate import AttentionStore, capture_attention, masks_from_attention
from freemask.models import build_tiny_sd

SIZES = (64, 256)
STEPS = 20
REPEATS = 7
PROMPT = "a photo of a traffic light"
TOKENS = [[5, 6]]


def call(pipe, size: int, steps: int, store: AttentionStore | None = None):
    kwargs = {
        "height": size,
        "width": size,
        "num_inference_steps": steps,
        "generator": [torch.Generator().manual_seed(0)],
        "output_type": "np",
    }
    if store is not None:
        store.begin(TOKENS, num_steps=steps)
        kwargs["callback_on_step_end"] = store.on_step_end
    return pipe([PROMPT], **kwargs).images


def every_step_bytes(store: AttentionStore) -> int:
    """Bytes a store-every-step approach holds: one map per captured layer call, all kept."""
    groups = [(store.cross_sums, store.cross_counts), (store.self_sums, store.self_counts)]
    return sum(
        counts[resolution] * maps.numel() * maps.element_size()
        for sums, counts in groups
        for resolution, maps in sums.items()
    )


def measure(pipe, size: int, settings: GenerateConfig) -> dict[str, float]:
    store = AttentionStore(
        (size // 8, size // 8),
        settings.cross_attention_resolutions,
        settings.self_attention_resolution,
        settings.timestep_window,
    )
    plain, captured, with_masks = [], [], []
    with capture_attention(pipe.unet, store):
        call(pipe, size, STEPS, store)  # warm-up
    call(pipe, size, STEPS)
    for _ in range(REPEATS):
        start = time.perf_counter()
        call(pipe, size, STEPS)
        plain.append(time.perf_counter() - start)
        with capture_attention(pipe.unet, store):
            start = time.perf_counter()
            call(pipe, size, STEPS, store)
            captured.append(time.perf_counter() - start)
            start = time.perf_counter()
            call(pipe, size, STEPS, store)
            masks_from_attention(store, settings, (size, size), ["bench"])
            with_masks.append(time.perf_counter() - start)
    held = {STEPS: (store.nbytes, every_step_bytes(store))}
    with capture_attention(pipe.unet, store):
        call(pipe, size, 2 * STEPS, store)
    held[2 * STEPS] = (store.nbytes, every_step_bytes(store))
    return {
        "plain_s": statistics.median(plain),
        "capture_s": statistics.median(captured),
        "capture_masks_s": statistics.median(with_masks),
        "held_bytes": held[STEPS][0],
        "held_bytes_2x_steps": held[2 * STEPS][0],
        "every_step_bytes": held[STEPS][1],
        "every_step_bytes_2x_steps": held[2 * STEPS][1],
    }


def main() -> None:
    pipe = build_tiny_sd(seed=0)
    settings = GenerateConfig()  # default resolutions: cross 16 and 32, self 32
    figures: dict[str, float] = {"steps": STEPS, "repeats": REPEATS}
    header = (
        f"{'px':>4} {'plain s':>8} {'capture s':>10} {'ratio':>6} {'+masks s':>9} {'ratio':>6} "
        f"{'held B':>8} {'held B 2x':>10} {'every-step B':>13} {'every-step 2x':>14}"
    )
    print(
        f"tiny SD pipeline, {STEPS} steps, median of {REPEATS}, torch threads {torch.get_num_threads()}"
    )
    print(header)
    for size in SIZES:
        result = measure(pipe, size, settings)
        capture_ratio = result["capture_s"] / result["plain_s"]
        masks_ratio = result["capture_masks_s"] / result["plain_s"]
        print(
            f"{size:>4} {result['plain_s']:>8.3f} {result['capture_s']:>10.3f} {capture_ratio:>6.3f} "
            f"{result['capture_masks_s']:>9.3f} {masks_ratio:>6.3f} {result['held_bytes']:>8} "
            f"{result['held_bytes_2x_steps']:>10} {result['every_step_bytes']:>13} "
            f"{result['every_step_bytes_2x_steps']:>14}"
        )
        figures.update(
            {
                f"plain_s_{size}px": round(result["plain_s"], 4),
                f"capture_s_{size}px": round(result["capture_s"], 4),
                f"capture_vs_plain_ratio_{size}px": round(capture_ratio, 4),
                f"capture_and_masks_vs_plain_ratio_{size}px": round(masks_ratio, 4),
                f"held_bytes_{size}px": result["held_bytes"],
                f"held_bytes_at_2x_steps_{size}px": result["held_bytes_2x_steps"],
                f"every_step_vs_held_bytes_ratio_{size}px": round(
                    result["every_step_bytes"] / result["held_bytes"], 1
                ),
            }
        )
    sys.stdout.write(json.dumps(figures) + "\n")


if __name__ == "__main__":
    main()
