"""Contact sheets that show a stage's labels class by class: for each class a few samples, the
worst-scoring beside typical ones (those nearest the class's median score), so that a sheet
points at what went wrong rather than showing whichever samples came first."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from freemask.active.report import overlay
from freemask.records import Sample
from freemask.storage import Storage, read_image

PER_CLASS = 4  # tiles per class: up to WORST worst-scoring, the rest typical
WORST = 2
MAX_CLASSES = 12  # past this many, the classes with the lowest mean score are shown
TILE = 96  # side of each half (image, image with its labels) of a tile, in pixels
LABEL_WIDTH = 88
CAPTION = 14
NO_CLASS = ""  # the one group of a stage whose samples hold no objects (backgrounds)

ScoreOf = Callable[[Sample, str], "float | None"]


@dataclass(frozen=True)
class Tile:
    """One sample shown for one class: ``kind`` is "worst" or "typical"."""

    class_name: str
    kind: str
    sample: Sample
    score: float | None


def pick_tiles(
    samples: list[Sample],
    class_names: list[str],
    score_of: ScoreOf | None = None,
    per_class: int = PER_CLASS,
    max_classes: int = MAX_CLASSES,
) -> tuple[list[Tile], int]:
    """The tiles of a class-balanced sheet, class by class (``class_names`` order), and how
    many classes with samples were left out (past ``max_classes``). Per class: the samples
    holding it, the ``WORST`` lowest-scoring first (at most half of those shown), then the ones
    nearest the median score; samples without a score are spread evenly by id. Samples holding
    no class at all (backgrounds) form one group, ``NO_CLASS``."""
    score_of = score_of or (lambda sample, name: None)
    groups = {name: [s for s in samples if name in s.class_names()] for name in class_names}
    groups = {name: members for name, members in groups.items() if members}
    if not groups and samples:
        groups = {NO_CLASS: samples}
    chosen = list(groups)
    if len(chosen) > max_classes:
        chosen = sorted(chosen, key=lambda name: _mean_score(groups[name], name, score_of))
        chosen = [name for name in groups if name in set(chosen[:max_classes])]
    tiles: list[Tile] = []
    for name in chosen:
        tiles.extend(_class_tiles(name, groups[name], score_of, per_class))
    return tiles, len(groups) - len(chosen)


def _class_tiles(name: str, members: list[Sample], score_of: ScoreOf, count: int) -> list[Tile]:
    members = sorted(members, key=lambda sample: sample.id)
    scored = sorted(
        (score, sample.id, sample)
        for sample in members
        if (score := score_of(sample, name)) is not None
    )
    if not scored:
        return [Tile(name, "typical", sample, None) for sample in spread(members, count)]
    shown = min(count, len(scored))
    worst = scored[: min(WORST, shown // 2)]
    median = float(np.median([score for score, _, _ in scored]))
    rest = sorted(scored[len(worst) :], key=lambda item: (abs(item[0] - median), item[1]))
    typical = sorted(rest[: shown - len(worst)])
    return [Tile(name, "worst", s, score) for score, _, s in worst] + [
        Tile(name, "typical", s, score) for score, _, s in typical
    ]


def _mean_score(members: list[Sample], name: str, score_of: ScoreOf) -> float:
    scores = [score for s in members if (score := score_of(s, name)) is not None]
    return float(np.mean(scores)) if scores else float("inf")


def spread(items: list[Sample], count: int) -> list[Sample]:
    """``count`` items evenly spaced over ``items`` (all of them when there are no more)."""
    if len(items) <= count:
        return list(items)
    if count == 1:
        return [items[len(items) // 2]]
    return [items[round(index * (len(items) - 1) / (count - 1))] for index in range(count)]


def tile_image(storage: Storage, sample: Sample) -> Image.Image:
    """The sample's image beside itself with its label map laid over (the image alone when it
    has none), each fitted into ``TILE`` x ``TILE``."""
    image = read_image(storage, sample.image, mode="RGB")
    halves = [image]
    if sample.semantic_mask:
        halves.append(overlay(image, read_image(storage, sample.semantic_mask)))
    tile = Image.new("RGB", (len(halves) * TILE, TILE), "white")
    for index, half in enumerate(halves):
        picture = Image.fromarray(half)
        picture.thumbnail((TILE, TILE), Image.NEAREST if index else Image.BILINEAR)
        tile.paste(picture, (index * TILE, 0))
    return tile


def tile_jpeg(storage: Storage, sample: Sample) -> bytes:
    """``tile_image`` as a small JPEG, for the report page."""
    buffer = io.BytesIO()
    tile_image(storage, sample).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def sheet_png(storage: Storage, tiles: list[Tile]) -> bytes:
    """The tiles as one PNG: a row per class (its name on the left), each tile captioned with
    its kind and score."""
    rows: dict[str, list[Tile]] = {}
    for tile in tiles:
        rows.setdefault(tile.class_name, []).append(tile)
    columns = max((len(row) for row in rows.values()), default=1)
    width = LABEL_WIDTH + columns * (2 * TILE + 4)
    sheet = Image.new("RGB", (width, max(1, len(rows)) * (TILE + CAPTION)), "white")
    draw = ImageDraw.Draw(sheet)
    for row_index, (name, row) in enumerate(rows.items()):
        top = row_index * (TILE + CAPTION)
        draw.text((4, top + TILE // 2), name[:14], fill="black")
        for index, tile in enumerate(row):
            left = LABEL_WIDTH + index * (2 * TILE + 4)
            sheet.paste(tile_image(storage, tile.sample), (left, top))
            draw.text((left + 2, top + TILE), caption(tile), fill="black")
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


def caption(tile: Tile) -> str:
    """``worst 0.12`` / ``typical 0.55`` (the kind alone without a score)."""
    return tile.kind if tile.score is None else f"{tile.kind} {tile.score:.2f}"
