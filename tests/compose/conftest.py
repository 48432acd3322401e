"""Exact inputs for composition: disc-shaped objects, tagged backgrounds, the demo thesaurus."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from freemask.config import RunConfig
from freemask.records import IGNORE_INDEX, Instance, Sample, sample_id, write_manifest
from freemask.relate import run_relate
from freemask.storage import LocalStorage, encode_image

DEMO_THESAURUS = Path(__file__).parents[2] / "configs" / "demo_thesaurus.yaml"
CLASSES = ["ball", "box", "cross"]


def write_objects(root: Path, classes: list[str], per_class: int, size: int = 64, empty=()) -> None:
    """Single-object samples: a coloured disc (label = class id, a 1-px uncertain rim)."""
    storage = LocalStorage(root)
    rows, cols = np.ogrid[:size, :size]
    samples = []
    for class_id, name in enumerate(classes, start=1):
        for index in range(per_class):
            rng = np.random.default_rng([class_id, index])
            radius = size // 4 + index
            distance = np.sqrt((rows - size / 2) ** 2 + (cols - size / 2) ** 2)
            disc = distance <= radius
            label = np.zeros((size, size), np.uint8)
            if name not in empty:
                label[disc] = class_id
                label[(distance > radius) & (distance <= radius + 1)] = IGNORE_INDEX
            image = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            image[disc] = rng.integers(120, 255, 3, dtype=np.uint8)
            soft = np.clip(1.0 - (distance - radius) / 3, 0, 1).astype(np.float16)
            identifier = sample_id("objects", name, index)
            sample = Sample(
                id=identifier,
                image=f"images/{identifier}.png",
                semantic_mask=f"masks/{identifier}.png",
                soft_mask=f"soft_masks/{identifier}.npy",
                width=size,
                height=size,
                instances=[Instance.from_mask(name, class_id, label == class_id)],
            )
            buffer = io.BytesIO()
            np.save(buffer, soft, allow_pickle=False)
            storage.write_bytes(sample.image, encode_image(image, sample.image))
            storage.write_bytes(sample.semantic_mask, encode_image(label, sample.semantic_mask))
            storage.write_bytes(sample.soft_mask, buffer.getvalue())
            samples.append(sample)
    write_manifest(storage, samples)
    storage.write_bytes("_SUCCESS", b"{}\n")  # a finished stage output


def write_background_folder(root: Path, scenes: dict[str | None, int], size=(96, 128)) -> None:
    """Background images, under a folder per scene (None: at the top, untagged)."""
    storage = LocalStorage(root)
    for scene, count in scenes.items():
        for index in range(count):
            rng = np.random.default_rng(index)
            image = np.full((*size, 3), 90 + 20 * index, np.uint8)
            image[size[0] // 2 :] = rng.integers(0, 255, (size[0] - size[0] // 2, size[1], 3))
            name = f"{scene}/bg{index}.png" if scene else f"bg-untagged-{index}.png"
            storage.write_bytes(name, encode_image(image, name))


@pytest.fixture
def compose_run(tmp_path):
    """Build a run config and its inputs: objects, relations and backgrounds folders."""

    def build(scenes=None, classes=CLASSES, empty=(), **compose) -> RunConfig:
        config = RunConfig.model_validate(
            {
                "name": "compose-test",
                "workdir": str(tmp_path / "work"),
                "classes": classes,
                "relate": {"thesaurus": str(DEMO_THESAURUS)},
                "compose": {
                    "images": 6,
                    "objects_per_image": [2, 3],
                    "backgrounds": str(tmp_path / "user-backgrounds"),
                    **compose,
                },
            }
        )
        write_objects(tmp_path / "work" / "generate", classes, per_class=3, empty=empty)
        write_background_folder(
            tmp_path / "user-backgrounds", scenes or {"field": 2, "floor": 1, "sky": 1}
        )
        run_relate(config, None, str(tmp_path / "work" / "relate"))
        from freemask.compose import run_backgrounds

        run_backgrounds(
            config, str(tmp_path / "work" / "relate"), str(tmp_path / "work" / "backgrounds")
        )
        return config

    return build
