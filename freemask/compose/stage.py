"""Stage 3, compose: multi-object scenes from single objects, backgrounds and the relation table.

For scene i (class ``i mod n`` leads, so classes are balanced): a background whose scene fits
the leading class is drawn (weighted by the thesaurus), then the other objects come from the
classes that fit that scene, partners of classes already in it weighing more. Each object is a
random single-object sample of its class, placed by the configured placer, flipped at random
and pasted in z-order. Everything is drawn from a generator seeded by (run seed, i), so a scene
is reproducible and a resumed run writes the same bytes.

Inputs: ``inputs`` is the generate (or any single-object) stage's prefix; ``relations`` the
relate stage's ``relations.json`` prefix; ``backgrounds`` the backgrounds stage's prefix.
Outputs per scene: ``images/<id>.png``, ``masks/<id>.png`` (class ids, 255 ignore; 16-bit with
65535 ignore for a run of more than 254 classes),
``soft_masks/<id>.npy`` (float16 [instances, H, W]: each kept instance's pasted alpha with
occluded pixels removed), instances with RLE masks, and ``placements`` provenance.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from freemask.compose.placement import HeuristicPlacer, PlacementPrior, Placer
from freemask.compose.scene import Cutout, CutoutError, Scene, cut_out
from freemask.config import RunConfig, config_hash
from freemask.errors import FreemaskError
from freemask.model_cache import resolve_model_source
from freemask.progress import progress_bar
from freemask.quality import own_object
from freemask.record_checks import require_usable
from freemask.records import (
    Instance,
    Placement,
    Sample,
    StageStamp,
    ignore_value,
    label_dtype,
    read_manifest,
    sample_id,
)
from freemask.relate import read_relations
from freemask.stage_output import (
    Shard,
    StageOutput,
    StageResult,
    classes_setting,
    read_finished_manifest,
    require_finished,
    settings_of,
)
from freemask.storage import Storage, encode_image, open_storage, read_array, read_image

STAGE = "compose"
VERSION = "1"


@dataclass
class Library:
    """What scenes are made of: single objects by class, backgrounds, relations."""

    objects: dict[str, list[Sample]]
    backgrounds: list[Sample]
    relations: dict[str, Any]
    object_storage: Storage
    background_storage: Storage


def make_placer(config: RunConfig) -> Placer:
    """The configured placer: FOPA with its weights, or the heuristic one."""
    if config.compose.placer == "fopa":
        from freemask.compose.fopa import FopaPlacer, load_fopa

        weights = resolve_model_source(config.compose.fopa_weights, "compose.fopa_weights")
        return FopaPlacer(load_fopa(weights), top_k=config.compose.fopa_top_k)
    return HeuristicPlacer()


def load_library(config: RunConfig, inputs: str, relations: str, backgrounds: str) -> Library:
    """Read the object, background and relation inputs; raise FreemaskError if one is empty."""
    object_storage = open_storage(inputs)
    objects: dict[str, list[Sample]] = {name: [] for name in config.classes}
    for sample in read_finished_manifest(object_storage, "the single-object input"):
        if sample.instances and sample.instances[0].class_name in objects:
            objects[sample.instances[0].class_name].append(sample)
    if not any(objects.values()):
        raise FreemaskError(f"{object_storage.uri}: no single-object samples of the run's classes")
    kept = [sample for group in objects.values() for sample in group]
    require_usable(object_storage, kept, config.classes, f"{object_storage.uri}/manifest.jsonl")
    background_storage = open_storage(backgrounds)
    require_finished(background_storage, "the backgrounds input")
    found = read_manifest(background_storage)
    if not found:
        raise FreemaskError(f"{background_storage.uri}: no backgrounds")
    require_usable(background_storage, found, None, f"{background_storage.uri}/manifest.jsonl")
    return Library(
        objects, found, read_relations(open_storage(relations)), object_storage, background_storage
    )


def run_compose(
    config: RunConfig,
    inputs: str,
    outputs: str,
    *,
    relations: str | None = None,
    backgrounds: str | None = None,
    shard: Shard | None = None,
    placer: Placer | None = None,
) -> StageResult:
    """Compose ``compose.images`` scenes (this shard's share) into ``outputs``.

    ``relations`` and ``backgrounds`` default to ``<workdir>/relate`` and
    ``<workdir>/backgrounds``. A scene that cannot be made (no fitting background, no object
    that can be cut out or placed) is recorded in rejected.jsonl with the reason.
    """
    shard = shard or Shard()
    workdir = config.workdir.rstrip("/")
    library = load_library(
        config, inputs, relations or f"{workdir}/relate", backgrounds or f"{workdir}/backgrounds"
    )
    placer = placer or make_placer(config)
    # Scene ids change with whatever changes a scene: compose and relate settings, the single
    # objects' settings, the classes and the seed (not where backgrounds came from).
    parts = [
        config_hash(config.compose, exclude={"backgrounds", "images"}),
        config_hash(config.relate),
        config_hash(config.generate, exclude={"batch_size", "device", "images_per_class"}),
        ",".join(config.classes),
        str(config.draw_seed),
    ]
    digest = hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]
    named = {
        **settings_of(config.compose, "compose", exclude={"backgrounds", "images"}),
        **settings_of(config.relate, "relate"),
        **settings_of(
            config.generate, "generate", exclude={"batch_size", "device", "images_per_class"}
        ),
        "classes": classes_setting(config.classes),
        "draw_seed": config.draw_seed,
    }
    output = StageOutput(open_storage(outputs), STAGE, shard, settings_hash=digest, settings=named)
    stamp = StageStamp(stage=STAGE, version=VERSION, config_hash=digest)
    indices = shard.select(list(range(config.compose.images)))
    ids = {
        index: sample_id(digest, "scene", config.draw_seed * 1_000_003 + index) for index in indices
    }
    todo = output.pending(list(ids.values()))
    cache: dict[str, Cutout | str] = {}
    done = len(indices) - len(todo)
    with progress_bar("compose: scenes", len(indices), done=done, shard=shard) as advance:
        for index in indices:
            if ids[index] not in todo:
                continue
            rng = np.random.default_rng([config.draw_seed, index])
            made = compose_one(config, library, placer, rng, index, cache)
            if isinstance(made, str):
                output.drop(ids[index], made)
            else:
                output.commit(*to_record(ids[index], made, stamp))
            advance(1)
    return output.finish({"placer": config.compose.placer})


@dataclass
class Composed:
    """A finished scene before it becomes a record."""

    background: Sample
    image: np.ndarray
    semantic: np.ndarray
    instances: list
    placements: list[Placement]
    truth: np.ndarray | None = None


def compose_one(
    config: RunConfig,
    library: Library,
    placer: Placer,
    rng: np.random.Generator,
    index: int,
    cache: dict[str, Cutout | str],
) -> Composed | str:
    """Make scene ``index``; return it, or the reason it cannot be made."""
    classes = [name for name in config.classes if library.objects[name]]
    lead = classes[index % len(classes)]
    relation = library.relations["classes"][lead]
    background = _pick_background(library.backgrounds, relation["scenes"], rng)
    if background is None:
        return f"class {lead!r} has no scene among the backgrounds"
    scene_weights = library.relations["scenes"].get(background.scene or "", {})
    low, high = config.compose.objects_per_image
    count = int(rng.integers(low, high + 1))
    wanted = [lead]
    while len(wanted) < count:
        wanted.append(_pick_partner(wanted, classes, scene_weights, library.relations, rng))
    pixels = read_image(library.background_storage, background.image, mode="RGB")
    scene = Scene(pixels, labels=label_dtype(len(config.classes)))
    occupied: list[tuple[int, int, int, int]] = []
    placements: list[Placement] = []
    problems: list[str] = []
    for class_name in wanted:
        source = library.objects[class_name][int(rng.integers(len(library.objects[class_name])))]
        cutout = _cutout(source, library.object_storage, config, cache)
        if isinstance(cutout, str):
            problems.append(f"{source.id}: {cutout}")
            continue
        relation = library.relations["classes"][class_name]
        prior = PlacementPrior(relation["size"], relation["support"], config.compose.scale_jitter)
        box = placer.place(scene.image.astype(np.uint8), cutout, prior, occupied, rng)
        if box is None:
            problems.append(f"{source.id}: no place for a {class_name} on {background.id}")
            continue
        flip = bool(rng.random() < config.compose.flip_probability)
        scene.paste(cutout, box, flip, class_name, config.classes.index(class_name) + 1)
        occupied.append(box)
        placements.append(
            Placement(
                source=source.id,
                class_name=class_name,
                box=box,
                scale=round(box[3] / scene.size[0], 4),
                flip=flip,
                z=len(placements),
                visible_fraction=0.0,
                kept=False,
            )
        )
    if not placements:
        return "; ".join(problems) or "no object could be placed"
    image, semantic, instances = scene.finish(config.compose.min_visible_fraction)
    for placement, instance in zip(placements, instances, strict=True):
        placement.visible_fraction = round(instance.visible_fraction, 4)
        placement.kept = instance.kept
    if not any(instance.kept for instance in instances):
        return "every pasted object is hidden by others"
    return Composed(background, image, semantic, instances, placements, scene.truth())


def to_record(
    item_id: str, composed: Composed, stamp: StageStamp
) -> tuple[Sample, dict[str, bytes]]:
    """The scene's record and files."""
    kept = [instance for instance in composed.instances if instance.kept]
    height, width = composed.semantic.shape
    parents = [composed.background.id, *(placement.source for placement in composed.placements)]
    sample = Sample(
        id=item_id,
        image=f"images/{item_id}.png",
        semantic_mask=f"masks/{item_id}.png",
        soft_mask=f"soft_masks/{item_id}.npy",
        truth_mask=f"truth/{item_id}.png" if composed.truth is not None else None,
        width=width,
        height=height,
        instances=[Instance.from_mask(i.class_name, i.class_id, i.mask) for i in kept],
        source=[stamp.model_copy(update={"parents": parents})],
        scores={
            "objects_pasted": float(len(composed.placements)),
            "objects_kept": float(len(kept)),
        },
        scene=composed.background.scene,
        placements=composed.placements,
    )
    soft = io.BytesIO()
    np.save(soft, np.stack([i.alpha for i in kept]).astype(np.float16), allow_pickle=False)
    files = {
        sample.image: encode_image(composed.image, sample.image),
        sample.semantic_mask: encode_image(composed.semantic, sample.semantic_mask),
        sample.soft_mask: soft.getvalue(),
    }
    if composed.truth is not None:
        files[sample.truth_mask] = encode_image(composed.truth, sample.truth_mask)
    return sample, files


def _pick_background(
    backgrounds: list[Sample], scene_weights: dict[str, float], rng: np.random.Generator
) -> Sample | None:
    """A background whose scene fits (weighted); untagged backgrounds fit every class."""
    weights = np.array(
        [scene_weights.get(bg.scene, 0.0) if bg.scene else 0.5 for bg in backgrounds]
    )
    if weights.sum() <= 0:
        return None
    return backgrounds[int(rng.choice(len(backgrounds), p=weights / weights.sum()))]


def _pick_partner(
    chosen: list[str],
    classes: list[str],
    scene_weights: dict[str, float],
    relations: dict[str, Any],
    rng: np.random.Generator,
) -> str:
    """Another object for the scene: fitting its scene, partners of chosen classes doubled."""
    partners = {p for name in chosen for p in relations["classes"][name]["partners_in_run"]}
    weights = np.array(
        [
            max(scene_weights.get(name, 0.0), 0.05) * (2.0 if name in partners else 1.0)
            for name in classes
        ]
    )
    return classes[int(rng.choice(len(classes), p=weights / weights.sum()))]


def _cutout(
    source: Sample, storage: Storage, config: RunConfig, cache: dict[str, Cutout | str]
) -> Cutout | str:
    """The source sample's cutout (cached), or the reason it cannot be cut out."""
    if source.id not in cache:
        image = read_image(storage, source.image, mode="RGB")
        label = read_image(storage, source.semantic_mask)
        soft = read_array(storage, source.soft_mask) if source.soft_mask else None
        if soft is not None and soft.ndim == 3:
            soft = soft.max(axis=0)
        try:
            if label.shape != image.shape[:2] or (soft is not None and soft.shape != label.shape):
                raise CutoutError(
                    f"mask {label.shape} or soft mask {None if soft is None else soft.shape} "
                    f"does not match the image {image.shape[:2]}"
                )
            truth = extent = None
            if source.truth_mask:
                exact = read_image(storage, source.truth_mask)
                labels = label_dtype(len(config.classes))
                truth = np.where(exact == ignore_value(exact), 0, exact).astype(labels)
                if config.compose.paste_extent == "truth":
                    extent = own_object(exact, label)
            cache[source.id] = cut_out(
                image,
                label,
                soft,
                config.generate.ignore_band,
                config.compose.band_width,
                truth,
                extent,
            )
        except CutoutError as exc:
            cache[source.id] = str(exc)
    return cache[source.id]
