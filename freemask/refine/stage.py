"""Stage 4, refine: sharpen every sample's masks to its image's edges.

``method: affinity`` trains AffinityNet on the input's own soft masks (or loads
``refine.weights``), saves the weights as ``affinity.safetensors`` under the output prefix (and
logs them to the tracking run), then refines each sample by random walk. ``guided_filter``
needs no training; ``none`` copies samples through. Each sample's instances are re-derived from
the refined per-pixel probabilities (argmax over background and instances); ignore pixels left
by dropped instances stay ignore. Samples whose soft masks cannot be refined (missing, another
size than the image, non-finite, all foreground or all background) are recorded in
rejected.jsonl with the reason.
"""

from __future__ import annotations

import io

import numpy as np

from freemask.config import RefineConfig, RunConfig, config_hash
from freemask.errors import FreemaskError
from freemask.progress import progress_bar
from freemask.records import IGNORE_INDEX, Instance, Sample, StageStamp, read_manifest
from freemask.refine.refiners import AffinityRefiner, GuidedFilterRefiner, Refiner
from freemask.refine.training import model_from_bytes, train_affinity, weights_bytes
from freemask.stage_output import Shard, StageOutput, StageResult
from freemask.storage import Storage, encode_image, open_storage, read_array, read_image
from freemask.tracking import NullRun, Run

STAGE = "refine"
VERSION = "1"
WEIGHTS = "affinity.safetensors"


def load_inputs(storage: Storage, sample: Sample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A sample's image, soft masks [instances, H, W] and semantic mask."""
    image = read_image(storage, sample.image, mode="RGB")
    soft = read_array(storage, sample.soft_mask) if sample.soft_mask else None
    semantic = read_image(storage, sample.semantic_mask) if sample.semantic_mask else None
    if soft is not None and soft.ndim == 2:
        soft = soft[None]
    return image, soft, semantic


def unrefinable(
    sample: Sample, image: np.ndarray, soft: np.ndarray | None, settings: RefineConfig
) -> str | None:
    """Why the sample's soft masks cannot be refined, or None when they can."""
    if soft is None:
        return "no soft mask to refine"
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
    probabilities: np.ndarray, sample: Sample, semantic: np.ndarray | None, soft: np.ndarray
) -> tuple[np.ndarray, list[Instance], list[int]]:
    """Semantic mask, instances and the kept instances' channels from refined probabilities
    [1 + instances, H, W]. An instance that wins no pixel is lost."""
    winner = probabilities.argmax(axis=0)
    labels = np.zeros(winner.shape, np.uint8)
    instances, kept = [], []
    for index, instance in enumerate(sample.instances, start=1):
        mask = winner == index
        labels[mask] = instance.class_id
        if mask.any():
            instances.append(Instance.from_mask(instance.class_name, instance.class_id, mask))
            kept.append(index)
    if semantic is not None:
        leftover = (semantic == IGNORE_INDEX) & (soft.max(axis=0) <= 0)
        labels[leftover] = IGNORE_INDEX
    return labels, instances, kept


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
    if settings.weights:
        model = model_from_bytes(_read_weights(settings.weights), settings.weights)
    elif output.exists(WEIGHTS):
        model = model_from_bytes(output.read_bytes(WEIGHTS), f"{output.uri}/{WEIGHTS}")
    elif shard.count > 1:
        raise FreemaskError(
            f"{output.uri}/{WEIGHTS}: sharded refinement needs trained weights; run "
            "`freemask refine --train-only` first (or set refine.weights)"
        )
    else:
        model = _train(config, source, samples, output, run)
    return AffinityRefiner(model, settings.radius, settings.beta, settings.logt, guided)


def _read_weights(uri: str) -> bytes:
    parent, _, name = uri.rstrip("/").rpartition("/")
    return open_storage(parent or ".").read_bytes(name)


def _train(config: RunConfig, source: Storage, samples: list[Sample], output: Storage, run: Run):
    settings = config.refine
    usable = []
    for sample in samples:
        image, soft, _ = load_inputs(source, sample)
        if unrefinable(sample, image, soft, settings) is None:
            usable.append(sample)
    if not usable:
        raise FreemaskError(f"{source.uri}: no sample has soft masks AffinityNet can learn from")

    def examples():
        for sample in usable:
            image, soft, _ = load_inputs(source, sample)
            yield image, soft.astype(np.float32)

    model, log = train_affinity(
        examples,
        epochs=settings.epochs,
        learning_rate=settings.learning_rate,
        radius=settings.radius,
        thresholds=(settings.background_threshold, settings.foreground_threshold),
        seed=config.seed,
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
    samples = read_manifest(source)
    output = StageOutput(target, STAGE, shard, settings_hash=config_hash(config.refine))
    # 1. The refiner (training AffinityNet on every sample, not just this shard's).
    todo = output.pending([sample.id for sample in shard.select(samples)])
    refiner = make_refiner(config, source, samples, target, run or NullRun(), shard)
    if train_only:
        return output.result
    stamp = StageStamp(stage=STAGE, version=VERSION, config_hash=config_hash(config.refine))
    mine = shard.select(samples)
    # 2. Each sample: refine, re-derive labels and instances, commit.
    with progress_bar(f"refine {shard.index}/{shard.count}", len(mine)) as advance:
        advance(len(mine) - len(todo))
        for sample in mine:
            if sample.id not in todo:
                continue
            image, soft, semantic = load_inputs(source, sample)
            files = {sample.image: source.read_bytes(sample.image)}
            if refiner is None:
                for path in sample.files():
                    files[path] = source.read_bytes(path)
                refined = sample.model_copy(update={"source": [*sample.source, stamp]})
                output.commit(refined, files)
                advance(1)
                continue
            reason = unrefinable(sample, image, soft, config.refine)
            if reason:
                output.drop(sample.id, reason)
                advance(1)
                continue
            soft = soft.astype(np.float32)
            probabilities = refiner.refine(image, soft)
            labels, instances, kept = refine_labels(probabilities, sample, semantic, soft)
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
                    },
                }
            )
            buffer = io.BytesIO()
            np.save(buffer, probabilities[kept].astype(np.float16), allow_pickle=False)
            files[refined.semantic_mask] = encode_image(labels, refined.semantic_mask)
            files[refined.soft_mask] = buffer.getvalue()
            output.commit(refined, files)
            advance(1)
    return output.finish({"method": config.refine.method})
