"""The class check at generate: CLIP's and the labeller's verdicts, and the stage around them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from freemask.config import GenerateConfig, load_config
from freemask.errors import ConfigError, FreemaskError
from freemask.generate import ClipCheck, LabellerCheck, Verdict, plan_samples, run_generate
from freemask.generate.class_check import (
    CROP_FILL,
    clip_verdict,
    labeller_verdict,
    object_crop,
)
from freemask.generate.stage import content_hash, settings_hash
from freemask.records import IGNORE_INDEX, read_manifest
from freemask.stage_output import REJECTED, read_rejected
from freemask.storage import LocalStorage, read_image
from freemask.toyworld.render import OBJECTS, ToyObject, render

# The toy world's classes, which the toy labeller predicts.
TOY_CLASSES = list(OBJECTS)


def check_settings(**values) -> GenerateConfig:
    return GenerateConfig(height=128, width=128, **values)


def toy_object(name: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A rendered toy scene of one ``name`` in the middle of a field, and its exact mask."""
    scene = render("field", [ToyObject(name, "red", (0.5, 0.55), 0.55)], 128, seed=seed)
    return scene.image, scene.semantic == OBJECTS.index(name) + 1


@pytest.fixture(scope="module")
def toy_labeller() -> LabellerCheck:
    settings = check_settings(class_check="labeller", class_check_model="builtin:toy-labeller")
    return LabellerCheck.from_config(settings, TOY_CLASSES)


# Verdicts from scores: the rules, on constructed numbers.


def test_clip_keeps_the_drawn_class_only_as_the_winner_above_the_threshold() -> None:
    classes = ["ball", "box", "cross"]
    kept = clip_verdict(np.array([0.1, 0.2, 0.7]), classes, "cross", threshold=0.5)
    assert (kept.action, kept.class_name, kept.score) == ("kept", "cross", 0.7)
    weak = clip_verdict(np.array([0.3, 0.3, 0.4]), classes, "cross", threshold=0.5)
    assert weak.action == "rejected" and weak.reason == "clip: cross 0.40 < threshold 0.5"
    beaten = clip_verdict(np.array([0.1, 0.6, 0.3]), classes, "cross", threshold=0.2)
    assert beaten.action == "rejected" and beaten.reason == "clip: box 0.60, cross 0.30"


def test_clip_relabels_a_clear_winner_only_when_asked() -> None:
    classes = ["ball", "box", "cross"]
    scores = np.array([0.05, 0.8, 0.15])
    assert clip_verdict(scores, classes, "cross", 0.5).action == "rejected"
    moved = clip_verdict(scores, classes, "cross", 0.5, relabel_margin=0.3)
    assert (moved.action, moved.class_name, moved.score) == ("relabelled", "box", 0.8)
    close = np.array([0.0, 0.55, 0.45])  # box wins, but not by the margin
    assert clip_verdict(close, classes, "cross", 0.5, relabel_margin=0.3).action == "rejected"


def test_labeller_verdict_reads_the_classes_under_the_mask() -> None:
    classes = ["ball", "box", "cross"]
    # [background, ball, box, cross] pixel counts under the mask
    kept = labeller_verdict(np.array([10, 0, 5, 85]), classes, "cross", threshold=0.3)
    assert (kept.action, kept.score) == ("kept", 0.85)
    misdrawn = labeller_verdict(np.array([0, 0, 55, 45]), classes, "cross", threshold=0.3)
    assert misdrawn.action == "rejected"
    assert misdrawn.reason == (
        "labeller: box under 55% of the mask (> threshold 0.3), cross under 45%"
    )
    # A hybrid: the drawn class wins, but another holds more than the threshold.
    hybrid = np.array([0, 0, 20, 80])
    assert labeller_verdict(hybrid, classes, "cross", threshold=0.1).action == "rejected"
    assert labeller_verdict(hybrid, classes, "cross", threshold=0.3).action == "kept"
    # Another class under at most the threshold share lets the object pass.
    minor = labeller_verdict(np.array([40, 0, 25, 20]), classes, "cross", threshold=0.3)
    assert minor.action == "kept"
    empty = labeller_verdict(np.array([80, 0, 0, 20]), classes, "cross", threshold=0.3)
    assert empty.action == "rejected" and empty.reason.startswith("no object: ")


def test_labeller_relabels_only_a_class_that_leads_by_the_margin() -> None:
    classes = ["ball", "box", "cross"]
    moved = labeller_verdict(np.array([5, 0, 90, 5]), classes, "cross", 0.3, relabel_margin=0.3)
    assert (moved.action, moved.class_name, moved.score) == ("relabelled", "box", 0.9)
    close = labeller_verdict(np.array([0, 0, 55, 45]), classes, "cross", 0.3, relabel_margin=0.3)
    assert close.action == "rejected"
    hybrid = labeller_verdict(np.array([0, 0, 20, 80]), classes, "cross", 0.1, relabel_margin=0.3)
    assert hybrid.action == "rejected"


