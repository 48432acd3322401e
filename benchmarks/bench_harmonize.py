"""Harmonization on the iHarmony4 protocol with real photographs (skimage.data), and what it costs.

A region of a photograph gets another photograph's colour statistics plus a random gamma and
gain; harmonizing should bring it back. Rows: fMSE (foreground only) and PSNR against the
original, and the object-vs-surround colour contrast (Lab distance between the object's mean
and that of a 12-px ring of background around it) that a segmenter needs to find the object,
beside the original photograph's own contrast; then the object's mean hue shift (degrees) and
chroma ratio against the composite. Methods: classical colour transfer that moves hue too (the
old default), lighting only (lightness and contrast, hue and chroma kept), and lighting with
white balance. Three seeds (new regions and perturbations): mean +- sd. Also seconds per
512-px image for the default and for PCTNet's forward pass (random weights: its speed, not its
quality, is what this measures without the published weights).
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import cv2
import numpy as np
import torch

from freemask.evaluation import (
    harmonization_errors,
    perturb_colour,
    perturb_lighting,
    random_shape,
    sample_photographs,
)
from freemask.harmonize import PCTNet, PCTNetHarmonizer, background_ring, transfer_colour

SIZE = 256
CASES = 24
SEEDS = (0, 1, 2)
COMMON = {"strength": 0.8, "ring_width": 12, "max_std_ratio": 1.5, "feather_sigma": 2.0}
METHODS = {
    "colour transfer, hue moved (old)": {"keep_hue": False, "white_balance": 0.0},
    "lighting only, strength 0.8": {"keep_hue": True, "white_balance": 0.0},
    "lighting only, strength 0.4 (default)": {
        "keep_hue": True,
        "white_balance": 0.0,
        "strength": 0.4,
    },
    "lighting + white balance 0.5": {"keep_hue": True, "white_balance": 0.5},
    "lighting + white balance 1.0": {"keep_hue": True, "white_balance": 1.0},
}


def cases(
    seed: int, protocol: str = "iharmony4", size: int = SIZE, count: int = CASES
) -> list[tuple[np.ndarray, ...]]:
    """(target, mask, composite) triples. ``iharmony4``: a region of a photograph with another
    photograph's colour statistics, gamma and gain. ``pasted``: an object cut from one
    photograph onto another (its own colour is the target) with only its light changed."""
    photos = sample_photographs()
    photos = [cv2.resize(photo, (size, size), interpolation=cv2.INTER_AREA) for photo in photos]
    rng = np.random.default_rng(seed)
    made = []
    for _ in range(count):
        first, second = rng.choice(len(photos), 2, replace=False)
        mask = random_shape(size, rng)
        if protocol == "iharmony4":
            target = photos[first]
            composite = perturb_colour(target, mask, photos[second], rng)
        else:
            target = np.where(mask[..., None], photos[second], photos[first]).astype(np.uint8)
            composite = perturb_lighting(target, mask, rng)
        made.append((target, mask, composite))
    return made


def lab_means(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean Lab colour of the object and of the background ring around it."""
    lab = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    ring = background_ring(mask, np.zeros_like(mask), COMMON["ring_width"])
    return lab[mask].mean(axis=0), lab[ring].mean(axis=0)


def colour_figures(result: np.ndarray, composite: np.ndarray, mask: np.ndarray) -> dict:
    """Object-vs-ring contrast of ``result``; its hue shift and chroma ratio against ``composite``."""
    obj, ring = lab_means(result, mask)
    before, _ = lab_means(composite, mask)
    hue = np.degrees(np.arctan2(obj[2], obj[1]) - np.arctan2(before[2], before[1]))
    return {
        "contrast": float(np.linalg.norm(obj - ring)),
        "hue_shift": float(abs((hue + 180) % 360 - 180)),
        "chroma_ratio": float(np.hypot(obj[1], obj[2]) / max(np.hypot(before[1], before[2]), 1e-6)),
    }


def measure(method, made) -> dict[str, float]:
    """Mean fMSE, PSNR, contrast, hue shift and chroma ratio over the cases."""
    rows = []
    for original, mask, composite in made:
        result = method(composite, mask)
        rows.append(
            {
                **harmonization_errors(result, original, mask),
                **colour_figures(result, composite, mask),
            }
        )
    return {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}


