"""Data with exact truth for measuring refinement and harmonization on real photographs.

``exact_composites`` cuts shapes out of one photograph and pastes them onto another, so the
mask is exactly known; ``degrade_mask`` makes a true mask look like an attention mask (coarse
grid, blur, noise, upsampled). ``perturb_colour`` changes a masked region's colour the way the
iHarmony4 protocol does (colour transfer from another photograph, gamma, gain), so that the
original is the harmonization target; ``perturb_lighting`` changes only its light (gamma, gain,
a mild cast), for objects pasted from another photograph whose own colour must survive. Photographs are passed in (tests and benchmarks use
``skimage.data``, see ``sample_photographs``). ``refine_cases`` adds the cases where
attention masks are hard to refine: objects smaller than an attention cell, thin parts, soft
maps that peak low, objects of one colour of their own.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Composite:
    """An image whose object mask is exact."""

    image: np.ndarray
    mask: np.ndarray


def random_shape(size: int, rng: np.random.Generator) -> np.ndarray:
    """A filled star-like polygon or ellipse covering roughly 10-35% of a size x size image."""
    mask = np.zeros((size, size), np.uint8)
    centre = rng.uniform(0.35, 0.65, 2) * size
    if rng.random() < 0.5:
        axes = (rng.uniform(0.15, 0.35, 2) * size).astype(int)
        cv2.ellipse(
            mask, tuple(centre.astype(int)), tuple(axes), rng.uniform(0, 180), 0, 360, 1, -1
        )
    else:
        points = int(rng.integers(5, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, 2 * points))
        radii = rng.uniform(0.12, 0.35, 2 * points) * size
        polygon = np.stack(
            [centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)], 1
        )
        cv2.fillPoly(mask, [polygon.astype(np.int32)], 1)
    return mask.astype(bool)


def exact_composites(
    photographs: list[np.ndarray], count: int, size: int, seed: int = 0
) -> list[Composite]:
    """``count`` composites: a shape cut from one photograph pasted onto another (size x size)."""
    rng = np.random.default_rng(seed)
    resized = [
        cv2.resize(photo, (size, size), interpolation=cv2.INTER_AREA) for photo in photographs
    ]
    composites = []
    for _ in range(count):
        source, target = rng.choice(len(resized), 2, replace=False)
        mask = random_shape(size, rng)
        image = np.where(mask[..., None], resized[source], resized[target])
        composites.append(Composite(image.astype(np.uint8), mask))
    return composites


def degrade_mask(mask: np.ndarray, rng: np.random.Generator, grid: int = 16) -> np.ndarray:
    """A soft mask as attention gives it: area-downsampled to ``grid``, blurred, noisy, upsampled."""
    height, width = mask.shape
    coarse = cv2.resize(mask.astype(np.float32), (grid, grid), interpolation=cv2.INTER_AREA)
    coarse = cv2.GaussianBlur(coarse, (0, 0), 0.8)
    coarse = np.clip(coarse + rng.normal(0, 0.08, coarse.shape), 0, 1).astype(np.float32)
    coarse = coarse / max(float(coarse.max()), 1e-6)
    return np.clip(cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR), 0, 1)


@dataclass(frozen=True)
class RefineCase:
    """An image, its object's exact mask and an attention-like soft mask of that object."""

    image: np.ndarray
    mask: np.ndarray
    soft: np.ndarray


REFINE_CASES = ("easy", "small", "thin", "low_peak", "own_colour")


