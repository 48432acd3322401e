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


@pytest.fixture(scope="session")
def tiny_clip_folder(tmp_path_factory):
    """A tiny CLIP (random, seeded weights) saved as a model folder, with the tiny tokenizer of
    the tiny Stable Diffusion and a 32-px image processor: loads as a hub CLIP id would."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from freemask.models import tiny_clip_tokenizer

    folder = tmp_path_factory.mktemp("tiny-clip")
    tokenizer = tiny_clip_tokenizer()
    torch.manual_seed(0)
    model = CLIPModel(
        CLIPConfig(
            text_config={
                "vocab_size": len(tokenizer),
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "max_position_embeddings": 77,
                "bos_token_id": tokenizer.bos_token_id,
                "eos_token_id": tokenizer.eos_token_id,
                "pad_token_id": tokenizer.pad_token_id,
            },
            vision_config={
                "image_size": 32,
                "patch_size": 8,
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
            },
            projection_dim=16,
        )
    )
    model.save_pretrained(folder)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return folder
