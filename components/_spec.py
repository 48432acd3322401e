"""What every container component shares: its image (from images.json) and its command line."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kfp import dsl

from freemask.commands import EXECUTOR_INPUT, task_argv
from freemask.errors import FreemaskError

IMAGES_FILE = Path(__file__).resolve().parent / "images.json"


def image_for(task: str) -> str:
    """The pinned image of a task's family, e.g. ``ghcr.io/freemask/freemask-segment:0.1.0``."""
    images = json.loads(IMAGES_FILE.read_text())
    name = images["families"][images["tasks"][task]]
    return f"{images['registry']}/{name}:{images['tag']}"


def digest_images(lock: str | Path) -> dict[str, str]:
    """Task -> image by digest (``registry/name@sha256:...``), from a digest lock written by
    ``images/build.py --push`` (``{"images": {family: reference}}``). Raises FreemaskError when
    the file is unreadable or lacks a digest for a family that a task runs in."""
    try:
        pinned = json.loads(Path(lock).read_text())["images"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FreemaskError(f"--images-lock {lock}: not a digest lock ({exc})") from None
    tasks = json.loads(IMAGES_FILE.read_text())["tasks"]
    images = {}
    for task, family in tasks.items():
        reference = pinned.get(family, "") if isinstance(pinned, dict) else ""
        if "@sha256:" not in reference:
            raise FreemaskError(f"--images-lock {lock}: no digest for family {family!r}")
        images[task] = reference
    return images


def spec(task: str, inputs: Mapping[str, Any]) -> dsl.ContainerSpec:
    """The container running ``freemask <task_argv(task, inputs)>`` in the task's image; the
    inputs are the component's placeholders, so every argument is a plain string embedding them
    (tasks with output artifacts also get the launcher's executor input, ``{{$}}``)."""
    values = {**inputs, "executor_input": EXECUTOR_INPUT}
    return dsl.ContainerSpec(
        image=image_for(task), command=["freemask"], args=task_argv(task, values)
    )