def _small_objects(size: int, rng: np.random.Generator, cell: int) -> np.ndarray:
    """Three to six discs, each narrower than one attention cell."""
    mask = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(3, 7))):
        centre = (int(rng.uniform(0.15, 0.85) * size), int(rng.uniform(0.15, 0.85) * size))
        cv2.circle(mask, centre, int(rng.integers(1, max(2, cell // 2))), 1, -1)
    return mask.astype(bool)


def _thin_object(size: int, rng: np.random.Generator) -> np.ndarray:
    """A small body with two to four long limbs two or three pixels wide."""
    mask = np.zeros((size, size), np.uint8)
    centre = (rng.uniform(0.4, 0.6, 2) * size).astype(int)
    axes = (rng.uniform(0.06, 0.12, 2) * size).astype(int)
    cv2.ellipse(mask, tuple(centre), tuple(axes), rng.uniform(0, 180), 0, 360, 1, -1)
    for angle in rng.uniform(0, 2 * np.pi, int(rng.integers(2, 5))):
        length = rng.uniform(0.25, 0.4) * size
        end = centre + length * np.array([np.cos(angle), np.sin(angle)])
        cv2.line(mask, tuple(centre), tuple(end.astype(int)), 1, int(rng.integers(2, 4)))
    return mask.astype(bool)


def refine_cases(
    kind: str, photographs: list[np.ndarray], count: int, size: int, seed: int = 0, grid: int = 16
) -> list[RefineCase]:
    """``count`` single-object images of one ``kind`` (``REFINE_CASES``) with exact masks.

    ``easy``: a large shape cut from one photograph onto another. The hard cases, as attention
    gives them on real photographs: ``small`` objects narrower than one attention cell,
    ``thin`` parts, ``low_peak`` soft maps whose maximum is 0.55-0.85, and ``own_colour``
    objects of one flat colour of their own on a textured photograph.
    """
    if kind not in REFINE_CASES:
        raise ValueError(f"unknown refine case {kind!r}; known: {', '.join(REFINE_CASES)}")
    rng = np.random.default_rng(seed)
    resized = [
        cv2.resize(photo, (size, size), interpolation=cv2.INTER_AREA) for photo in photographs
    ]
    cases = []
    for _ in range(count):
        source, target = rng.choice(len(resized), 2, replace=False)
        if kind == "small":
            mask = _small_objects(size, rng, size // grid)
        elif kind == "thin":
            mask = _thin_object(size, rng)
        else:
            mask = random_shape(size, rng)
        inside = resized[source]
        if kind == "own_colour":
            colour = rng.uniform(30, 225, 3)
            shading = rng.normal(0, 6, (size, size, 1))
            inside = np.clip(colour + shading, 0, 255).astype(np.uint8)
        image = np.where(mask[..., None], inside, resized[target]).astype(np.uint8)
        soft = degrade_mask(mask, rng, grid)
        if kind == "low_peak":
            soft = soft * rng.uniform(0.55, 0.85)
        cases.append(RefineCase(image, mask, soft.astype(np.float32)))
    return cases


def iou(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    union = np.logical_or(prediction, truth).sum()
    return float(np.logical_and(prediction, truth).sum() / union) if union else 1.0


def perturb_colour(
    image: np.ndarray, mask: np.ndarray, reference: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Change the masked region's colour: Lab statistics of ``reference``, then gamma and gain."""
    lab = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    ref = cv2.cvtColor(reference.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB).reshape(-1, 3)
    region = lab[mask]
    mean, std = region.mean(0), region.std(0) + 1e-6
    shifted = (region - mean) / std * (0.5 * std + 0.5 * ref.std(0)) + (
        0.5 * mean + 0.5 * ref.mean(0)
    )
    lab[mask] = shifted
    rgb = np.clip(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB), 0, 1)
    gamma, gain = rng.uniform(0.7, 1.4), rng.uniform(0.8, 1.2)
    rgb[mask] = np.clip(gain * rgb[mask] ** gamma, 0, 1)
    return np.round(rgb * 255).astype(np.uint8)


def perturb_lighting(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Change the masked region's lighting only: gamma, gain and a mild per-channel colour cast."""
    rgb = image.astype(np.float32) / 255.0
    gamma, gain = rng.uniform(0.7, 1.4), rng.uniform(0.7, 1.3)
    cast = rng.uniform(0.9, 1.1, 3)
    rgb[mask] = np.clip(gain * cast * rgb[mask] ** gamma, 0, 1)
    return np.round(rgb * 255).astype(np.uint8)


def harmonization_errors(
    result: np.ndarray, target: np.ndarray, mask: np.ndarray
) -> dict[str, float]:
    """MSE (whole image), fMSE (foreground only) and PSNR of ``result`` against ``target``."""
    difference = (result.astype(np.float64) - target.astype(np.float64)) ** 2
    mse = float(difference.mean())
    fmse = float(difference[mask].mean()) if mask.any() else 0.0
    psnr = float(10 * np.log10(255.0**2 / max(mse, 1e-10)))
    return {"mse": mse, "fmse": fmse, "psnr": psnr}


def sample_photographs() -> list[np.ndarray]:
    """Six RGB photographs shipped inside scikit-image (a development dependency; no download)."""
    from skimage import data

    gray = data.camera()
    return [
        data.astronaut(),
        data.coffee(),
        data.chelsea(),
        data.rocket(),
        data.immunohistochemistry(),
        np.dstack([gray, gray, gray]),
    ]
