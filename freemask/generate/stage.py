"""Stage 1, generate: Stable Diffusion draws single objects; their masks come from its attention.

``run_generate`` plans every (class, index) sample of the run, takes this shard's share, and
draws it in batches with the attention capture installed. A sample whose mask is implausible,
or whose object the class check (``generate.class_check``, class_check.py) finds to be another
class, is rejected with the reason (the check may relabel it instead). Each kept sample's
image, soft mask and label mask are written, then its record; a re-run skips recorded samples.
Batches are formed from the whole plan before anything is skipped, so a resumed run draws
exactly the batches an uninterrupted run draws and writes the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from numpy.typing import DTypeLike

from freemask.config import GenerateConfig, RunConfig, config_hash
from freemask.errors import FreemaskError
from freemask.generate.attention import AttentionStore, capture_attention
from freemask.generate.class_check import (
    CHECK_FIELDS,
    Verdict,
    check_settings,
    guard_hash,
    judge,
    load_class_check,
    record_verdict,
    relabel_counts,
)
from freemask.generate.init_images import InitImages, load_init_images
from freemask.generate.masks import ObjectMask, masks_from_attention, rejection_reason
from freemask.generate.prompts import Prompt, build_prompt, class_token_indices
from freemask.models import load_sd_pipeline, model_reference
from freemask.progress import progress_bar
from freemask.records import (
    Instance,
    Sample,
    StageStamp,
    ignore_value,
    label_dtype,
    read_manifest,
    sample_id,
)
from freemask.stage_output import Shard, StageOutput, StageResult, read_rejected, settings_of
from freemask.storage import encode_image, open_storage

logger = logging.getLogger(__name__)

STAGE = "generate"
VERSION = "1"
# Settings that change how fast or how many samples are made, not what each is: left out of
# sample ids (so raising images_per_class extends a finished run).
EXECUTION_FIELDS = {"batch_size", "device", "images_per_class"}
# The class check decides which drawn samples are kept (and their class), not what is drawn:
# left out of sample ids (a run with and without it draws the same samples), but guarded.
ID_EXCLUDED = EXECUTION_FIELDS | CHECK_FIELDS
# A class with more than this share of its samples rejected is flagged in the summary and log.
FLAG_REJECTED_SHARE = 0.5


@dataclass(frozen=True)
class PlannedSample:
    """One sample to draw: its id, class (name and 1-based id), noise seed and prompt."""

    id: str
    class_name: str
    class_id: int
    index: int
    seed: int
    prompt: Prompt


def content_hash(config: RunConfig) -> str:
    """Hash of the settings that determine a sample's content (model, sampling, prompts, masks)."""
    return config_hash(config.generate, exclude=ID_EXCLUDED)


