"""Image-to-image from a user's own single-object samples: prompts, truth, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from freemask.errors import FreemaskError
from freemask.generate import run_generate
from freemask.records import IGNORE_INDEX, Instance, Sample, read_manifest, write_manifest
from freemask.storage import LocalStorage, encode_image, read_image


def write_init_set(root, per_class: dict[str, int], size: int = 64) -> dict[str, list[np.ndarray]]:
    """Single-object samples with a square object each, captioned; returns masks by class."""
    storage = LocalStorage(root)
    samples, masks = [], {}
    for class_id, (name, count) in enumerate(per_class.items(), start=7):  # ids of another run
        for index in range(count):
            mask = np.zeros((size, size), bool)
            top = 4 + 9 * index
            mask[top : top + 20, 10 + 5 * index : 40] = True
            label = np.where(mask, class_id, 0).astype(np.uint8)
            label[0, :] = IGNORE_INDEX
            image = np.full((size, size, 3), 40, np.uint8)
            image[mask] = (200, 30, 30)
            sample = Sample(
                id=f"init-{name.replace(' ', '-')}-{index}",
                image=f"images/{name}-{index}.png",
                semantic_mask=f"masks/{name}-{index}.png",
                width=size,
                height=size,
                instances=[Instance.from_mask(name, class_id, mask)],
                prompt=f"a photo of a red {name}",
            )
            storage.write_bytes(sample.image, encode_image(image, sample.image))
            storage.write_bytes(sample.semantic_mask, encode_image(label, sample.semantic_mask))
            samples.append(sample)
            masks.setdefault(name, []).append(mask)
    write_manifest(storage, samples)
    return masks


def test_redraws_carry_their_start_images_truth_and_caption(
    tiny_pipe, make_config, tmp_path
) -> None:
    masks = write_init_set(tmp_path / "init", {"cat": 2, "traffic light": 1})
    config = make_config(init_images=str(tmp_path / "init"), images_per_class=3, strength=0.5)
    result = run_generate(config, None, str(tmp_path / "out"), pipe=tiny_pipe)
    storage = LocalStorage(tmp_path / "out")
    samples = read_manifest(storage)
    assert result.written == len(samples) == 6
    used: dict[str, list[int]] = {}
    for sample in samples:
        name = sample.instances[0].class_name
        class_id = config.classes.index(name) + 1
        truth = read_image(storage, sample.truth_mask)
        assert (truth[0] == IGNORE_INDEX).all()  # the source's ignore stays ignore
        exact = [
            k
            for k, m in enumerate(masks[name])
            if np.array_equal(truth[1:], np.where(m, class_id, 0)[1:])
        ]
        assert len(exact) == 1, "a sample's truth is its start image's mask, relabelled"
        used.setdefault(name, []).append(exact[0])
        assert sample.prompt == f"a photo of a red {name}"
    # Three samples per class cycle through the class's init samples.
    assert sorted(used["cat"]) == [0, 0, 1] and used["traffic light"] == [0, 0, 0]


def test_a_class_without_init_images_is_refused_before_drawing(
    tiny_pipe, make_config, tmp_path
) -> None:
    write_init_set(tmp_path / "init", {"cat": 1})
    config = make_config(init_images=str(tmp_path / "init"))
    with pytest.raises(
        FreemaskError, match=r"init_images .*no sample of class\(es\) traffic light"
    ):
        run_generate(config, None, str(tmp_path / "out"), pipe=tiny_pipe)
    assert not (tmp_path / "out" / "manifest.jsonl").exists()
