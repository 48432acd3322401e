"""Stage 4, refine: sharpen every sample's masks to its image's edges.

Refine runs on the single objects, before compose (DiffuMask's order), where a mask's edge is
the object's own and not a paste seam; it also runs on composed scenes. ``guided_filter`` (the
default) needs no training. ``affinity`` trains AffinityNet on the confident cells of the single
objects' attention soft masks (or loads ``refine.weights``; scenes' soft masks are pasted
labels, so it never trains on them), saves the weights as ``affinity.safetensors`` under the
output prefix, logs them to the tracking run, then refines each sample by random walk.
``none`` copies samples through.

Each sample keeps compose's contract: refined soft masks (float16 [0, 1], in the input's
layout), a semantic mask with the class where a refined mask is above
``foreground_threshold``, background where every one is below ``background_threshold`` and
ignore (255; 65535 in a run of more than 254 classes, whose masks are 16-bit) in between, and
instances re-derived from it. With ``scope: band`` (the default) the refiner only decides
where the attention was unsure; a refinement that breaks the attention's confident seeds falls
back to the attention mask. Ignore pixels left by dropped instances stay ignore; every other
file (the truth mask too) is carried. Samples whose soft masks cannot be refined (missing,
another size than the image, non-finite, all foreground or all background), or that keep no
object, are recorded in rejected.jsonl with the reason.
"""

from __future__ import annotations

import io

import numpy as np
from numpy.typing import DTypeLike

from freemask.config import RefineConfig, RunConfig, config_hash
from freemask.devices import placement_of
from freemask.errors import FreemaskError
from freemask.model_cache import resolve_model_source
from freemask.progress import progress_bar
from freemask.record_checks import sample_problems
from freemask.records import IGNORE_INDEX, Instance, Sample, StageStamp, ignore_value, label_dtype
from freemask.refine.grab_cut import GrabCutRefiner
from freemask.refine.refiners import (
    AffinityRefiner,
    GuidedFilterRefiner,
    Refiner,
    band_labels,
    refine_soft,
)
from freemask.refine.training import model_from_bytes, train_affinity, weights_bytes
from freemask.stage_output import (
    Shard,
    StageOutput,
    StageResult,
    read_finished_manifest,
    settings_of,
)
from freemask.storage import (
    Storage,
    encode_image,
    open_storage,
    read_array,
    read_image,
)
from freemask.tracking import NullRun, Run

STAGE = "refine"
VERSION = "2"
WEIGHTS = "affinity.safetensors"
# Where the network runs changes no result's meaning: left out of the settings hash, so a run
# resumed on another machine continues its output.
EXECUTION_FIELDS = {"device", "precision"}


def unused_fields(settings: RefineConfig) -> set[str]:
    """Fields that change no result under ``settings``: how it executes, and GrabCut's own
    settings under another method (so outputs made before they existed keep their hash)."""
    grabcut = {"grabcut_background", "grabcut_core_erosion", "grabcut_iterations"}
    return EXECUTION_FIELDS | (set() if settings.method == "grabcut" else grabcut)


def settings_hash(settings: RefineConfig) -> str:
    """The hash that names the refine settings in records and guards resumed outputs."""
    return config_hash(settings, exclude=unused_fields(settings))


