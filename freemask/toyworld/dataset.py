"""Rendered toy scenes as a labelled dataset: the same manifest and files every stage writes.

Used as held-out data with exact labels (``segment.validation``, the method benchmark) and as
the benchmark's ceiling: a segmenter trained on perfectly labelled scenes.
"""

from __future__ import annotations

import hashlib

from freemask.errors import FreemaskError
from freemask.records import MANIFEST, Instance, Sample, StageStamp, read_manifest
from freemask.stage_output import StageOutput, StageResult
from freemask.storage import Storage, encode_image, open_storage
from freemask.toyworld.model import IMAGE_SIDE
from freemask.toyworld.render import OBJECTS, SCENES, SceneRelations, random_scene, related_scene

STAGE = "toyworld"
VERSION = "2"  # 2: the 128-px world (lights, cross, shifted domain)


def check_toy_classes(classes: list[str]) -> None:
    """Raise FreemaskError unless every class is a toy-world object."""
    unknown = [name for name in classes if name not in OBJECTS]
    if unknown:
        raise FreemaskError(
            f"classes {unknown} are not toy-world objects; expected some of {list(OBJECTS)}"
        )


def scene_relations(thesaurus: str, classes: list[str]) -> SceneRelations:
    """The toy scenes' weights and the heights of ``classes`` from a relation table.

    Raises FreemaskError when the table lacks a class or places it in no toy scene."""
    from freemask.relate.thesaurus import load_thesaurus

    table = load_thesaurus(thesaurus)
    weights, heights = {}, {}
    for name in classes:
        entry = table.lookup(name)
        if entry is None:
            raise FreemaskError(f"{thesaurus}: class {name!r} is not in the relation table")
        weights[name] = {
            scene: weight for scene, weight in table.scene_weights(entry).items() if scene in SCENES
        }
        if not weights[name]:
            raise FreemaskError(
                f"{thesaurus}: class {name!r} has no toy scene among its scenes; "
                f"expected some of {list(SCENES)}"
            )
        heights[name] = entry.size
    return SceneRelations(weights=weights, heights=heights)


def check_renderer_version(storage: Storage) -> None:
    """Refuse an output holding scenes of another renderer ``VERSION`` (resuming it would mix
    two renderers' scenes under the same settings)."""
    if not storage.exists(MANIFEST):
        return
    versions = {
        stamp.version
        for sample in read_manifest(storage)
        for stamp in sample.source
        if stamp.stage == STAGE
    }
    if versions - {VERSION}:
        raise FreemaskError(
            f"{storage.uri}: holds toyworld scenes of renderer version(s) "
            f"{', '.join(sorted(versions - {VERSION}))}, now {VERSION}; write to a new --out "
            "or remove the old output"
        )


def write_toy_scenes(
    outputs: str,
    classes: list[str],
    count: int,
    *,
    seed: int = 0,
    size: int = IMAGE_SIDE,
    objects: tuple[int, int] = (2, 3),
    thesaurus: str | None = None,
    domain: str = "toy",
) -> StageResult:
    """Render ``count`` scenes with ``objects`` shapes of ``classes`` under ``outputs``.

    With a ``thesaurus`` (a relation table's path), scenes follow its class-scene weights and
    object sizes (``related_scene``); without, any class goes anywhere at any size. ``domain``
    "shifted" draws other textures, tints and lights (a labeller's training data).
    Semantic masks use the run's class ids (1-based in ``classes`` order); instances are exact
    and occlusion-aware. Resumable: scenes already recorded are not drawn again.

    Raises FreemaskError when ``outputs`` holds scenes made with other settings or another
    renderer ``VERSION``.
    """
    check_toy_classes(classes)
    relations = scene_relations(thesaurus, classes) if thesaurus else None
    settings = f"{seed}|{size}|{objects}|{sorted(classes)}|{relations}|{domain}"
    digest = hashlib.sha256(settings.encode()).hexdigest()[:12]
    storage = open_storage(outputs)
    output = StageOutput(storage, STAGE, settings_hash=digest)
    check_renderer_version(storage)
    ids = [f"toy-{digest}-{index:06d}" for index in range(count)]
    todo = output.pending(ids)
    stamp = StageStamp(stage=STAGE, version=VERSION, config_hash=digest)
    for index, sample_id in enumerate(ids):
        if sample_id not in todo:
            continue
        scene_seed = seed * 1_000_003 + index
        if relations is None:
            scene = random_scene(scene_seed, size, objects, tuple(classes), domain=domain)
        else:
            scene = related_scene(scene_seed, size, objects, relations, domain)
        semantic = scene.semantic.copy()
        for object_index, name in enumerate(OBJECTS, start=1):
            if name in classes:
                semantic[scene.semantic == object_index] = classes.index(name) + 1
        sample = Sample(
            id=sample_id,
            image=f"images/{sample_id}.png",
            semantic_mask=f"masks/{sample_id}.png",
            truth_mask=f"masks/{sample_id}.png",  # rendered: the label is the exact truth
            width=size,
            height=size,
            instances=[
                Instance.from_mask(name, classes.index(name) + 1, mask)
                for name, mask in scene.instances
            ],
            prompt=scene.caption,
            seed=scene_seed,
            source=[stamp],
            scene=scene.scene,
        )
        output.commit(
            sample,
            {
                sample.image: encode_image(scene.image, sample.image),
                sample.semantic_mask: encode_image(semantic, sample.semantic_mask),
            },
        )
    return output.finish({"scenes": count, "classes": classes})
