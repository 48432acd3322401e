"""Procedural toy scenes with exact labels: coloured shapes on textured grounds and skies.

A scene is drawn from a seed: a background (``SCENES``), then zero or more objects
(``OBJECTS``), each a filled shape of one colour (``COLOURS``) with simple shading, later
objects in front. Every pixel's owner is known, so the semantic mask and instance masks are
exact. The caption names what was drawn in the words the toy diffusion model is trained on:
"a photo of a red ball and a blue box on a field".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

OBJECTS = ("ball", "box", "ring", "star", "cone")
COLOURS = {
    "red": (210, 40, 40),
    "blue": (40, 70, 220),
    "yellow": (235, 205, 40),
    "purple": (140, 50, 180),
    "orange": (240, 130, 30),
    "white": (235, 235, 235),
}
# Scene -> (sky colour or None, ground colour, horizon as a fraction of the height, texture).
SCENES = {
    "field": ((135, 190, 240), (70, 140, 50), 0.35, "grass"),
    "beach": ((150, 200, 245), (225, 200, 140), 0.4, "sand"),
    "floor": (None, (150, 110, 70), 0.0, "planks"),
    "sky": ((90, 150, 230), (90, 150, 230), 1.0, "clouds"),
}
# Vocabulary of every caption: what the toy model's tokenizer keeps as whole words.
VOCABULARY = ("a", "photo", "of", "and", "on", *OBJECTS, *COLOURS, *SCENES)


@dataclass(frozen=True)
class ToyObject:
    """One shape: class, colour, centre (x, y) and size as fractions of the image side."""

    name: str
    colour: str
    center: tuple[float, float]
    size: float


@dataclass
class ToyScene:
    """A rendered scene: RGB image, per-pixel class ids (0 = background) and instances."""

    image: np.ndarray
    semantic: np.ndarray
    instances: list[tuple[str, np.ndarray]] = field(default_factory=list)
    caption: str = ""
    scene: str = ""


def caption_for(scene: str, objects: list[ToyObject]) -> str:
    """The caption of a scene, naming its objects in drawing order."""
    if not objects:
        return f"a photo of a {scene}"
    named = " and ".join(f"a {obj.colour} {obj.name}" for obj in objects)
    return f"a photo of {named} on a {scene}"


def draw_background(scene: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A textured background: sky above the horizon, ground below, smooth noise on both."""
    sky, ground, horizon, texture = SCENES[scene]
    image = np.empty((size, size, 3), np.float32)
    rows = round(horizon * size)
    image[:] = ground
    if sky is not None and rows > 0:
        fade = np.linspace(1.1, 0.9, rows, dtype=np.float32)[:, None, None]
        image[:rows] = np.asarray(sky, np.float32) * fade
    noise = rng.normal(0, 1, (size // 4 + 1, size // 4 + 1)).astype(np.float32)
    noise = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)[..., None]
    if texture == "planks":
        stripes = (np.arange(size) // max(2, size // 8) % 2).astype(np.float32)[None, :, None]
        image *= 0.85 + 0.15 * stripes
        image += 6 * noise
    elif texture == "clouds":
        image += 40 * np.clip(noise, 0, None)
    else:
        grain = rng.normal(0, 1, (size, size, 1)).astype(np.float32)
        image[rows:] += 12 * noise[rows:] + 8 * grain[rows:]
    return np.clip(image, 0, 255)


def shape_mask(obj: ToyObject, size: int) -> np.ndarray:
    """The object's exact silhouette as an HxW bool mask."""
    mask = np.zeros((size, size), np.uint8)
    cx, cy = obj.center[0] * size, obj.center[1] * size
    radius = obj.size * size / 2
    if obj.name in ("ball", "ring"):
        cv2.circle(mask, (round(cx), round(cy)), max(1, round(radius)), 1, -1)
        if obj.name == "ring":
            cv2.circle(mask, (round(cx), round(cy)), max(1, round(radius * 0.55)), 0, -1)
        return mask.astype(bool)
    if obj.name == "box":
        points = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        points = [(cx + x * radius * 0.85, cy + y * radius * 0.85) for x, y in points]
    elif obj.name == "cone":
        points = [
            (cx, cy - radius),
            (cx + radius * 0.7, cy + radius),
            (cx - radius * 0.7, cy + radius),
        ]
    else:  # star: ten points alternating outer and inner radius
        points = [
            (
                cx + (radius if k % 2 == 0 else radius * 0.45) * math.sin(k * math.pi / 5),
                cy - (radius if k % 2 == 0 else radius * 0.45) * math.cos(k * math.pi / 5),
            )
            for k in range(10)
        ]
    cv2.fillPoly(mask, [np.round(np.array(points)).astype(np.int32)], 1)
    return mask.astype(bool)


def shade(obj: ToyObject, size: int) -> np.ndarray:
    """Per-pixel brightness of the object's surface: lit from the top left."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
    dx, dy = xs - obj.center[0], ys - obj.center[1]
    if obj.name == "ball":
        distance = np.sqrt((dx + obj.size * 0.15) ** 2 + (dy + obj.size * 0.15) ** 2)
        return np.clip(1.25 - 1.4 * distance / obj.size, 0.55, 1.25)
    if obj.name == "box":
        return np.where(dx > obj.size * 0.1, 0.75, 1.05).astype(np.float32)
    return np.clip(1.05 - 1.2 * dx / obj.size, 0.7, 1.15)


def render(scene: str, objects: list[ToyObject], size: int, seed: int) -> ToyScene:
    """Draw ``objects`` in order over ``scene``; later objects occlude earlier ones."""
    rng = np.random.default_rng(seed)
    image = draw_background(scene, size, rng)
    semantic = np.zeros((size, size), np.uint8)
    owners = np.full((size, size), -1, np.int16)
    for index, obj in enumerate(objects):
        mask = shape_mask(obj, size)
        colour = np.asarray(COLOURS[obj.colour], np.float32)
        image[mask] = np.clip(colour * shade(obj, size)[mask][:, None], 0, 255)
        semantic[mask] = OBJECTS.index(obj.name) + 1
        owners[mask] = index
    instances = [(obj.name, owners == k) for k, obj in enumerate(objects) if (owners == k).any()]
    return ToyScene(
        image=image.astype(np.uint8),
        semantic=semantic,
        instances=instances,
        caption=caption_for(scene, objects),
        scene=scene,
    )


def random_scene(
    seed: int,
    size: int = 64,
    objects: tuple[int, int] = (1, 2),
    classes: tuple[str, ...] = OBJECTS,
) -> ToyScene:
    """A scene drawn from ``seed``: a random background and ``objects[0]..objects[1]`` shapes."""
    rng = np.random.default_rng([seed, 7])
    scene = str(rng.choice(list(SCENES)))
    count = int(rng.integers(objects[0], objects[1] + 1))
    # One object fills much of the frame (as a single-object photo would); several share it.
    low, high = (0.4, 0.65) if count == 1 else (0.28, 0.45)
    placed = []
    for _ in range(count):
        extent = float(rng.uniform(low, high))
        margin = extent / 2
        placed.append(
            ToyObject(
                name=str(rng.choice(classes)),
                colour=str(rng.choice(list(COLOURS))),
                center=(
                    float(rng.uniform(margin, 1 - margin)),
                    float(rng.uniform(margin, 1 - margin)),
                ),
                size=extent,
            )
        )
    return render(scene, placed, size, seed)
