"""Procedural toy scenes with exact labels: shapes on textured grounds, under one light.

A scene is drawn from a seed: a background (``SCENES``), then zero or more objects
(``OBJECTS``), each a filled shape of one colour (``COLOURS``) with simple shading, later
objects in front, and finally one ``Light`` (colour temperature, intensity, direction) over
everything. Every pixel's owner is known, so the semantic mask and instance masks are exact;
re-rendering the same objects under another light gives the exact harmonization target.
The caption names what was drawn in the words the toy diffusion model is trained on:
"a photo of a red ball and a blue box on a field".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

# Five shapes that stay distinct on a coarse attention grid: a disk, a square, a ring with a
# large hole, a triangle and a plus sign (whose arms are the thin parts refinement must keep).
OBJECTS = ("ball", "box", "ring", "cone", "cross")
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
DOMAINS = ("toy", "shifted")
# Vocabulary of every caption: what the toy model's tokenizer keeps as whole words.
VOCABULARY = ("a", "photo", "of", "and", "on", *OBJECTS, *COLOURS, *SCENES)
# Shape proportions (fractions of the object's extent).
RING_HOLE = 0.6
CROSS_ARM = 0.36
BOX_SIDE = 0.85  # a box's height over its extent; every other shape is as tall as its extent


@dataclass(frozen=True)
class ToyObject:
    """One shape: class, colour, centre (x, y) and size as fractions of the image side."""

    name: str
    colour: str
    center: tuple[float, float]
    size: float


@dataclass(frozen=True)
class Light:
    """A scene's light: warm (-1) to cool (+1), overall gain, and a gradient along a direction."""

    temperature: float = 0.0
    intensity: float = 1.0
    direction: float = 0.0  # radians; the image darkens toward this side (lit from the other)
    falloff: float = 0.0  # brightness difference across the image, as a fraction

    def field(self, size: int) -> np.ndarray:
        """The light's per-pixel RGB gain, HxWx3 float32."""
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / max(1, size - 1) - 0.5
        along = xs * math.cos(self.direction) + ys * math.sin(self.direction)
        gain = self.intensity * (1 - self.falloff * along)
        tint = np.array(
            [
                1 - 0.2 * self.temperature,
                1 - 0.03 * abs(self.temperature),
                1 + 0.2 * self.temperature,
            ],
            np.float32,
        )
        return gain[..., None] * tint


NEUTRAL_LIGHT = Light()


def random_light(rng: np.random.Generator, domain: str = "toy") -> Light:
    """A light drawn from the range every toy photo is taken under (wider when shifted)."""
    spread = 1.4 if domain == "shifted" else 1.0
    return Light(
        temperature=float(rng.uniform(-1, 1) * spread),
        intensity=float(rng.uniform(1 - 0.3 * spread, 1 + 0.25 * spread)),
        direction=float(rng.uniform(0, 2 * math.pi)),
        falloff=float(rng.uniform(0, 0.5 * spread)),
    )


@dataclass
class ToyScene:
    """A rendered scene: RGB image, per-pixel class ids (0 = background) and instances."""

    image: np.ndarray
    semantic: np.ndarray
    instances: list[tuple[str, np.ndarray]] = field(default_factory=list)
    caption: str = ""
    scene: str = ""
    light: Light = NEUTRAL_LIGHT
    # Per pixel, the index (in caption order) of the object that owns it; -1: background.
    owners: np.ndarray | None = None


def caption_for(scene: str, objects: list[ToyObject]) -> str:
    """The caption of a scene, naming its objects in drawing order."""
    if not objects:
        return f"a photo of a {scene}"
    named = " and ".join(f"a {obj.colour} {obj.name}" for obj in objects)
    return f"a photo of {named} on a {scene}"