def seconds_per_image(method, made) -> float:
    """Median seconds per image."""
    seconds = []
    for _, mask, composite in made:
        start = time.perf_counter()
        method(composite, mask)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def harmonizer(settings: dict):
    """The classical harmonizer with ``settings`` on top of the common ones."""

    def harmonize(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return transfer_colour(image, mask, np.zeros_like(mask), **{**COMMON, **settings})

    return harmonize


def protocol_table(protocol: str, methods: dict, figures: dict) -> None:
    """Print one protocol's table (mean +- sd over the seeds) and add its figures."""
    runs, target_contrast = [], []
    for seed in SEEDS:
        made = cases(seed, protocol)
        runs.append({name: measure(method, made) for name, method in methods.items()})
        target_contrast.append(
            float(np.mean([colour_figures(t, t, m)["contrast"] for t, m, _ in made]))
        )
    keys = ["fmse", "psnr", "contrast", "hue_shift", "chroma_ratio"]
    stats = {
        name: {
            key: (
                statistics.mean(run[name][key] for run in runs),
                statistics.stdev(run[name][key] for run in runs),
            )
            for key in keys
        }
        for name in methods
    }
    print(f"\n{protocol}: {CASES} cases on {SIZE}-px photographs per seed, seeds {list(SEEDS)}")
    print(
        f"{'image':<40} {'fMSE':>15} {'PSNR':>13} {'contrast':>13} {'hue shift':>12} {'chroma':>12}"
    )
    for name, row in stats.items():
        print(
            f"{name:<40} {row['fmse'][0]:>8.1f}+-{row['fmse'][1]:<5.1f}"
            f" {row['psnr'][0]:>6.2f}+-{row['psnr'][1]:<4.2f}"
            f" {row['contrast'][0]:>6.1f}+-{row['contrast'][1]:<4.1f}"
            f" {row['hue_shift'][0]:>5.1f}+-{row['hue_shift'][1]:<4.1f}"
            f" {row['chroma_ratio'][0]:>5.2f}+-{row['chroma_ratio'][1]:<4.2f}"
        )
        key = name.split(" (")[0].replace(",", "").replace(".", "").replace(" + ", "_")
        key = f"{protocol}_{key.replace(' ', '_').lower()}"
        for measure_name in keys:
            figures[f"{key}_{measure_name}"] = round(row[measure_name][0], 4)
            figures[f"{key}_{measure_name}_sd"] = round(row[measure_name][1], 4)
        if name != "composite":
            base = stats["composite"]
            figures[f"{key}_vs_composite_fmse_ratio"] = round(row["fmse"][0] / base["fmse"][0], 4)
            figures[f"{key}_vs_composite_contrast_ratio"] = round(
                row["contrast"][0] / base["contrast"][0], 4
            )
    contrast_mean, contrast_sd = statistics.mean(target_contrast), statistics.stdev(target_contrast)
    print(
        f"{'target (contrast only)':<40} {'':>15} {'':>13} "
        f"{contrast_mean:>6.1f}+-{contrast_sd:<4.1f}"
    )
    figures[f"{protocol}_target_contrast"] = round(contrast_mean, 4)


def main() -> None:
    methods = {"composite": lambda image, mask: image}
    methods.update({name: harmonizer(settings) for name, settings in METHODS.items()})
    figures: dict[str, float | int] = {"cases": CASES, "seeds": len(SEEDS)}
    print("mean +- sd over seeds; contrast: Lab distance of object and surround means")
    for protocol in ("iharmony4", "pasted"):
        protocol_table(protocol, methods, figures)
    large = cases(0, size=512, count=3)
    default_s = seconds_per_image(methods["lighting only, strength 0.4 (default)"], large)
    torch.manual_seed(0)
    pctnet_s = seconds_per_image(PCTNetHarmonizer(PCTNet()).harmonize, large)
    print(f"\ns per 512-px image: lighting only {default_s:.3f}, PCTNet ViT (CPU) {pctnet_s:.3f}")
    figures["default_s_per_image"] = round(default_s, 4)
    figures["pctnet_s_per_image"] = round(pctnet_s, 4)
    sys.stdout.write(json.dumps(figures) + "\n")


if __name__ == "__main__":
    main()
