"""Backgrounds for composition: drawn from scene prompts, or taken from the user's images.

Drawn: for every scene the run's classes fit best (from ``relations.json``), the diffusion
pipeline draws ``backgrounds_per_scene`` images from ``compose.background_prompt`` (no attention
capture). Given: ``compose.backgrounds`` names a folder or prefix of images; an image under a
sub-folder named like a scene (``sea/``, ``grassland/``) is tagged with that scene, any other is
untagged and may host every class. Either way each background is a manifest record.
"""

from __future__ import annotations

import hashlib
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import torch

from freemask.config import RunConfig, config_hash
from freemask.errors import StorageError
from freemask.models import load_sd_pipeline, model_reference
from freemask.progress import progress_bar
from freemask.records import Sample, StageStamp, sample_id
from freemask.relate import load_thesaurus, read_relations
from freemask.stage_output import Shard, StageOutput, StageResult
from freemask.storage import encode_image, open_storage, read_image

STAGE = "backgrounds"
VERSION = "1"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SCENES_PER_CLASS = 3


def scenes_for_run(relations: dict[str, Any], parents: dict[str, str | None]) -> list[str]:
    """The concrete scenes (no scene that is another's parent) each class fits best, merged."""
    broad = {parent for parent in parents.values() if parent}
    chosen: dict[str, None] = {}
    for relation in relations["classes"].values():
        ranked = sorted(relation["scenes"].items(), key=lambda item: (-item[1], item[0]))
        concrete = [scene for scene, _ in ranked if scene not in broad]
        chosen.update(dict.fromkeys(concrete[:SCENES_PER_CLASS]))
    return sorted(chosen)


def run_backgrounds(
    config: RunConfig,
    inputs: str,
    outputs: str,
    *,
    shard: Shard | None = None,
    pipe: Any | None = None,
) -> StageResult:
    """Record the run's backgrounds under ``outputs``: the user's (``compose.backgrounds``) or
    drawn ones for the scenes in ``inputs``/relations.json (a relate stage's prefix)."""
    shard = shard or Shard()
    settings = config.generate
    digest = config_hash(settings, exclude={"batch_size", "device", "images_per_class"})
    source = config.compose.backgrounds or f"{digest}|{config.compose.background_prompt}"
    output = StageOutput(open_storage(outputs), STAGE, shard, settings_hash=_short(source))
    if config.compose.backgrounds:
        return _import_backgrounds(config, output, shard)
    relations = read_relations(open_storage(inputs))
    scenes = scenes_for_run(relations, load_thesaurus(config.relate.thesaurus).parents)
    prompt_template = config.compose.background_prompt
    planned = [
        (scene, index, _seed(config.draw_seed, scene, index))
        for scene in scenes
        for index in range(config.compose.backgrounds_per_scene)
    ]
    planned = shard.select(planned)
    ids = [sample_id(digest, f"background {scene}", seed) for scene, _, seed in planned]
    todo = output.pending(ids)
    stamp = StageStamp(stage=STAGE, version=VERSION, config_hash=digest)
    batches = [
        list(zip(ids, planned, strict=True))[start : start + settings.batch_size]
        for start in range(0, len(planned), settings.batch_size)
    ]
    batches = [batch for batch in batches if any(item_id in todo for item_id, _ in batch)]
    if batches and pipe is None:
        pipe = load_sd_pipeline(settings)
    done = len(planned) - len(todo)
    with progress_bar("backgrounds: images", len(planned), done=done, shard=shard) as advance:
        for batch in batches:
            prompts = [prompt_template.format(scene=scene) for _, (scene, _, _) in batch]
            result = pipe(
                prompts,
                negative_prompt=[settings.negative_prompt] * len(batch),
                height=settings.height,
                width=settings.width,
                num_inference_steps=settings.num_inference_steps,
                guidance_scale=settings.guidance_scale,
                generator=[torch.Generator("cpu").manual_seed(seed) for _, (_, _, seed) in batch],
                output_type="np",
            )
            for (item_id, (scene, _, seed)), prompt, image in zip(
                batch, prompts, result.images, strict=True
            ):
                if item_id not in todo:
                    continue
                pixels = np.round(np.nan_to_num(image) * 255).astype(np.uint8)
                sample = Sample(
                    id=item_id,
                    image=f"images/{item_id}.png",
                    width=pixels.shape[1],
                    height=pixels.shape[0],
                    prompt=prompt,
                    seed=seed,
                    model_id=model_reference(settings.model_id),
                    model_revision=settings.revision,
                    source=[stamp],
                    scene=scene,
                )
                output.commit(sample, {sample.image: encode_image(pixels, sample.image)})
                advance(1)
    return output.finish({"scenes": scenes})


def _import_backgrounds(config: RunConfig, output: StageOutput, shard: Shard) -> StageResult:
    """Record the user's background images, tagged by their sub-folder when it names a scene."""
    source = open_storage(config.compose.backgrounds)
    thesaurus = load_thesaurus(config.relate.thesaurus)
    files = [path for path in source.list() if path.lower().endswith(IMAGE_SUFFIXES)]
    stamp = StageStamp(stage=STAGE, version=VERSION, config_hash="user-images")
    for path in shard.select(files):
        item_id = sample_id("user", path, 0)
        if output.is_done(item_id):
            continue
        parts = PurePosixPath(path).parts
        scene = thesaurus.scene(parts[-2]) if len(parts) > 1 else None
        try:
            pixels = read_image(source, path, mode="RGB")
        except StorageError as exc:
            output.drop(item_id, str(exc))
            continue
        target = f"images/{item_id}.png"
        sample = Sample(
            id=item_id,
            image=target,
            width=pixels.shape[1],
            height=pixels.shape[0],
            prompt=f"{source.uri}/{path}",
            source=[stamp],
            scene=scene,
        )
        output.commit(sample, {target: encode_image(pixels, target)})
    return output.finish({"imported_from": source.uri, "files": len(files)})


def _short(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _seed(run_seed: int, scene: str, index: int) -> int:
    digest = hashlib.sha256(f"background|{run_seed}|{scene}|{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
