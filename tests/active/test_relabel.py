"""The relabel step: the prediction replaces a mask only where both agree, ignore stays ignore."""

from __future__ import annotations

import numpy as np
from active_helpers import select_with_truth_as_judge, write_truth_pool
from helpers import disc

from freemask.active import relabel_mask, steps
from freemask.active.relabel import relabel_instances
from freemask.records import IGNORE_INDEX, Instance, read_manifest
from freemask.storage import read_image


def test_relabel_mask_keeps_the_samples_classes_and_its_ignore_pixels() -> None:
    generated = np.array([[1, 1, 255, 0, 0]], np.uint8)
    prediction = np.array([[1, 2, 1, 1, 0]], np.uint8)
    assert relabel_mask(generated, prediction, [1]).tolist() == [[1, 0, 255, 1, 0]]


def test_relabel_instances_split_a_class_between_its_instances() -> None:
    shape = (40, 80)
    left, right = disc(shape, (20, 15), 6), disc(shape, (20, 65), 6)
    instances = [Instance.from_mask("ball", 2, left), Instance.from_mask("ball", 2, right)]
    grown = (disc(shape, (20, 15), 9) | disc(shape, (20, 65), 9)).astype(np.uint8) * 2
    redrawn = relabel_instances(instances, grown)
    assert [i.area for i in redrawn] == [int(disc(shape, (20, 15), 9).sum())] * 2
    assert np.array_equal(redrawn[0].mask(), disc(shape, (20, 15), 9))


def nudge(index: int, semantic: np.ndarray) -> np.ndarray:
    """Sample 0: one pixel off (close agreement); sample 1: four off (kept, not relabelled);
    every mask gets an ignore row."""
    moved = np.roll(semantic, {0: 1, 1: 4}.get(index, 0), axis=1)
    moved[0, :] = IGNORE_INDEX
    return moved


def test_relabel_replaces_only_closely_agreeing_masks_under_the_round(
    tmp_path, config_for, prepared
):
    write_truth_pool(tmp_path / "pool", 4, corrupt=nudge)
    config = config_for(active={"relabel": True, "relabel_iou": 0.85})
    original = (tmp_path / "pool/masks/shapes-000.png").read_bytes()
    out = select_with_truth_as_judge(tmp_path, config, prepared)
    kept = {s.id: s for s in read_manifest(out, "rounds/01/kept.jsonl")}
    assert len(kept) == 4  # all agree at IoU >= 0.5
    nudged, far = kept["shapes-000"], kept["shapes-001"]
    assert nudged.semantic_mask == "rounds/01/relabel/shapes-000.png"
    assert far.semantic_mask == "masks/shapes-001.png"  # IoU below 0.85: untouched
    assert kept["shapes-002"].semantic_mask.startswith("rounds/01/relabel/")  # exact already
    relabelled = read_image(out, nudged.semantic_mask)
    truth = read_image(out, nudged.truth_mask)
    assert (relabelled[0] == IGNORE_INDEX).all()
    assert np.array_equal(relabelled[1:], truth[1:])
    assert (tmp_path / "active/masks/shapes-000.png").read_bytes() == original
    assert [i.class_id for i in nudged.instances] == [1, 2]
    assert np.array_equal(nudged.instances[0].mask()[1:], truth[1:] == 1)
    report = steps.read_json(out, "rounds/01/filter.json")
    assert report["relabelled"] == 3
    gain = report["relabel_true_iou"]
    assert gain["after"] > gain["before"]


def test_relabel_is_off_by_default(tmp_path, config_for, prepared):
    write_truth_pool(tmp_path / "pool", 4, corrupt=nudge)
    out = select_with_truth_as_judge(tmp_path, config_for(), prepared)
    kept = read_manifest(out, "rounds/01/kept.jsonl")
    assert all(s.semantic_mask.startswith("masks/") for s in kept)
    assert not (tmp_path / "active/rounds/01/relabel").exists()
    assert steps.read_json(out, "rounds/01/filter.json")["relabelled"] == 0