def test_object_crop_greys_the_background_and_pads_to_a_square() -> None:
    image = np.full((40, 60, 3), 7, np.uint8)
    mask = np.zeros((40, 60), bool)
    mask[10:20, 5:45] = True  # a 10 x 40 object
    mask[10, 5] = False
    crop = object_crop(image, mask)
    assert crop.shape == (48, 48, 3)  # 40 px and a 10% margin on each side
    assert (crop == 7).all(axis=2).sum() == mask.sum()  # exactly the object's pixels
    assert set(np.unique(crop)) == {7, CROP_FILL}


# CLIP: a tiny model built offline, loaded from its folder as a hub id would be.


@pytest.fixture(scope="module")
def tiny_clip(tiny_clip_folder) -> ClipCheck:
    settings = check_settings(class_check="clip", class_check_model=str(tiny_clip_folder))
    return ClipCheck.from_config(settings, TOY_CLASSES)


def test_clip_check_scores_every_run_class_on_the_object_crop(tiny_clip) -> None:
    image, mask = toy_object("cross")
    assert tiny_clip.text_embeddings.shape == (len(TOY_CLASSES), 16)
    probabilities = tiny_clip.probabilities([image, image], [mask, mask])
    assert probabilities.shape == (2, len(TOY_CLASSES))
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    # Only the object counts: the scene outside its mask changes nothing.
    other = image.copy()
    other[~mask] = 255 - other[~mask]
    assert np.allclose(tiny_clip.probabilities([other], [mask]), probabilities[:1], atol=1e-5)


def test_clip_check_verdict_follows_the_image_text_similarity(tiny_clip) -> None:
    image, mask = toy_object("cross")
    (embedding,) = tiny_clip.encode_images([image], [mask])
    saved = tiny_clip.text_embeddings
    try:
        # "a photo of a box" made to match this crop exactly, every other prompt its opposite.
        texts = -embedding.repeat(len(TOY_CLASSES), 1)
        texts[TOY_CLASSES.index("box")] = embedding
        tiny_clip.text_embeddings = texts
        assert tiny_clip([image], [mask], ["box"])[0].action == "kept"
        (rejected,) = tiny_clip([image], [mask], ["cross"])
        assert rejected.action == "rejected" and rejected.reason.startswith("clip: box ")
        tiny_clip.relabel_margin = 0.3
        (moved,) = tiny_clip([image], [mask], ["cross"])
        assert (moved.action, moved.class_name) == ("relabelled", "box")
    finally:
        tiny_clip.text_embeddings, tiny_clip.relabel_margin = saved, None


def test_clip_check_that_cannot_load_names_the_field(tmp_path) -> None:
    settings = check_settings(class_check="clip", class_check_model=str(tmp_path))
    with pytest.raises(FreemaskError, match=r"generate.class_check_model '.*': cannot load"):
        ClipCheck.from_config(settings, TOY_CLASSES)


# The labeller: the toy world's, on rendered objects.


def test_labeller_rejects_a_cross_drawn_as_a_box_and_keeps_a_ball(toy_labeller) -> None:
    cross, cross_mask = toy_object("cross")
    ball, ball_mask = toy_object("ball", seed=1)
    wrong, right = toy_labeller([cross, ball], [cross_mask, ball_mask], ["box", "ball"])
    assert wrong.action == "rejected"
    assert wrong.reason.startswith("labeller: cross under ")
    assert (right.action, right.class_name) == ("kept", "ball") and right.score > 0.8


def test_labeller_relabels_when_asked(toy_labeller) -> None:
    cross, mask = toy_object("cross")
    toy_labeller.relabel_margin = 0.3
    try:
        (verdict,) = toy_labeller([cross], [mask], ["box"])
    finally:
        toy_labeller.relabel_margin = None
    assert (verdict.action, verdict.class_name) == ("relabelled", "cross")


def test_labeller_rejects_a_mask_on_the_background_as_no_object(toy_labeller) -> None:
    image, _ = toy_object("ball")
    corner = np.zeros(image.shape[:2], bool)
    corner[:24, :24] = True
    (verdict,) = toy_labeller([image], [corner], ["ball"])
    assert verdict.action == "rejected" and verdict.reason.startswith("no object: ")


def test_labeller_without_a_run_class_is_refused_naming_it() -> None:
    settings = check_settings(class_check="labeller", class_check_model="builtin:toy-labeller")
    with pytest.raises(FreemaskError, match=r"class_check_model .*no label for class\(es\) dog"):
        LabellerCheck.from_config(settings, ["ball", "dog"])


# The stage: rejections, relabels, sample ids and the settings guard.


def toy_config(make_config, **generate):
    return make_config(**generate).model_copy(update={"classes": ["ball", "box"]})


