"""The settings an active-learning prefix was made with, and the guard that keeps them.

The loop's prefix records them (``stage.json``) before its first write. A later start with
other settings, on a finished loop or one under way, is refused with the changed fields named,
instead of resuming rounds made under the old rule and presenting them under the new one.
"""

from __future__ import annotations

from typing import Any

from freemask.config import RunConfig
from freemask.stage_output import (
    claim_settings,
    classes_setting,
    settings_of,
    settings_record,
)
from freemask.storage import Storage

STAGE = "active"
# How the loop runs, not what it makes: changing these on a prefix is allowed.
EXECUTION_FIELDS = {"device", "precision", "predict_batch_size", "checkpoint_every"}


def loop_settings(config: RunConfig) -> dict[str, Any]:
    """What decides the loop's rounds and dataset: the classes (by digest), the seed, the
    active section, the segmenter's training and judging settings, and the versions' mode."""
    return {
        "classes": classes_setting(config.classes),
        "seed": config.seed,
        "versions.mode": config.versions.mode,
        **settings_of(config.active, "active"),
        **settings_of(config.segment, "segment", exclude=EXECUTION_FIELDS),
    }


def guard_settings(config: RunConfig, out: Storage) -> None:
    """Record the loop's settings under ``out``, or refuse when it holds rounds made with
    other settings (FreemaskError naming each changed field)."""
    claim_settings(out, settings_record(STAGE, None, loop_settings(config)))
