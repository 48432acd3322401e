"""Fixtures for the generate stage: the tiny Stable Diffusion pipeline, built offline and seeded."""

from __future__ import annotations

import pytest

from freemask.config import RunConfig
from freemask.models import TINY_SD_ID, build_tiny_sd


@pytest.fixture(scope="session")
def tiny_pipe():
    """A tiny random StableDiffusionPipeline (same classes as the real one); do not mutate."""
    return build_tiny_sd(seed=0)


@pytest.fixture
def make_config(tmp_path):
    """Build a small run config for the tiny pipeline (64 px, 4 steps); keywords set generate."""

    def build(**generate) -> RunConfig:
        return _config(tmp_path, **generate)

    return build


def _config(tmp_path, **generate) -> RunConfig:
    settings = {
        "model_id": TINY_SD_ID,
        "images_per_class": 2,
        "batch_size": 2,
        "height": 64,
        "width": 64,
        "num_inference_steps": 4,
        # Random weights: their attention means nothing, so every mask would be implausible.
        # The checks themselves are tested on crafted attention (test_masks.py).
        "reject_implausible": False,
        **generate,
    }
    return RunConfig.model_validate(
        {
            "name": "gen-test",
            "workdir": str(tmp_path / "work"),
            "classes": ["cat", "traffic light"],
            "generate": settings,
        }
    )
