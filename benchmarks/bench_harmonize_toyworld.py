"""Harmonization against its exact target: pasted objects lit by another light, per class.

Each composite is a rendered background under the scene's light with 1-2 rendered objects
pasted from renders under their own random lights (what compose does with generated objects).
The truth is the same objects rendered under the scene's light (``freemask.toyworld.render``
applies one light to objects and background alike), so the harmonize stage's output can be
scored pixel by pixel: foreground MSE (fMSE, iHarmony4's measure) and foreground PSNR on the
objects' pixels, per class, for each setting and for no harmonization. Three seeds, mean +- sd:
a difference inside the noise is no difference.

Usage: ``python benchmarks/bench_harmonize_toyworld.py [--seeds 0 1 2] [--composites 80]``. The last
line is one JSON object; ``ratio`` keys compare a setting's fMSE with no harmonization's.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from freemask.config import HarmonizeConfig
from freemask.harmonize.stage import harmonize_sample, make_harmonizer
from freemask.toyworld.render import OBJECTS, SCENES, random_light, random_objects, render

SIZE = 128
SETTINGS = {
    "none": None,
    "lightness (default)": HarmonizeConfig(),
    "lightness + white balance": HarmonizeConfig(white_balance=1.0),
    "full colour transfer (keep_hue off)": HarmonizeConfig(keep_hue=False, strength=1.0),
}


def composite(seed: int) -> tuple[np.ndarray, np.ndarray, list[tuple[str, np.ndarray]]]:
    """(pasted image, exact target, visible object masks with their classes)."""
    rng = np.random.default_rng([seed, 5])
    scene = str(rng.choice(list(SCENES)))
    objects = random_objects(rng, int(rng.integers(1, 3)))
    scene_light = random_light(rng)
    target = render(scene, objects, SIZE, seed, scene_light)
    pasted = render(scene, [], SIZE, seed, scene_light).image.copy()
    for index in range(len(objects)):  # each object drawn under a light of its own
        own = render(scene, objects, SIZE, seed, random_light(rng))
        visible = target.owners == index
        pasted[visible] = own.image[visible]
    masks = [(obj.name, target.owners == index) for index, obj in enumerate(objects)]
    return pasted, target.image, [(name, mask) for name, mask in masks if mask.any()]


def score(image: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """Foreground MSE of ``image`` against ``target`` on ``mask`` (0-255 scale)."""
    diff = image[mask].astype(np.float64) - target[mask].astype(np.float64)
    return float((diff**2).mean())


def run_seed(seed: int, count: int) -> dict[str, dict[str, list[float]]]:
    """Per setting, per class: the fMSE of every object of ``count`` composites."""
    harmonizers = {name: make_harmonizer(cfg) if cfg else None for name, cfg in SETTINGS.items()}
    results = {name: {cls: [] for cls in OBJECTS} for name in SETTINGS}
    for index in range(count):
        pasted, target, masks = composite(seed * 100_003 + index)
        for name, harmonizer in harmonizers.items():
            image = pasted
            if harmonizer is not None:
                image, _ = harmonize_sample(pasted, [mask for _, mask in masks], harmonizer)
            for cls, mask in masks:
                results[name][cls].append(score(image, target, mask))
    return results


def psnr(mse: float) -> float:
    return 10 * np.log10(255**2 / max(mse, 1e-9))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--composites", type=int, default=80)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    per_seed = [run_seed(seed, args.composites) for seed in args.seeds]
    figures: dict[str, float] = {}
    print(f"harmonization against the exact target, {len(args.seeds)} seeds (mean +- sd)")
    print(f"{'setting':40} {'fMSE':>18} {'fPSNR dB':>16}  per class fMSE")
    baseline = []
    for name in SETTINGS:
        overall = [
            float(np.mean([v for cls in run[name].values() for v in cls])) for run in per_seed
        ]
        per_class = {
            cls: float(np.mean([np.mean(run[name][cls]) for run in per_seed if run[name][cls]]))
            for cls in OBJECTS
        }
        if name == "none":
            baseline = overall
        mean, sd = float(np.mean(overall)), float(np.std(overall))
        psnrs = [psnr(value) for value in overall]
        classes = " ".join(f"{cls} {value:.0f}" for cls, value in per_class.items())
        print(
            f"{name:40} {mean:9.1f} +- {sd:5.1f} {np.mean(psnrs):7.2f} +- {np.std(psnrs):4.2f}  {classes}"
        )
        key = name.split(" (")[0].replace(" + ", "_").replace(" ", "_")
        figures[f"{key}_fmse"] = round(mean, 2)
        figures[f"{key}_fmse_sd"] = round(sd, 2)
        if name != "none":
            ratios = [value / base for value, base in zip(overall, baseline, strict=True)]
            figures[f"{key}_vs_none_fmse_ratio"] = round(float(np.mean(ratios)), 4)
    figures["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
