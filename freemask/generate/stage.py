"""Stage 1, generate: Stable Diffusion draws single objects; their masks come from its attention.

``run_generate`` plans every (class, index) sample of the run, takes this shard's share, and
draws it in batches with the attention capture installed. Each sample's image, soft mask and
label mask are written, then its record; a re-run skips recorded samples. Batches are formed
from the whole plan before anything is skipped, so a resumed run draws exactly the batches an
uninterrupted run draws and writes the same bytes.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from freemask.config import GenerateConfig, RunConfig, config_hash
from freemask.errors import FreemaskError
from freemask.generate.attention import AttentionStore, capture_attention
from freemask.generate.masks import ObjectMask, masks_from_attention
from freemask.generate.prompts import Prompt, build_prompt, class_token_indices
from freemask.models import load_sd_pipeline
from freemask.progress import progress_bar
from freemask.records import Instance, Sample, StageStamp, sample_id
from freemask.stage_output import Shard, StageOutput, StageResult
from freemask.storage import encode_image, open_storage

STAGE = "generate"
VERSION = "1"
# Settings that change how fast or how many samples are made, not what each is: left out of
# sample ids (so raising images_per_class extends a finished run).
EXECUTION_FIELDS = {"batch_size", "device", "images_per_class"}


@dataclass(frozen=True)
class PlannedSample:
    """One sample to draw: its id, class (name and 1-based id), noise seed and prompt."""

    id: str
    class_name: str
    class_id: int
    seed: int
    prompt: Prompt


def content_hash(config: RunConfig) -> str:
    """Hash of the settings that determine a sample's content (model, sampling, prompts, masks)."""
    return config_hash(config.generate, exclude=EXECUTION_FIELDS)


