"""The toy world's text-to-image model: a small Stable Diffusion, same classes as the real one.

``build_toy_pipeline`` makes the untrained pipeline (the training script fills its weights);
``toy_model_path`` is where the trained one ships inside the package, loaded by
``generate.model_id: builtin:toy-sd`` through ``StableDiffusionPipeline.from_pretrained``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from freemask.models import assemble_sd_pipeline, tiny_clip_text_encoder, tiny_clip_tokenizer
from freemask.toyworld.render import VOCABULARY

# Registered as a builtin model folder (pyproject's ``freemask.model_folders`` entry points).
TOY_SD_ID = "builtin:toy-sd"
IMAGE_SIDE = 128
# Captions are at most 14 tokens ("a photo of a red ball and a blue box on a field" + start/end).
MAX_TOKENS = 16


def toy_model_path() -> Path:
    """The folder of the trained toy model shipped with the package (diffusers layout)."""
    return Path(__file__).parent / "model"


def build_toy_pipeline(seed: int = 0) -> Any:
    """An untrained toy StableDiffusionPipeline, seeded.

    The VAE maps a 128-px image to a 32x32x4 latent (factor 4, where Stable Diffusion has 8),
    so the UNet's cross-attention sits on the 16x16 and 8x8 grids, half and a quarter of the
    latent side as SD's 32x32 and 16x16 are (relative to the image, a cell is 6.25% and 12.5% of
    its side, twice SD's 3.1% and 6.25% at 512 px), and its self-attention on 16x16, the grid
    the generate stage refines masks with. The text encoder is a 2-layer CLIP
    over the toy vocabulary, trained with the UNet.
    """
    from diffusers import (
        AutoencoderKL,
        UNet2DConditionModel,
    )

    tokenizer = tiny_clip_tokenizer(VOCABULARY)
    tokenizer.model_max_length = MAX_TOKENS
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=IMAGE_SIDE // 4,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64, 96),
        layers_per_block=1,
        # No attention on the 32x32 grid: on CPU cores it would cost more than the rest.
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64,
        attention_head_dim=16,
        norm_num_groups=16,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        sample_size=IMAGE_SIDE,
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=4,
        norm_num_groups=8,
        # Fully convolutional, so that it can be trained on crops.
        mid_block_add_attention=False,
    )
    torch.manual_seed(seed + 2)
    text_encoder = tiny_clip_text_encoder(tokenizer, width=64, max_tokens=MAX_TOKENS)
    return assemble_sd_pipeline(unet, vae, text_encoder, tokenizer)
