"""The ignore-disputed step: a kept sample's contradicted classes become ignore, the rest stays."""

from __future__ import annotations

import numpy as np
from active_helpers import select_with_truth_as_judge, write_truth_pool

from freemask.active import steps
from freemask.active.disputed import disputed_classes, ignore_classes
from freemask.active.filter import sample_classes
from freemask.config import ActiveConfig
from freemask.records import IGNORE_INDEX, Sample, read_manifest
from freemask.storage import read_image


def scored(per_class: dict[int, float]) -> Sample:
    scores = {f"iou_vs_pseudo_gt.class_{k}": v for k, v in per_class.items()}
    return Sample(id="s", image="i.png", width=4, height=4, scores=scores)


def test_only_classes_below_the_threshold_beside_an_agreeing_one_are_disputed() -> None:
    rules = ActiveConfig(iou_threshold=0.5)
    assert disputed_classes(scored({1: 0.9, 2: 0.2, 3: 0.49}), rules) == [2, 3]
    assert disputed_classes(scored({1: 0.9, 2: 0.5}), rules) == []
    assert disputed_classes(scored({1: 0.1, 2: 0.3}), rules) == []  # nothing agrees: as kept
    assert disputed_classes(scored({}), rules) == []


def test_ignore_classes_leaves_other_labels_and_ignore_alone() -> None:
    mask = np.array([[0, 1, 2, 255, 2]], np.uint8)
    assert ignore_classes(mask, [2]).tolist() == [[0, 1, 255, 255, 255]]


def ball_moved_off(index: int, semantic: np.ndarray) -> np.ndarray:
    """Sample 0: the ball's label lies beside the ball (on the background), the box's is exact."""
    if index != 0:
        return semantic
    moved = semantic.copy()
    moved[semantic == 2] = 0
    moved[np.roll(semantic == 2, -30, axis=1) & (semantic == 0)] = 2
    return moved


def test_a_kept_scenes_contradicted_class_becomes_ignore_under_the_round(
    tmp_path, config_for, prepared
):
    write_truth_pool(tmp_path / "pool", 4, corrupt=ball_moved_off)
    original = (tmp_path / "pool/masks/shapes-000.png").read_bytes()
    config = config_for(active={"ignore_disputed": True})
    out = select_with_truth_as_judge(tmp_path, config, prepared)
    kept = {s.id: s for s in read_manifest(out, "rounds/01/kept.jsonl")}
    assert len(kept) == 4  # any_class: the box agrees, so the broken scene is kept
    broken = kept["shapes-000"]
    assert (
        broken.scores["iou_vs_pseudo_gt.class_2"] < 0.5 <= broken.scores["iou_vs_pseudo_gt.class_1"]
    )
    assert broken.semantic_mask == "rounds/01/disputed/shapes-000.png"
    before = read_image(out, "masks/shapes-000.png")
    after = read_image(out, broken.semantic_mask)
    assert (before == 2).any() and not (after == 2).any()
    assert (after[before == 2] == IGNORE_INDEX).all()
    assert np.array_equal(after[before != 2], before[before != 2])
    assert [(i.class_name, i.disputed) for i in broken.instances] == [
        ("box", False),
        ("ball", True),
    ]
    assert (tmp_path / "active/masks/shapes-000.png").read_bytes() == original
    assert all(kept[f"shapes-00{i}"].semantic_mask.startswith("masks/") for i in (1, 2, 3))
    assert sample_classes(broken, after) == [1]  # the next round judges the box alone
    report = steps.read_json(out, "rounds/01/filter.json")
    assert report["disputed_ignored"] == 1
    assert report["dispute_precision"] == {  # the ball's label missed it; the box's is exact
        "disputed_true_iou": 0.0,
        "undisputed_true_iou": 1.0,
        "gap": 1.0,
    }


def test_ignore_disputed_is_off_by_default(tmp_path, config_for, prepared):
    write_truth_pool(tmp_path / "pool", 4, corrupt=ball_moved_off)
    out = select_with_truth_as_judge(tmp_path, config_for(), prepared)
    kept = {s.id: s for s in read_manifest(out, "rounds/01/kept.jsonl")}
    assert kept["shapes-000"].semantic_mask == "masks/shapes-000.png"
    assert not any(i.disputed for i in kept["shapes-000"].instances)
    assert not (tmp_path / "active/rounds/01/disputed").exists()
    assert steps.read_json(out, "rounds/01/filter.json")["disputed_ignored"] == 0