def settings_hash(config: RunConfig) -> str:
    """The hash that guards an output (stage.json) and names its settings in records: the
    content hash, mixed with the class check's settings when there is a check."""
    return guard_hash(content_hash(config), config.generate)


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
            seed = sample_seed(config.draw_seed, class_name, index)
            planned.append(
                PlannedSample(
                    id=sample_id(digest, class_name, seed),
                    class_name=class_name,
                    class_id=class_id,
                    index=index,
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
    written, skipped (already done) and dropped (implausible masks, see ``rejection_reason``,
    or objects of another class, see ``generate.class_check``; reasons in rejected.jsonl,
    counts per class and reason in the summary). With
    ``generate.init_images`` each sample is redrawn image-to-image from its class's init image,
    whose label mask (if any) becomes the sample's ``truth_mask``.
    Raises FreemaskError for a class word missing from its prompt, a class without init
    images, or non-finite attention.
    """
    settings = config.generate
    shard = shard or Shard()
    labels = label_dtype(len(config.classes))
    storage = open_storage(outputs)
    output = StageOutput(
        storage,
        STAGE,
        shard,
        settings_hash=settings_hash(config),
        settings={
            **settings_of(config.generate, "generate", exclude=ID_EXCLUDED),
            **check_settings(config.generate),
        },
    )

    # 1. Plan the shard's samples; batches are cut before skipping, so they never change.
    planned = shard.select(plan_samples(config))
    init = load_init_images(settings.init_images, config.classes) if settings.init_images else None
    if init is not None:
        planned = [with_init_prompt(item, init) for item in planned]
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
    check = load_class_check(settings, config.classes) if batches else None

    # 2. One store for the run's image size; the capture processors stay installed throughout.
    stamp = StageStamp(stage=STAGE, version=VERSION, config_hash=settings_hash(config))
    done = len(planned) - len(todo)
    with progress_bar("generate: images", len(planned), done=done, shard=shard) as advance:
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
                    images, masks = draw_batch(pipe, store, batch, ids, settings, init)
                    drawn = [
                        (item, image, mask)
                        for item, image, mask in zip(batch, images, masks, strict=True)
                        if item.id in todo
                    ]
                    # 4. Plausible masks only go to the class check, the whole batch at once.
                    reasons = [rejection_reason(mask, settings) for _, _, mask in drawn]
                    verdicts = judge(
                        check,
                        [(image, mask.label == 1, item.class_name) for item, image, mask in drawn],
                        [reason is None for reason in reasons],
                    )
                    for (item, image, mask), reason, verdict in zip(
                        drawn, reasons, verdicts, strict=True
                    ):
                        if verdict is not None and verdict.action == "rejected":
                            reason = f"class_check: {verdict.reason}"
                        if reason:
                            output.drop(item.id, reason)
                        else:
                            truth = init and init.truth(
                                item.class_name, item.index, item.class_id, image.shape[:2]
                            )
                            checked = as_checked(item, verdict, config.classes)
                            sample, files = to_record(
                                checked, image, mask, settings, stamp, truth, labels
                            )
                            if verdict is not None:
                                sample = record_verdict(sample, verdict, item.class_id)
                            output.commit(sample, files)
                        advance(1)

    # 5. The success marker, with the run's counts and what was rejected (relabelled), per class.
    relabelling = settings.class_check != "none" and settings.class_check_relabel
    return output.finish(  # counted once the records are compacted (object stores)
        lambda: {
            "classes": len(config.classes),
            "planned": len(planned),
            **rejections(output, planned),
            **(relabels(output, planned) if relabelling else {}),
        }
    )


def as_checked(item: PlannedSample, verdict: Verdict | None, classes: list[str]) -> PlannedSample:
    """``item`` as its verdict leaves it: of the class it was relabelled to, if it was."""
    if verdict is None or verdict.action != "relabelled":
        return item
    return replace(
        item, class_name=verdict.class_name, class_id=classes.index(verdict.class_name) + 1
    )


def relabels(output: StageOutput, planned: list[PlannedSample]) -> dict[str, Any]:
    """How many samples the class check relabelled, per drawn class and new class."""
    drawn_as = {item.id: item.class_name for item in planned}
    path = output.shard.manifest_path
    samples = read_manifest(output.storage, path) if output.storage.exists(path) else []
    return {"relabelled_by_class": relabel_counts(samples, drawn_as)}


def rejections(output: StageOutput, planned: list[PlannedSample]) -> dict[str, Any]:
    """Rejected samples per class and per reason (its first word), and the classes flagged for
    having most of their samples rejected (also logged as a warning)."""
    by_id = {item.id: item for item in planned}
    rejected = [
        entry
        for entry in read_rejected(output.storage, output.shard.rejected_path)
        if entry["id"] in by_id
    ]
    per_class = Counter(by_id[entry["id"]].class_name for entry in rejected)
    per_reason = Counter(entry["reason"].split(":")[0] for entry in rejected)
    planned_per_class = Counter(item.class_name for item in planned)
    flagged = sorted(
        name
        for name, count in per_class.items()
        if count > FLAG_REJECTED_SHARE * planned_per_class[name]
    )
    for name in flagged:
        logger.warning(
            "generate: %d of %d samples of class %r were rejected: its masks are not usable "
            "(see rejected.jsonl); check the model and the class's prompt",
            per_class[name],
            planned_per_class[name],
            name,
        )
    return {
        "rejected_by_class": dict(sorted(per_class.items())),
        "rejected_by_reason": dict(sorted(per_reason.items())),
        "flagged_classes": flagged,
    }


def with_init_prompt(item: PlannedSample, init: InitImages) -> PlannedSample:
    """``item`` prompted with its start image's caption, when that names the class."""
    prompt = init.prompt(item.class_name, item.index)
    return replace(item, prompt=prompt) if prompt else item


def pipeline_model_id(pipe: Any, settings: GenerateConfig) -> str:
    """The id or folder the pipeline was loaded from (recorded in each sample)."""
    return getattr(pipe, "name_or_path", None) or settings.model_id


def draw_batch(
    pipe: Any,
    store: AttentionStore,
    batch: list[PlannedSample],
    tokens: list[list[int]],
    settings: GenerateConfig,
    init: InitImages | None = None,
) -> tuple[list[np.ndarray], list[ObjectMask]]:
    """Draw one batch with attention capture (image-to-image from ``init`` when given);
    return uint8 RGB images and their masks."""
    steps = settings.num_inference_steps
    options: dict[str, Any] = {"height": settings.height, "width": settings.width}
    if init is not None:
        # Image-to-image runs the last int(steps * strength) steps of the schedule
        # (StableDiffusionImg2ImgPipeline.get_timesteps).
        steps = min(int(steps * settings.strength), steps)
        starts = [
            init.image(item.class_name, item.index, (settings.height, settings.width))
            for item in batch
        ]
        options = {
            "image": torch.from_numpy(np.stack(starts)).permute(0, 3, 1, 2).float() / 255,
            "strength": settings.strength,
        }
        pipe = image_to_image(pipe)
    store.begin(tokens, num_steps=steps, guided=settings.guidance_scale > 1)
    result = pipe(
        [item.prompt.text for item in batch],
        negative_prompt=[settings.negative_prompt] * len(batch),
        num_inference_steps=settings.num_inference_steps,
        guidance_scale=settings.guidance_scale,
        generator=[torch.Generator("cpu").manual_seed(item.seed) for item in batch],
        output_type="np",
        callback_on_step_end=store.on_step_end,
        **options,
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


def image_to_image(pipe: Any) -> Any:
    """The image-to-image pipeline over ``pipe``'s very components (its UNet keeps the
    attention capture processors)."""
    from diffusers import StableDiffusionImg2ImgPipeline

    redraw = StableDiffusionImg2ImgPipeline(**pipe.components, requires_safety_checker=False)
    redraw.set_progress_bar_config(disable=True)
    return redraw


def to_record(
    item: PlannedSample,
    image: np.ndarray,
    mask: ObjectMask,
    settings: GenerateConfig,
    stamp: StageStamp,
    truth: np.ndarray | None = None,
    labels: DTypeLike = np.uint8,
) -> tuple[Sample, dict[str, bytes]]:
    """The sample's record and encoded files: RGB PNG, label PNG (class id, ignore), float16
    npy, and the truth label PNG when ``truth`` is given. ``labels`` is the run's label dtype
    (``records.label_dtype``): uint8 with 255 = ignore, or uint16 with 65535 = ignore."""
    height, width = mask.label.shape
    label = np.zeros(mask.label.shape, dtype=labels)
    label[mask.label == 1] = item.class_id
    label[mask.label == ignore_value(mask.label)] = ignore_value(labels)
    sample = Sample(
        id=item.id,
        image=f"images/{item.id}.png",
        semantic_mask=f"masks/{item.id}.png",
        soft_mask=f"soft_masks/{item.id}.npy",
        truth_mask=f"truth/{item.id}.png" if truth is not None else None,
        width=width,
        height=height,
        instances=[Instance.from_mask(item.class_name, item.class_id, mask.label == 1)],
        prompt=item.prompt.text,
        seed=item.seed,
        model_id=model_reference(settings.model_id),
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
    if truth is not None:
        files[sample.truth_mask] = encode_image(truth, sample.truth_mask)
    return sample, files
