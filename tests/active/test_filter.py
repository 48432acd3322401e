"""The IoU filter: per-class agreement, keep rules, and catching corrupted masks."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import write_shapes_set

from freemask.active import filter_samples, iou_vs_pseudo_label, judge, pseudo_label
from freemask.config import ActiveConfig, SegmentConfig
from freemask.segment import TINY_MASK2FORMER_ID, evaluate, load_segmenter, train_segmenter
from freemask.storage import LocalStorage


def test_agreement_leaves_out_ignored_pixels() -> None:
    generated = np.array([[1, 1, 255, 0]], np.uint8)
    pseudo = np.array([[1, 0, 1, 0]], np.uint8)
    assert iou_vs_pseudo_label(generated, pseudo, [1]) == {1: 0.5}


@pytest.mark.parametrize(
    ("rule", "kept"),
    [
        ("any_class", [True, True, False]),
        ("mean_over_classes", [True, False, False]),
        ("percentile", [True, True, False]),
    ],
)
def test_keep_rules(rule: str, kept: list[bool]) -> None:
    scores = [{1: 0.9, 2: 0.8}, {1: 0.7, 2: 0.1}, {1: 0.2, 2: 0.1}]
    rules = ActiveConfig(keep_rule=rule, iou_threshold=0.5, keep_percentile=30)
    assert [verdict.kept for verdict in judge(scores, rules)] == kept


def test_defaults_are_the_methods_rule() -> None:
    rules = ActiveConfig()
    assert (rules.keep_rule, rules.iou_threshold, rules.relabel) == ("any_class", 0.5, False)


def percentile_kept(means: list[float], keep_percentile: float = 25) -> list[bool]:
    rules = ActiveConfig(keep_rule="percentile", keep_percentile=keep_percentile)
    return [verdict.kept for verdict in judge([{1: m} for m in means], rules)]


def test_percentile_with_all_scores_tied_falls_back_to_the_threshold() -> None:
    rules = ActiveConfig(keep_rule="percentile", iou_threshold=0.5)
    low = judge([{1: 0.3}] * 6, rules)
    assert not any(verdict.kept for verdict in low)
    assert low[0].rule == "mean_over_classes (percentile: all 6 scores tie)"
    assert all(verdict.kept for verdict in judge([{1: 0.9}] * 6, rules))


def test_percentile_discards_a_tied_bottom_group_whole() -> None:
    means = [0.0] * 4 + [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert percentile_kept(means) == [False] * 4 + [True] * 6


def test_percentile_keeps_a_tied_top_group_whole() -> None:
    assert percentile_kept([1.0] * 8 + [0.2, 0.3]) == [True] * 8 + [False] * 2
    assert sum(percentile_kept([i / 10 for i in range(10)])) == 8  # 7.5 of 10: the larger


def corrupt(semantic: np.ndarray, kind: str) -> np.ndarray:
    if kind == "shifted":
        return np.roll(semantic, (20, 20), axis=(0, 1))
    if kind == "wrong class":
        swapped = semantic.copy()
        swapped[semantic == 1], swapped[semantic == 2] = 2, 1
        return swapped
    return np.zeros_like(semantic)  # emptied


def test_filter_discards_corrupted_masks(tmp_path) -> None:
    classes = ["box", "ball"]
    train_storage, train_samples = write_shapes_set(tmp_path / "train", 32)
    settings = SegmentConfig(
        model_id=TINY_MASK2FORMER_ID,
        image_size=64,
        batch_size=4,
        learning_rate=1e-3,
        train_steps=120,
        checkpoint_every=1000,
    )
    segmenter = load_segmenter(settings, classes, trainable=True)
    train_segmenter(
        segmenter, train_samples, train_storage, LocalStorage(tmp_path / "model"), settings
    )
    quality = evaluate(
        segmenter, *reversed(write_shapes_set(tmp_path / "val", 8, start=500)), classes
    )

    # A pool of 30 generated samples, 12 of them corrupted in three ways.
    kinds = ["shifted", "wrong class", "emptied"]

    def damage(index: int, semantic: np.ndarray) -> np.ndarray:
        return corrupt(semantic, kinds[index % 3]) if index % 5 < 2 else semantic

    storage, samples = write_shapes_set(tmp_path / "pool", 30, start=1000, corrupt=damage)
    corrupted = {f"shapes-{index:03d}" for index in range(1000, 1030) if index % 5 < 2}
    pseudo = LocalStorage(tmp_path / "pseudo")
    pseudo_label(segmenter, samples, storage, pseudo)
    rules = ActiveConfig(keep_rule="mean_over_classes", iou_threshold=0.5)
    selection = filter_samples(samples, storage, pseudo, rules, round_index=1)
    kept, discarded = selection.kept, selection.discarded

    caught = {sample.id for sample in discarded}
    precision = len(caught & corrupted) / max(1, len(caught))
    recall = len(caught & corrupted) / len(corrupted)
    print(
        f"segmenter mIoU {quality['miou']:.3f}; filter precision {precision:.2f}, recall {recall:.2f}"
    )
    # A segmenter this good (mIoU > 0.7 on held-out shapes) agrees with clean masks at IoU far
    # above 0.5 and with shifted, swapped or emptied ones far below: both should be near 1.
    assert quality["miou"] > 0.7
    assert precision >= 0.9 and recall >= 0.9
    assert all(sample.round == 1 and sample.scores["iou_vs_pseudo_gt"] >= 0.5 for sample in kept)