def load_inputs(
    storage: Storage, sample: Sample
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """A sample's image, soft masks as stored ([H, W] or [instances, H, W]) and semantic mask."""
    image = read_image(storage, sample.image, mode="RGB")
    soft = read_array(storage, sample.soft_mask) if sample.soft_mask else None
    semantic = read_image(storage, sample.semantic_mask) if sample.semantic_mask else None
    return image, soft, semantic


def instance_stack(soft: np.ndarray) -> np.ndarray:
    """Soft masks as [instances, H, W] float32 (a single object's [H, W] becomes [1, H, W])."""
    return (soft[None] if soft.ndim == 2 else soft).astype(np.float32)


def unrefinable(
    sample: Sample,
    image: np.ndarray,
    soft: np.ndarray | None,
    settings: RefineConfig,
    semantic: np.ndarray | None = None,
) -> str | None:
    """Why the sample's soft masks (or its mask) cannot be refined, or None when they can."""
    if semantic is not None and semantic.shape != image.shape[:2]:
        return (
            f"mask {sample.semantic_mask} shape {semantic.shape} does not match the "
            f"{image.shape[0]}x{image.shape[1]} image"
        )
    if soft is None:
        return "no soft mask to refine"
    if soft.ndim == 2:
        soft = soft[None]
    if soft.ndim != 3 or soft.shape[1:] != image.shape[:2]:
        return f"soft mask shape {soft.shape} does not match the {image.shape[0]}x{image.shape[1]} image"
    if soft.shape[0] != len(sample.instances):
        return f"{soft.shape[0]} soft masks for {len(sample.instances)} instances"
    if not np.isfinite(soft).all():
        return "soft mask holds non-finite values"
    for index, channel in enumerate(soft.astype(np.float32)):
        if channel.min() >= settings.foreground_threshold:
            return f"soft mask {index} is foreground everywhere: no boundary to refine"
        if channel.max() <= settings.background_threshold:
            return f"soft mask {index} is background everywhere: no object to refine"
    return None


def refine_labels(
    refined: np.ndarray,
    sample: Sample,
    semantic: np.ndarray | None,
    soft: np.ndarray,
    thresholds: tuple[float, float],
    dtype: DTypeLike = np.uint8,
) -> tuple[np.ndarray, list[Instance], list[int]]:
    """Semantic mask, instances and the kept instances' indices from refined soft masks
    [instances, H, W]: class ids where sure, 0 background, ignore unsure, in the run's label
    ``dtype`` (``records.label_dtype``: uint8 with 255 = ignore, uint16 with 65535). An
    instance that is sure of no pixel is lost."""
    ignore = ignore_value(dtype)
    band = band_labels(refined, *thresholds)
    labels = np.where(band == IGNORE_INDEX, ignore, 0).astype(dtype)
    instances, kept = [], []
    for index, instance in enumerate(sample.instances):
        mask = band == index + 1
        labels[mask] = instance.class_id
        if mask.any():
            instances.append(Instance.from_mask(instance.class_name, instance.class_id, mask))
            kept.append(index)
    if semantic is not None:
        leftover = (semantic == ignore_value(semantic)) & (soft.max(axis=0) <= 0)
        labels[leftover] = ignore
    return labels, instances, kept


def is_single_object(sample: Sample) -> bool:
    """True for a generated single object (one instance, not a composed scene)."""
    return len(sample.instances) == 1 and not sample.placements


def make_refiner(
    config: RunConfig,
    source: Storage,
    samples: list[Sample],
    output: Storage,
    run: Run,
    shard: Shard,
) -> Refiner | None:
    """The configured refiner; trains (or loads) AffinityNet for ``method: affinity``."""
    settings = config.refine
    if settings.method == "none":
        return None
    guided = GuidedFilterRefiner(settings.guided_radius, settings.guided_eps)
    if settings.method == "guided_filter":
        return guided
    if settings.method == "grabcut":
        return GrabCutRefiner(
            settings.foreground_threshold,
            settings.grabcut_background,
            settings.grabcut_iterations,
            guided,
            settings.grabcut_core_erosion,
        )
    if settings.weights:
        # A file in a gs:// mirror comes from the model cache; other URIs from storage.
        weights = resolve_model_source(settings.weights, "refine.weights", required=False)
        model = model_from_bytes(_read_weights(weights), settings.weights)
    elif output.exists(WEIGHTS):
        model = model_from_bytes(output.read_bytes(WEIGHTS), f"{output.uri}/{WEIGHTS}")
    elif shard.count > 1:
        raise FreemaskError(
            f"{output.uri}/{WEIGHTS}: sharded refinement needs trained weights; run "
            "`freemask refine --train-only` first (or set refine.weights)"
        )
    else:
        model = _train(config, source, samples, output, run)
    placement = placement_of(settings, "refine")
    return AffinityRefiner(
        model, settings.radius, settings.beta, settings.logt, guided, placement=placement
    )


def _read_weights(uri: str) -> bytes:
    parent, _, name = uri.rstrip("/").rpartition("/")
    return open_storage(parent or ".").read_bytes(name)


def _train(config: RunConfig, source: Storage, samples: list[Sample], output: Storage, run: Run):
    settings = config.refine
    # Seeds come from attention maps only: a scene's soft masks are the pasted labels, and
    # learning from them would teach the network its own output.
    usable = []
    for sample in samples:
        if not is_single_object(sample):
            continue
        image, soft, _ = load_inputs(source, sample)
        if unrefinable(sample, image, soft, settings) is None:
            usable.append(sample)
    if not usable:
        raise FreemaskError(
            f"{source.uri}: no single-object sample with soft masks AffinityNet can learn from; "
            "train on the generate stage's output (`freemask refine --train-only`) and set "
            "refine.weights"
        )

    def examples():
        for sample in usable:
            image, soft, _ = load_inputs(source, sample)
            yield image, instance_stack(soft)

    model, log = train_affinity(
        examples,
        epochs=settings.epochs,
        learning_rate=settings.learning_rate,
        radius=settings.radius,
        thresholds=(settings.background_threshold, settings.foreground_threshold),
        seed=config.seed,
        placement=placement_of(settings, "refine"),
    )
    output.write_bytes(WEIGHTS, weights_bytes(model))
    for epoch, loss in enumerate(log.epoch_losses):
        run.log_metrics({"refine.affinity_loss": loss}, step=epoch)
    run.log_metrics({f"refine.affinity_loss_{name}": value for name, value in log.parts.items()})
    run.log_model(model, "affinity")
    return model


def run_refine(
    config: RunConfig,
    inputs: str,
    outputs: str,
    *,
    shard: Shard | None = None,
    run: Run | None = None,
    train_only: bool = False,
) -> StageResult:
    """Refine the samples under ``inputs`` into ``outputs`` (this shard's share)."""
    shard = shard or Shard()
    source = open_storage(inputs)
    target = open_storage(outputs)
    samples = read_finished_manifest(source, "refine's input")
    refused = sample_problems(source, samples, config.classes)  # rejected below, never read
    output = StageOutput(
        target,
        STAGE,
        shard,
        settings_hash=settings_hash(config.refine),
        settings=settings_of(config.refine, "refine", exclude=unused_fields(config.refine)),
    )
    # 1. The refiner (AffinityNet trains on every single object, not just this shard's).
    todo = output.pending([sample.id for sample in shard.select(samples)])
    usable = [sample for sample in samples if sample.id not in refused]
    refiner = make_refiner(config, source, usable, target, run or NullRun(), shard)
    if train_only:
        return output.result
    stamp = StageStamp(stage=STAGE, version=VERSION, config_hash=settings_hash(config.refine))
    settings = config.refine
    thresholds = (settings.background_threshold, settings.foreground_threshold)
    dtype = label_dtype(len(config.classes))
    grabcut = settings.method == "grabcut"
    scope = "all" if grabcut else settings.scope
    min_seed_agreement = 0.0 if grabcut else settings.min_seed_agreement
    mine = shard.select(samples)
    # 2. Each sample: refine, re-derive labels and instances, commit.
    done = len(mine) - len(todo)
    with progress_bar("refine: masks", len(mine), done=done, shard=shard) as advance:
        for sample in mine:
            if sample.id not in todo:
                continue
            if sample.id in refused:
                output.drop(sample.id, refused[sample.id])
                advance(1)
                continue
            image, stored, semantic = load_inputs(source, sample)
            files = {path: source.read_bytes(path) for path in sample.files()}
            if refiner is None:
                refined = sample.model_copy(update={"source": [*sample.source, stamp]})
                output.commit(refined, files)
                advance(1)
                continue
            reason = unrefinable(sample, image, stored, settings, semantic)
            if reason:
                output.drop(sample.id, reason)
                advance(1)
                continue
            soft = instance_stack(stored)
            # GrabCut keeps its sure seeds as hard constraints: it decides everywhere else.
            refined_soft, agreement = refine_soft(
                refiner,
                image,
                soft,
                thresholds=thresholds,
                scope=scope,
                min_seed_agreement=min_seed_agreement,
            )
            labels, instances, kept = refine_labels(
                refined_soft, sample, semantic, soft, thresholds, dtype
            )
            if not instances:
                output.drop(sample.id, "refinement left no pixel sure to be an object")
                advance(1)
                continue
            changed = float((labels != semantic).mean()) if semantic is not None else 1.0
            refined = sample.model_copy(
                update={
                    "semantic_mask": f"masks/{sample.id}.png",
                    "soft_mask": f"soft_masks/{sample.id}.npy",
                    "instances": instances,
                    "source": [*sample.source, stamp],
                    "scores": {
                        **sample.scores,
                        "refine_changed_fraction": round(changed, 6),
                        "refine_instances_lost": float(len(sample.instances) - len(instances)),
                        "refine_seed_agreement": round(agreement, 6),
                        "refine_fell_back": float(agreement < settings.min_seed_agreement),
                    },
                }
            )
            kept_soft = refined_soft[kept]
            buffer = io.BytesIO()
            np.save(
                buffer,
                (kept_soft[0] if stored.ndim == 2 else kept_soft).astype(np.float16),
                allow_pickle=False,
            )
            files[refined.semantic_mask] = encode_image(labels, refined.semantic_mask)
            files[refined.soft_mask] = buffer.getvalue()
            output.commit(refined, files)
            advance(1)
    return output.finish({"method": config.refine.method})
