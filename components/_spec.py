"""What every container component shares: its image (from images.json) and its command line."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kfp import dsl

from freemask.commands import EXECUTOR_INPUT, task_argv

IMAGES_FILE = Path(__file__).resolve().parent / "images.json"


def image_for(task: str) -> str:
    """The pinned image of a task, e.g. ``ghcr.io/freemask/freemask-segment:0.1.0``."""
    images = json.loads(IMAGES_FILE.read_text())
    name = images["stages"][images["tasks"][task]]
    return f"{images['registry']}/{name}:{images['tag']}"


def spec(task: str, inputs: Mapping[str, Any]) -> dsl.ContainerSpec:
    """The container running ``freemask <task_argv(task, inputs)>`` in the task's image; the
    inputs are the component's placeholders, so every argument is a plain string embedding them
    (tasks with output artifacts also get the launcher's executor input, ``{{$}}``)."""
    values = {**inputs, "executor_input": EXECUTOR_INPUT}
    return dsl.ContainerSpec(
        image=image_for(task), command=["freemask"], args=task_argv(task, values)
    )
