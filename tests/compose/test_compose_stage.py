"""The compose stage end to end on exact inputs: labels, boxes, determinism, resuming, skips."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from freemask.compose import run_backgrounds, run_compose
from freemask.errors import FreemaskError
from freemask.records import IGNORE_INDEX, read_manifest, write_manifest
from freemask.stage_output import StageOutput, read_rejected
from freemask.storage import LocalStorage, encode_image, read_array, read_image


def tree(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != "_SUCCESS"
    }


def compose(config, out: Path):
    return run_compose(config, f"{config.workdir}/generate", str(out))


def test_scenes_have_exact_labels_inside_the_image(compose_run, tmp_path) -> None:
    config = compose_run()
    result = compose(config, tmp_path / "out")
    storage = LocalStorage(tmp_path / "out")
    samples = read_manifest(storage)
    backgrounds = {
        bg.id for bg in read_manifest(LocalStorage(Path(config.workdir) / "backgrounds"))
    }
    assert result.written == len(samples) == 6
    for sample in samples:
        semantic = read_image(storage, sample.semantic_mask)
        soft = read_array(storage, sample.soft_mask)
        assert semantic.shape == (sample.height, sample.width) == (96, 128)
        assert set(np.unique(semantic)) <= {0, 1, 2, 3, IGNORE_INDEX}
        assert soft.shape == (len(sample.instances), 96, 128)
        union = np.zeros(semantic.shape, bool)
        for instance in sample.instances:
            mask = instance.mask()
            x, y, width, height = instance.bbox
            assert x >= 0 and y >= 0 and x + width <= 128 and y + height <= 96
            assert (semantic[mask] == instance.class_id).all()
            assert not (union & mask).any()  # instances never share a pixel
            union |= mask
        for placement in sample.placements:
            x, y, width, height = placement.box
            assert x >= 0 and y >= 0 and x + width <= 128 and y + height <= 96
        assert len(sample.placements) >= len(sample.instances) >= 1
        assert sample.source[0].parents[0] in backgrounds  # the background comes first
        assert sample.scene in {"field", "floor", "sky"}


def test_same_seed_gives_the_same_scenes(compose_run, tmp_path) -> None:
    config = compose_run()
    compose(config, tmp_path / "first")
    compose(config, tmp_path / "second")
    assert tree(tmp_path / "first") == tree(tmp_path / "second")


def test_interrupted_compose_resumes_to_the_same_bytes(compose_run, tmp_path, monkeypatch) -> None:
    config = compose_run()
    compose(config, tmp_path / "whole")
    commit = StageOutput.commit
    calls = {"count": 0}

    def commit_then_die(self, sample, files):
        if calls["count"] == 2:
            raise KeyboardInterrupt
        calls["count"] += 1
        commit(self, sample, files)

    monkeypatch.setattr(StageOutput, "commit", commit_then_die)
    with pytest.raises(KeyboardInterrupt):
        compose(config, tmp_path / "resumed")
    monkeypatch.setattr(StageOutput, "commit", commit)
    again = compose(config, tmp_path / "resumed")
    assert again.skipped == 2
    assert tree(tmp_path / "resumed") == tree(tmp_path / "whole")


def give_objects_truth(folder: Path, grow: int = 4) -> None:
    """Each object's truth: its disc grown by ``grow`` pixels (the label missed that rim),
    drawn in the object's colour."""
    storage = LocalStorage(folder)
    samples = read_manifest(storage)
    for sample in samples:
        label = read_image(storage, sample.semantic_mask)
        image = read_image(storage, sample.image, mode="RGB").copy()
        class_id = sample.instances[0].class_id
        disc = label == class_id
        grown = cv2.dilate(disc.astype(np.uint8), np.ones((2 * grow + 1,) * 2, np.uint8)) > 0
        image[grown] = image[disc][0]
        truth = np.where(grown, class_id, 0).astype(np.uint8)
        sample.truth_mask = f"truth/{sample.id}.png"
        storage.write_bytes(sample.image, encode_image(image, sample.image))
        storage.write_bytes(sample.truth_mask, encode_image(truth, sample.truth_mask))
    write_manifest(storage, samples)


