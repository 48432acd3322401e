"""Stage 1, generate: single-object images and their masks from Stable Diffusion's attention."""

from freemask.generate.attention import AttentionStore, CaptureAttnProcessor, capture_attention
from freemask.generate.class_check import (
    ClassCheck,
    ClipCheck,
    LabellerCheck,
    Verdict,
    load_class_check,
)
from freemask.generate.masks import ObjectMask, masks_from_attention
from freemask.generate.prompts import Prompt, build_prompt, class_token_indices
from freemask.generate.stage import plan_samples, run_generate

__all__ = [
    "AttentionStore",
    "CaptureAttnProcessor",
    "ClassCheck",
    "ClipCheck",
    "LabellerCheck",
    "ObjectMask",
    "Prompt",
    "Verdict",
    "build_prompt",
    "capture_attention",
    "class_token_indices",
    "load_class_check",
    "masks_from_attention",
    "plan_samples",
    "run_generate",
]
