"""Stage 5, harmonize: make each pasted object match its scene's light.

Objects are harmonized one by one in z-order (the order of the sample's instances), each
against the background and the other objects around it. ``color_transfer`` needs no weights:
it corrects lightness, contrast and white balance and keeps the object's own hue; ``pctnet``
loads the published PCTNet ViT weights from ``harmonize.weights``; ``learned`` runs a small
light-predicting network from ``harmonize.weights`` (``builtin:toy-harmonizer`` for the toy
world, ``freemask.harmonize.learned``); ``none`` copies samples through. Only an object's visible pixels that its label is sure of change (its instance mask
where the semantic mask holds its class, no other object's pixels): background, the uncertain
band and other objects stay byte-identical. Masks are never changed: the semantic, soft and
truth masks and the instances are copied as they are. A sample whose record does not fit its
files or the run (``freemask.record_checks``: sizes, masks, classes, file names), or whose
masks do not fit its image, is recorded in rejected.jsonl with the reason.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from freemask.config import HarmonizeConfig, RunConfig, config_hash
from freemask.devices import placement_of
from freemask.errors import FreemaskError
from freemask.harmonize.color_transfer import transfer_colour
from freemask.model_cache import resolve_model_source
from freemask.progress import progress_bar
from freemask.record_checks import sample_problem
from freemask.records import Sample, StageStamp
from freemask.stage_output import (
    Shard,
    StageOutput,
    StageResult,
    read_finished_manifest,
    settings_of,
)
from freemask.storage import encode_image, open_storage, read_image

STAGE = "harmonize"
VERSION = "2"
# Where the network runs changes no result's meaning: left out of the settings hash, so a run
# resumed on another machine continues its output.
EXECUTION_FIELDS = {"device", "precision"}


def settings_hash(settings: HarmonizeConfig) -> str:
    """The hash that names the harmonize settings in records and guards resumed outputs."""
    return config_hash(settings, exclude=EXECUTION_FIELDS)


class Harmonizer(Protocol):
    """Harmonizes one object (``mask``) of an RGB image, given the other objects' pixels."""

    def __call__(self, image: np.ndarray, mask: np.ndarray, others: np.ndarray) -> np.ndarray: ...


def make_harmonizer(settings: HarmonizeConfig) -> Harmonizer | None:
    """The configured harmonizer (None for ``method: none``)."""
    if settings.method == "none":
        return None
    if settings.method == "pctnet":
        from freemask.harmonize.pctnet import PCTNetHarmonizer, load_pctnet

        if not settings.weights:
            raise FreemaskError(
                "harmonize.method 'pctnet' needs harmonize.weights (PCTNet_ViT.pth)"
            )
        model = PCTNetHarmonizer(
            load_pctnet(resolve_model_source(settings.weights, "harmonize.weights")),
            placement_of(settings, "harmonize"),
        )
        return lambda image, mask, others: model.harmonize(image, mask)
    if settings.method == "learned":
        from freemask.harmonize.learned import LearnedHarmonizer, load_light_net
        from freemask.models import BUILTIN_PREFIX, builtin_model_folder

        if not settings.weights:
            raise FreemaskError(
                "harmonize.method 'learned' needs harmonize.weights (e.g. builtin:toy-harmonizer)"
            )
        source = resolve_model_source(settings.weights, "harmonize.weights")
        if source.startswith(BUILTIN_PREFIX):
            source = str(builtin_model_folder(source, "harmonize.weights"))
        return LearnedHarmonizer(load_light_net(source), placement_of(settings, "harmonize").device)

    def classical(image: np.ndarray, mask: np.ndarray, others: np.ndarray) -> np.ndarray:
        return transfer_colour(
            image,
            mask,
            others,
            strength=settings.strength,
            ring_width=settings.ring_width,
            max_std_ratio=settings.max_std_ratio,
            feather_sigma=settings.feather_sigma,
            white_balance=settings.white_balance,
            keep_hue=settings.keep_hue,
        )

    return classical