def sample_seed(run_seed: int, class_name: str, index: int) -> int:
    """The noise seed of a class's ``index``-th sample: distinct across classes and runs."""
    digest = hashlib.sha256(f"{run_seed}|{class_name}|{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def plan_samples(config: RunConfig) -> list[PlannedSample]:
    """Every sample of the run, class by class, in a fixed order."""
    digest = content_hash(config)
    planned = []
    for class_id, class_name in enumerate(config.classes, start=1):
        for index in range(config.generate.images_per_class):
            seed = sample_seed(config.seed, class_name, index)
            planned.append(
                PlannedSample(
                    id=sample_id(digest, class_name, seed),
                    class_name=class_name,
                    class_id=class_id,
                    seed=seed,
                    prompt=build_prompt(class_name, seed, config.generate),
                )
            )
    return planned


def run_generate(
    config: RunConfig,
    inputs: str | None,
    outputs: str,
    *,
    shard: Shard | None = None,
    pipe: Any | None = None,
) -> StageResult:
    """Draw this shard's share of the run's single-object samples into ``outputs``.

    ``inputs`` is unused (generate is the first stage). ``pipe`` is a loaded
    StableDiffusionPipeline; by default it is loaded from ``config.generate``. Returns what was
    written, skipped (already done) and dropped (empty masks, with reasons in rejected.jsonl).
    Raises FreemaskError for a class word missing from its prompt or non-finite attention.
    """
    settings = config.generate
    shard = shard or Shard()
    storage = open_storage(outputs)
    output = StageOutput(storage, STAGE, shard, settings_hash=content_hash(config))

    # 1. Plan the shard's samples; batches are cut before skipping, so they never change.
    planned = shard.select(plan_samples(config))
    todo = output.pending([item.id for item in planned])
    batches = [
        planned[start : start + settings.batch_size]
        for start in range(0, len(planned), settings.batch_size)
    ]
    batches = [batch for batch in batches if any(item.id in todo for item in batch)]
    if batches and pipe is None:
        pipe = load_sd_pipeline(settings)
    # Every prompt is checked before anything is drawn.
    tokens = {
        item.id: class_token_indices(pipe.tokenizer, item.prompt, item.id)
        for batch in batches
        for item in batch
    }

    # 2. One store for the run's image size; the capture processors stay installed throughout.
    stamp = StageStamp(stage=STAGE, version=VERSION, config_hash=content_hash(config))
    with progress_bar(f"generate {shard.index}/{shard.count}", len(planned)) as advance:
        advance(len(planned) - len(todo))
        if batches:
            scale = pipe.vae_scale_factor
            store = AttentionStore(
                latent_size=(settings.height // scale, settings.width // scale),
                cross_resolutions=settings.cross_attention_resolutions,
                self_resolution=settings.self_attention_resolution,
                window=settings.timestep_window,
            )
            with capture_attention(pipe.unet, store):
                # 3. Draw each batch whole, commit the samples not done yet.
                settings = settings.model_copy(
                    update={"model_id": pipeline_model_id(pipe, settings)}
                )
                for batch in batches:
                    ids = [tokens[item.id] for item in batch]
                    images, masks = draw_batch(pipe, store, batch, ids, settings)
                    for item, image, mask in zip(batch, images, masks, strict=True):
                        if item.id not in todo:
                            continue
                        if mask.is_empty:
                            output.drop(item.id, "empty mask: no pixel above the threshold")
                        else:
                            output.commit(*to_record(item, image, mask, settings, stamp))
                        advance(1)

    # 4. The success marker, with the run's counts.
    return output.finish({"classes": len(config.classes), "planned": len(planned)})


def pipeline_model_id(pipe: Any, settings: GenerateConfig) -> str:
    """The id or folder the pipeline was loaded from (recorded in each sample)."""
    return getattr(pipe, "name_or_path", None) or settings.model_id


def draw_batch(
    pipe: Any,
    store: AttentionStore,
    batch: list[PlannedSample],
    tokens: list[list[int]],
    settings: GenerateConfig,
) -> tuple[list[np.ndarray], list[ObjectMask]]:
    """Draw one batch with attention capture; return uint8 RGB images and their masks."""
    store.begin(tokens, num_steps=settings.num_inference_steps, guided=settings.guidance_scale > 1)
    result = pipe(
        [item.prompt.text for item in batch],
        negative_prompt=[settings.negative_prompt] * len(batch),
        height=settings.height,
        width=settings.width,
        num_inference_steps=settings.num_inference_steps,
        guidance_scale=settings.guidance_scale,
        generator=[torch.Generator("cpu").manual_seed(item.seed) for item in batch],
        output_type="np",
        callback_on_step_end=store.on_step_end,
    )
    ids = [item.id for item in batch]
    masks = masks_from_attention(store, settings, (settings.height, settings.width), ids)
    broken = [
        ids[index] for index, image in enumerate(result.images) if not np.isfinite(image).all()
    ]
    if broken:
        raise FreemaskError(
            f"non-finite pixel values for sample(s) {', '.join(broken)}; check the model's dtype"
        )
    images = [np.round(image * 255).astype(np.uint8) for image in result.images]
    return images, masks


def to_record(
    item: PlannedSample,
    image: np.ndarray,
    mask: ObjectMask,
    settings: GenerateConfig,
    stamp: StageStamp,
) -> tuple[Sample, dict[str, bytes]]:
    """The sample's record and encoded files: RGB PNG, label PNG (class id, 255), float16 npy."""
    height, width = mask.label.shape
    label = np.where(mask.label == 1, item.class_id, mask.label).astype(np.uint8)
    sample = Sample(
        id=item.id,
        image=f"images/{item.id}.png",
        semantic_mask=f"masks/{item.id}.png",
        soft_mask=f"soft_masks/{item.id}.npy",
        width=width,
        height=height,
        instances=[Instance.from_mask(item.class_name, item.class_id, mask.label == 1)],
        prompt=item.prompt.text,
        seed=item.seed,
        model_id=settings.model_id,
        model_revision=settings.revision,
        source=[stamp],
        scores=mask.scores,
    )
    soft = io.BytesIO()
    np.save(soft, mask.soft.astype(np.float16), allow_pickle=False)
    files = {
        sample.image: encode_image(image, sample.image),
        sample.semantic_mask: encode_image(label, sample.semantic_mask),
        sample.soft_mask: soft.getvalue(),
    }
    return sample, files