def draw_background(
    scene: str, size: int, rng: np.random.Generator, domain: str = "toy"
) -> np.ndarray:
    """A textured background (unlit): sky above the horizon, ground below, smooth noise.

    The ``shifted`` domain draws the same scenes with other textures and tints (tiles, mown
    stripes, ripples, a plain gradient sky): what a labeller trained elsewhere has seen."""
    if domain == "shifted":
        return shifted_background(scene, size, rng)
    sky, ground, horizon, texture = SCENES[scene]
    image = np.empty((size, size, 3), np.float32)
    rows = round(horizon * size)
    image[:] = ground
    if sky is not None and rows > 0:
        fade = np.linspace(1.1, 0.9, rows, dtype=np.float32)[:, None, None]
        image[:rows] = np.asarray(sky, np.float32) * fade
    noise = rng.normal(0, 1, (size // 8 + 1, size // 8 + 1)).astype(np.float32)
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


def shifted_background(scene: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """The shifted domain's background: tinted colours and other textures."""
    sky, ground, horizon, texture = SCENES[scene]
    tint = rng.uniform(0.8, 1.2, 3).astype(np.float32)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
    image = np.empty((size, size, 3), np.float32)
    image[:] = np.asarray(ground, np.float32) * tint
    rows = round(horizon * size)
    if texture == "planks":  # tiles: a checkerboard with grout lines
        cells = int(rng.integers(4, 9))
        checker = ((xs * cells).astype(int) + (ys * cells).astype(int)) % 2
        image *= (0.8 + 0.3 * checker)[..., None]
        grout = (np.minimum((xs * cells) % 1, (ys * cells) % 1) < 0.06)[..., None]
        image = np.where(grout, 200.0, image)
    elif texture == "grass":  # mown stripes
        image *= (0.85 + 0.15 * np.sign(np.sin(ys * math.pi * rng.integers(6, 12))))[..., None]
    elif texture == "sand":  # ripples
        image *= (0.92 + 0.08 * np.sin((ys + 0.1 * np.sin(xs * 9)) * 60))[..., None]
    if sky is not None and rows > 0:
        top = np.asarray(sky, np.float32) * rng.uniform(0.8, 1.2, 3).astype(np.float32)
        fade = np.linspace(0.75, 1.2, rows, dtype=np.float32)[:, None, None]
        image[:rows] = top * fade
    return np.clip(image, 0, 255)


def shape_mask(obj: ToyObject, size: int) -> np.ndarray:
    """The object's exact silhouette as an HxW bool mask."""
    mask = np.zeros((size, size), np.uint8)
    cx, cy = obj.center[0] * size, obj.center[1] * size
    radius = obj.size * size / 2
    if obj.name in ("ball", "ring"):
        cv2.circle(mask, (round(cx), round(cy)), max(1, round(radius)), 1, -1)
        if obj.name == "ring":
            cv2.circle(mask, (round(cx), round(cy)), max(1, round(radius * RING_HOLE)), 0, -1)
        return mask.astype(bool)
    if obj.name == "cross":
        arm = radius * CROSS_ARM
        for half_w, half_h in ((radius, arm), (arm, radius)):
            corners = [(cx - half_w, cy - half_h), (cx + half_w, cy + half_h)]
            top_left, bottom_right = np.round(np.array(corners)).astype(np.int32)
            cv2.rectangle(mask, tuple(top_left), tuple(bottom_right - 1), 1, -1)
        return mask.astype(bool)
    if obj.name == "box":
        points = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        points = [(cx + x * radius * BOX_SIDE, cy + y * radius * BOX_SIDE) for x, y in points]
    elif obj.name == "cone":
        points = [
            (cx, cy - radius),
            (cx + radius * 0.9, cy + radius),
            (cx - radius * 0.9, cy + radius),
        ]
    else:
        raise ValueError(f"unknown toy object {obj.name!r}; expected one of {OBJECTS}")
    cv2.fillPoly(mask, [np.round(np.array(points)).astype(np.int32)], 1)
    return mask.astype(bool)


def shade(obj: ToyObject, size: int) -> np.ndarray:
    """Per-pixel brightness of the object's surface (its own relief, before the scene's light)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
    dx, dy = xs - obj.center[0], ys - obj.center[1]
    if obj.name == "ball":
        distance = np.sqrt((dx + obj.size * 0.15) ** 2 + (dy + obj.size * 0.15) ** 2)
        return np.clip(1.25 - 1.4 * distance / obj.size, 0.55, 1.25)
    if obj.name == "box":
        return np.where(dx > obj.size * 0.1, 0.75, 1.05).astype(np.float32)
    return np.clip(1.05 - 1.2 * dx / obj.size, 0.7, 1.15)


def render(
    scene: str,
    objects: list[ToyObject],
    size: int,
    seed: int,
    light: Light = NEUTRAL_LIGHT,
    domain: str = "toy",
) -> ToyScene:
    """Draw ``objects`` in order over ``scene`` under ``light``; later objects occlude earlier.
    ``domain="shifted"`` draws other textures and jitters the object colours."""
    rng = np.random.default_rng(seed)
    image = draw_background(scene, size, rng, domain)
    semantic = np.zeros((size, size), np.uint8)
    owners = np.full((size, size), -1, np.int16)
    for index, obj in enumerate(objects):
        mask = shape_mask(obj, size)
        colour = np.asarray(COLOURS[obj.colour], np.float32)
        if domain == "shifted":
            colour = np.clip(colour + rng.uniform(-35, 35, 3), 0, 255)
        image[mask] = colour * shade(obj, size)[mask][:, None]
        semantic[mask] = OBJECTS.index(obj.name) + 1
        owners[mask] = index
    if light != NEUTRAL_LIGHT:
        image *= light.field(size)
    instances = [(obj.name, owners == k) for k, obj in enumerate(objects) if (owners == k).any()]
    return ToyScene(
        image=np.clip(image, 0, 255).astype(np.uint8),
        semantic=semantic,
        instances=instances,
        caption=caption_for(scene, objects),
        scene=scene,
        light=light,
        owners=owners,
    )


def random_objects(
    rng: np.random.Generator, count: int, classes: tuple[str, ...] = OBJECTS
) -> list[ToyObject]:
    """``count`` objects at random places; one fills much of the frame, several share it."""
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
    return placed


def random_scene(
    seed: int,
    size: int = 128,
    objects: tuple[int, int] = (1, 2),
    classes: tuple[str, ...] = OBJECTS,
    domain: str = "toy",
) -> ToyScene:
    """A scene drawn from ``seed``: a random background, ``objects[0]..objects[1]`` shapes and
    a random light."""
    rng = np.random.default_rng([seed, 7])
    scene = str(rng.choice(list(SCENES)))
    count = int(rng.integers(objects[0], objects[1] + 1))
    placed = random_objects(rng, count, classes)
    return render(scene, placed, size, seed, random_light(rng, domain), domain)


@dataclass(frozen=True)
class SceneRelations:
    """How a world's scenes look: per class, its weight in each scene and its height as a
    fraction of the image side (a relation table's ``scenes`` and ``size``)."""

    weights: dict[str, dict[str, float]]
    heights: dict[str, float]


def related_scene(
    seed: int,
    size: int,
    objects: tuple[int, int],
    relations: SceneRelations,
    domain: str = "toy",
) -> ToyScene:
    """A scene drawn as the relation table says the world is: the background in proportion to
    its classes' weights, objects of the classes that belong there, at their table heights
    (+-20%), under a random light."""
    rng = np.random.default_rng([seed, 11])
    totals = {
        scene: sum(weights.get(scene, 0.0) for weights in relations.weights.values())
        for scene in SCENES
    }
    names = [scene for scene, total in totals.items() if total > 0]
    if not names:
        raise ValueError(
            f"no class of {sorted(relations.weights)} belongs to any of {list(SCENES)}"
        )
    chances = np.array([totals[scene] for scene in names])
    scene = str(rng.choice(names, p=chances / chances.sum()))
    members = [name for name, weights in relations.weights.items() if weights.get(scene, 0.0) > 0]
    member_chances = np.array([relations.weights[name][scene] for name in members])
    placed = []
    for _ in range(int(rng.integers(objects[0], objects[1] + 1))):
        name = str(rng.choice(members, p=member_chances / member_chances.sum()))
        height = relations.heights[name] * float(rng.uniform(0.8, 1.2))
        extent = min(0.9, height / (BOX_SIDE if name == "box" else 1.0))
        margin = extent / 2
        placed.append(
            ToyObject(
                name=name,
                colour=str(rng.choice(list(COLOURS))),
                center=(
                    float(rng.uniform(margin, 1 - margin)),
                    float(rng.uniform(margin, 1 - margin)),
                ),
                size=extent,
            )
        )
    return render(scene, placed, size, seed, random_light(rng, domain), domain)
