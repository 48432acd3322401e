"""Harmonization on the iHarmony4 protocol with real photographs (skimage.data).

A region of a photograph gets another photograph's colour statistics plus a random gamma and
gain; harmonizing should bring it back. Rows: MSE, fMSE (foreground only) and PSNR of the
composite and of the harmonized image against the original, and seconds per 512-px image for
the classical colour transfer (with and without Poisson blending) and for PCTNet's forward
pass (random weights: its speed, not its quality, is what this measures without the published
weights).
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
    random_shape,
    sample_photographs,
)
from freemask.harmonize import PCTNet, PCTNetHarmonizer, poisson_blend, transfer_colour

SIZE = 512
CASES = 24
SETTINGS = {"strength": 0.8, "ring_width": 12, "max_std_ratio": 1.5, "feather_sigma": 2.0}


def cases() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    photos = sample_photographs()
    photos = [cv2.resize(photo, (SIZE, SIZE), interpolation=cv2.INTER_AREA) for photo in photos]
    rng = np.random.default_rng(0)
    made = []
    for _ in range(CASES):
        original, reference = rng.choice(len(photos), 2, replace=False)
        mask = random_shape(SIZE, rng)
        made.append(
            (photos[original], mask, perturb_colour(photos[original], mask, photos[reference], rng))
        )
    return made


def measure(method, made) -> tuple[dict[str, float], float]:
    errors, seconds = [], []
    for original, mask, composite in made:
        start = time.perf_counter()
        result = method(composite, mask)
        seconds.append(time.perf_counter() - start)
        errors.append(harmonization_errors(result, original, mask))
    means = {key: float(np.mean([e[key] for e in errors])) for key in errors[0]}
    return means, statistics.median(seconds)


def main() -> None:
    made = cases()
    composite, _ = measure(lambda image, mask: image, made)

    def classical(image, mask):
        return transfer_colour(image, mask, np.zeros_like(mask), **SETTINGS)

    def with_poisson(image, mask):
        return poisson_blend(image, classical(image, mask), mask)

    transfer, transfer_s = measure(classical, made)
    poisson, poisson_s = measure(with_poisson, made)
    torch.manual_seed(0)
    pctnet = PCTNetHarmonizer(PCTNet())
    _, pctnet_s = measure(pctnet.harmonize, made[:3])
    print(f"iHarmony4-style protocol: {CASES} perturbed regions on {SIZE}-px photographs")
    print(f"{'image':<32} {'MSE':>8} {'fMSE':>8} {'PSNR':>7} {'s/image':>8}")
    for name, errors, seconds in [
        ("composite", composite, None),
        ("colour transfer", transfer, transfer_s),
        ("colour transfer + Poisson", poisson, poisson_s),
    ]:
        timing = f"{seconds:>8.3f}" if seconds is not None else f"{'-':>8}"
        print(
            f"{name:<32} {errors['mse']:>8.1f} {errors['fmse']:>8.1f} {errors['psnr']:>7.2f} {timing}"
        )
    print(f"{'PCTNet ViT forward (CPU)':<32} {'':>8} {'':>8} {'':>7} {pctnet_s:>8.3f}")
    figures = {
        "cases": CASES,
        "composite_fmse": round(composite["fmse"], 2),
        "transfer_fmse": round(transfer["fmse"], 2),
        "poisson_fmse": round(poisson["fmse"], 2),
        "composite_psnr": round(composite["psnr"], 3),
        "transfer_psnr": round(transfer["psnr"], 3),
        "transfer_vs_composite_fmse_ratio": round(transfer["fmse"] / composite["fmse"], 4),
        "poisson_vs_composite_fmse_ratio": round(poisson["fmse"] / composite["fmse"], 4),
        "transfer_s_per_image": round(transfer_s, 4),
        "poisson_s_per_image": round(poisson_s, 4),
        "pctnet_s_per_image": round(pctnet_s, 4),
    }
    sys.stdout.write(json.dumps(figures) + "\n")


if __name__ == "__main__":
    main()