def test_stage_rejects_with_class_check_reasons_counted_per_class(
    tiny_pipe, make_config, tmp_path
) -> None:
    # The tiny pipeline's random images hold no toy object: the labeller sees background.
    config = toy_config(
        make_config, class_check="labeller", class_check_model="builtin:toy-labeller"
    )
    storage = LocalStorage(tmp_path / "out")
    result = run_generate(config, None, storage.uri, pipe=tiny_pipe)
    rejected = read_rejected(storage, REJECTED)
    assert result.dropped == len(rejected) > 0
    assert all(entry["reason"].startswith("class_check: no object: ") for entry in rejected)
    assert result.summary["rejected_by_reason"] == {"class_check": len(rejected)}
    per_class = {name: sum(e["id"].startswith(name) for e in rejected) for name in ("ball", "box")}
    assert result.summary["rejected_by_class"] == {k: v for k, v in per_class.items() if v}
    for sample in read_manifest(storage) if result.written else []:
        assert "class_check_score" in sample.scores


def test_stage_records_a_relabelled_sample_under_its_new_class(
    tiny_pipe, make_config, tmp_path, monkeypatch
) -> None:
    class BallsAreBoxes:
        classes = ("ball", "box")

        def __call__(self, images, masks, intended):
            return [
                Verdict("relabelled", "box", 0.9, "test")
                if name == "ball"
                else Verdict("kept", name, 0.8, "test")
                for name in intended
            ]

    monkeypatch.setattr(
        "freemask.generate.stage.load_class_check", lambda settings, classes: BallsAreBoxes()
    )
    config = toy_config(
        make_config,
        class_check="labeller",
        class_check_model="builtin:toy-labeller",
        class_check_relabel=True,
    )
    storage = LocalStorage(tmp_path / "out")
    result = run_generate(config, None, storage.uri, pipe=tiny_pipe)
    samples = read_manifest(storage)
    assert result.written == len(samples) == 4
    moved = [s for s in samples if s.id.startswith("ball-")]
    assert len(moved) == 2 and result.summary["relabelled_by_class"] == {"ball": {"box": 2}}
    for sample in moved:
        (instance,) = sample.instances
        assert (instance.class_name, instance.class_id) == ("box", 2)
        label = read_image(storage, sample.semantic_mask)
        assert set(np.unique(label)) <= {0, 2, IGNORE_INDEX} and (label == 2).any()
        assert np.array_equal(instance.mask(), label == 2)
        assert sample.scores["class_check_relabelled_from"] == 1.0
        assert sample.scores["class_check_score"] == 0.9
        assert [stamp.stage for stamp in sample.source] == ["generate", "class_check"]
        assert "ball" in sample.prompt  # drawn as a ball
    kept = [s for s in samples if s.id.startswith("box-")]
    assert all("class_check_relabelled_from" not in s.scores for s in kept)


def test_check_keeps_sample_ids_but_guards_a_resumed_output(
    tiny_pipe, make_config, tmp_path
) -> None:
    plain = toy_config(make_config)
    checked = toy_config(
        make_config, class_check="labeller", class_check_model="builtin:toy-labeller"
    )
    assert [s.id for s in plan_samples(plain)] == [s.id for s in plan_samples(checked)]
    assert content_hash(plain) == content_hash(checked) == settings_hash(plain)
    assert settings_hash(checked) != settings_hash(plain)
    out = str(tmp_path / "out")
    run_generate(plain, None, out, pipe=tiny_pipe)
    with pytest.raises(FreemaskError, match=r"generate.class_check '\(unset\)' -> 'labeller'"):
        run_generate(checked, None, out, pipe=tiny_pipe)


# Config: each mistake named.


def config_problems(tmp_path: Path, generate: str) -> list[str]:
    path = tmp_path / "run.yaml"
    path.write_text(f"classes: [ball]\ngenerate:\n{generate}")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    return str(caught.value).splitlines()


def test_labeller_check_without_a_model_is_refused(tmp_path) -> None:
    (line,) = config_problems(tmp_path, "  class_check: labeller\n")
    assert "class_check: labeller needs class_check_model" in line


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("class_check: blip", "generate.class_check: got 'blip'; expected "),
        ("class_check_threshold: 1.5", "generate.class_check_threshold: got 1.5; expected"),
        ("class_check_relabel_margin: 0", "generate.class_check_relabel_margin: got 0; expected"),
        ("class_check_model: ''", "generate.class_check_model: got ''"),
    ],
)
def test_class_check_settings_out_of_range_are_named(tmp_path, setting, expected) -> None:
    (line,) = config_problems(tmp_path, f"  {setting}\n")
    assert expected in line


def test_clip_check_runs_on_the_device_the_generate_settings_name(tiny_clip_folder) -> None:
    settings = check_settings(
        class_check="clip", class_check_model=str(tiny_clip_folder), device="cpu"
    )
    assert ClipCheck.from_config(settings, ["ball", "box"]).device == torch.device("cpu")
