"""What every container component shares: its image (from images/images.json) and arguments."""

from __future__ import annotations

import json
from pathlib import Path

from kfp import dsl

IMAGES_FILE = Path(__file__).resolve().parent / "images.json"


def image_for(task: str) -> str:
    """The pinned image of a task, e.g. ``ghcr.io/freemask/freemask-segment:0.1.0``."""
    images = json.loads(IMAGES_FILE.read_text())
    name = images["stages"][images["tasks"][task]]
    return f"{images['registry']}/{name}:{images['tag']}"


def container_args(argv: list) -> list:
    """``freemask.commands`` arguments with joined pieces as concatenation placeholders and
    literal numbers as strings."""

    def literal(item):
        return str(item) if isinstance(item, int | float) else item

    return [
        dsl.ConcatPlaceholder([literal(part) for part in item])
        if isinstance(item, tuple)
        else literal(item)
        for item in argv
    ]


def spec(task: str, argv: list) -> dsl.ContainerSpec:
    """The container running ``freemask <argv>`` in the task's image."""
    return dsl.ContainerSpec(image=image_for(task), command=["freemask"], args=container_args(argv))
