"""Loop fixtures: a run config for the tiny Mask2Former and a prepared loop prefix."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import SHAPE_CLASSES

from freemask.active import steps
from freemask.config import RunConfig
from freemask.storage import LocalStorage


def make_config(tmp_path: Path, segment: dict | None = None, active: dict | None = None):
    """A run config for the loop on the tiny Mask2Former, a few training steps per round."""
    return RunConfig.model_validate(
        {
            "name": "rounds-test",
            "workdir": str(tmp_path),
            "classes": SHAPE_CLASSES,
            "segment": {
                "model_id": "builtin:tiny-mask2former",
                "image_size": 64,
                "batch_size": 2,
                "learning_rate": 1e-3,
                "train_steps": 3,
                "checkpoint_every": 2,
                **(segment or {}),
            },
            "active": {"max_rounds": 2, **(active or {})},
        }
    )


@pytest.fixture
def config_for(tmp_path):
    """``config_for(segment=..., active=...)``: a loop config under ``tmp_path``."""
    return lambda **sections: make_config(tmp_path, **sections)


@pytest.fixture
def prepared(tmp_path):
    """``prepared(config, pool_root)``: the loop's prefix, prepared from ``pool_root``."""

    def prepare(config: RunConfig, pool_root: Path) -> LocalStorage:
        out = LocalStorage(tmp_path / "active")
        steps.prepare(config, str(pool_root), out)
        return out

    return prepare