def harmonize_sample(image: np.ndarray, masks: list[np.ndarray], harmonizer: Harmonizer):
    """Harmonize every object in z-order; return the image and the mean change on objects.

    Each object changes only where it alone is marked: pixels outside every mask, or under
    two masks, come back byte-identical whatever the harmonizer does.
    """
    result = image
    union = np.zeros(image.shape[:2], bool)
    shared = np.zeros(image.shape[:2], bool)
    for mask in masks:
        shared |= union & mask
        union |= mask
    for index, mask in enumerate(masks):
        others = np.zeros_like(mask)
        for other_index, other in enumerate(masks):
            if other_index != index:
                others |= other
        result = harmonizer(result, mask & ~others, others)
    editable = union & ~shared
    result = np.where(editable[..., None], result, image)
    change = (
        np.abs(result.astype(np.int16) - image.astype(np.int16))[union].mean()
        if union.any()
        else 0.0
    )
    return result, float(change)


def sure_masks(sample: Sample, semantic: np.ndarray | None) -> list[np.ndarray]:
    """Each instance's mask where the semantic mask holds its class (the whole mask without one)."""
    masks = [instance.mask() for instance in sample.instances]
    if semantic is None:
        return masks
    return [
        mask & (semantic == instance.class_id)
        for mask, instance in zip(masks, sample.instances, strict=True)
    ]


def run_harmonize(
    config: RunConfig, inputs: str, outputs: str, *, shard: Shard | None = None
) -> StageResult:
    """Harmonize the samples under ``inputs`` into ``outputs`` (this shard's share)."""
    shard = shard or Shard()
    source = open_storage(inputs)
    output = StageOutput(
        open_storage(outputs),
        STAGE,
        shard,
        settings_hash=settings_hash(config.harmonize),
        settings=settings_of(config.harmonize, "harmonize", exclude=EXECUTION_FIELDS),
    )
    mine = shard.select(read_finished_manifest(source, "harmonize's input"))
    todo = output.pending([sample.id for sample in mine])
    harmonizer = make_harmonizer(config.harmonize) if todo else None
    stamp = StageStamp(stage=STAGE, version=VERSION, config_hash=settings_hash(config.harmonize))
    done = len(mine) - len(todo)
    with progress_bar("harmonize: scenes", len(mine), done=done, shard=shard) as advance:
        for sample in mine:
            if sample.id not in todo:
                continue
            reason = sample_problem(source, sample, config.classes)
            if reason:
                output.drop(sample.id, reason)
                advance(1)
                continue
            files = {path: source.read_bytes(path) for path in sample.files()}
            scores = dict(sample.scores)
            if harmonizer is not None and sample.instances:
                image = read_image(source, sample.image, mode="RGB")
                semantic = (
                    read_image(source, sample.semantic_mask) if sample.semantic_mask else None
                )
                reason = _misfit(sample, image, semantic)
                if reason:
                    output.drop(sample.id, reason)
                    advance(1)
                    continue
                masks = sure_masks(sample, semantic)
                harmonized, change = harmonize_sample(image, masks, harmonizer)
                files[sample.image] = encode_image(harmonized, sample.image)
                scores["harmonize_mean_change"] = round(change, 4)
            record = sample.model_copy(update={"source": [*sample.source, stamp], "scores": scores})
            output.commit(record, files)
            advance(1)
    return output.finish({"method": config.harmonize.method})


def _misfit(sample: Sample, image: np.ndarray, semantic: np.ndarray | None) -> str | None:
    if semantic is not None and semantic.shape != image.shape[:2]:
        return (
            f"semantic mask {sample.semantic_mask} is {semantic.shape[0]}x{semantic.shape[1]}, "
            f"image is {image.shape[0]}x{image.shape[1]}"
        )
    for index, instance in enumerate(sample.instances):
        if tuple(instance.rle.size) != image.shape[:2]:
            return (
                f"instance {index} mask is {instance.rle.size[0]}x{instance.rle.size[1]}, "
                f"image is {image.shape[0]}x{image.shape[1]}"
            )
    return None