def test_pasting_whole_objects_shows_what_the_labels_missed_as_ignore(compose_run, tmp_path):
    config = compose_run()
    give_objects_truth(Path(config.workdir) / "generate")
    shown = {}
    for extent in ("label", "truth"):
        config.compose.paste_extent = extent
        compose(config, tmp_path / extent)
        storage = LocalStorage(tmp_path / extent)
        object_pixels = labelled = 0
        for sample in read_manifest(storage):
            semantic = read_image(storage, sample.semantic_mask)
            truth = read_image(storage, sample.truth_mask)
            if extent == "truth":
                # Every pixel of a pasted object is labelled its class or ignore, never background.
                assert (semantic[truth != 0] != 0).all()
            object_pixels += int((truth != 0).sum())
            labelled += int(((semantic != 0) & (semantic != IGNORE_INDEX)).sum())
        shown[extent] = object_pixels / labelled
    # Cut to its label, an object loses its missed rim; pasted whole, the composite shows it.
    assert shown["truth"] > shown["label"] * 1.2


def test_an_output_made_before_paste_extent_existed_resumes_until_it_is_changed(
    compose_run, tmp_path
) -> None:
    config = compose_run()
    out = tmp_path / "scenes"
    compose(config, out)
    # At 'label', what compose did before the setting existed, it is not recorded: outputs
    # made before it keep their ids and settings, and a re-run finds everything done.
    assert "compose.paste_extent" not in (out / "stage.json").read_text()
    before = tree(out)
    assert compose(config, out).skipped == config.compose.images
    assert tree(out) == before
    config.compose.paste_extent = "truth"
    with pytest.raises(FreemaskError, match=r"compose\.paste_extent '\(unset\)' -> 'truth'"):
        compose(config, out)


def test_class_with_no_fitting_background_is_rejected_with_a_reason(compose_run, tmp_path) -> None:
    config = compose_run(scenes={"sky": 2})  # crosses fly; balls and boxes need ground scenes
    result = compose(config, tmp_path / "out")
    reasons = [entry["reason"] for entry in read_rejected(LocalStorage(tmp_path / "out"))]
    assert result.dropped == len(reasons) == 4  # scenes led by ball or box (2 each of 6)
    assert all("has no scene among the backgrounds" in reason for reason in reasons)
    assert {s.instances[0].class_name for s in read_manifest(LocalStorage(tmp_path / "out"))} == {
        "cross"
    }


def test_empty_object_masks_are_skipped_with_a_reason(compose_run, tmp_path) -> None:
    config = compose_run(classes=["ball"], empty=("ball",))
    result = compose(config, tmp_path / "out")
    assert result.written == 0 and result.dropped == 6
    reasons = [entry["reason"] for entry in read_rejected(LocalStorage(tmp_path / "out"))]
    assert all("empty object mask" in reason for reason in reasons)


def test_user_backgrounds_are_tagged_by_their_folder(compose_run, tmp_path) -> None:
    config = compose_run(scenes={"grass": 1, None: 1})
    backgrounds = read_manifest(LocalStorage(Path(config.workdir) / "backgrounds"))
    assert sorted(str(sample.scene) for sample in backgrounds) == ["None", "field"]


def test_drawn_backgrounds_cover_the_classes_scenes(compose_run, tmp_path) -> None:
    from freemask.models import build_tiny_sd

    config = compose_run()
    config.compose.backgrounds = None
    config.compose.backgrounds_per_scene = 1
    config.generate.height = config.generate.width = 64
    config.generate.num_inference_steps = 2
    result = run_backgrounds(
        config, f"{config.workdir}/relate", str(tmp_path / "drawn"), pipe=build_tiny_sd(0)
    )
    samples = read_manifest(LocalStorage(tmp_path / "drawn"))
    assert {sample.scene for sample in samples} == set(result.summary["scenes"])
    assert {"field", "sky", "floor"} <= set(result.summary["scenes"])
    assert all(sample.prompt == f"a photo of a {sample.scene}" for sample in samples)
    torch.testing.assert_close(
        torch.tensor(len(samples)), torch.tensor(len(result.summary["scenes"]))
    )
