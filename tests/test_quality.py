"""Label quality against truth: confusion counts, ignore handling, per-class figures."""

import numpy as np
import pytest

from freemask.quality import (
    LabelQuality,
    completeness_summary,
    discard_precision,
    dispute_precision,
    label_iou,
    object_completeness,
    own_object,
    prompt_word,
    stage_quality,
)
from freemask.records import Instance, Sample
from freemask.storage import LocalStorage, encode_image

IGNORE = 255


def test_a_label_that_claims_background_as_object_shows_it_in_every_figure() -> None:
    truth = np.zeros((10, 10), np.uint8)
    truth[2:6, 2:6] = 1  # 16 object pixels
    label = np.zeros((10, 10), np.uint8)
    label[2:8, 2:6] = 1  # the 16 plus 8 background pixels
    quality = LabelQuality(["cat"])
    quality.add(label, truth)
    summary = quality.summary()
    cat = summary["per_class"]["cat"]
    assert cat["iou"] == pytest.approx(16 / 24)
    assert cat["precision"] == pytest.approx(16 / 24) and cat["recall"] == 1.0
    assert cat["background_share"] == summary["background_share"] == pytest.approx(8 / 24)
    assert summary["per_class"]["background"]["iou"] == pytest.approx(76 / 84)
    assert summary["miou"] == pytest.approx((16 / 24 + 76 / 84) / 2)


def test_ignored_pixels_claim_nothing_but_count_as_misses() -> None:
    truth = np.zeros((4, 4), np.uint8)
    truth[:2] = 2
    label = truth.copy()
    label[0] = IGNORE  # half the object's pixels are ignored
    quality = LabelQuality(["cat", "dog"])
    quality.add(label, truth)
    summary = quality.summary()
    dog = summary["per_class"]["dog"]
    assert dog["iou"] == pytest.approx(0.5) and dog["precision"] == 1.0
    assert dog["recall"] == pytest.approx(0.5) and dog["ignore_share"] == pytest.approx(0.5)
    assert summary["ignore_share"] == pytest.approx(4 / 16)
    assert summary["per_class"]["cat"]["iou"] is None  # absent from truth and label
    assert summary["object_recall"] == pytest.approx(0.5)


def test_a_swapped_class_is_wrong_for_both_classes() -> None:
    truth = np.array([[1, 1, 2, 2]], np.uint8)
    label = np.array([[2, 2, 1, 1]], np.uint8)
    assert label_iou(label, truth, 3) == 0.0
    assert label_iou(truth, truth, 3) == 1.0


def test_sizes_and_class_ids_are_checked() -> None:
    with pytest.raises(ValueError, match="differ in size"):
        LabelQuality(["cat"]).add(np.zeros((2, 2), np.uint8), np.zeros((3, 3), np.uint8))
    with pytest.raises(ValueError, match="class id"):
        LabelQuality(["cat"]).add(np.full((2, 2), 5, np.uint8), np.zeros((2, 2), np.uint8))


def test_a_label_that_ignores_everything_scores_nothing() -> None:
    truth = np.zeros((4, 4), np.uint8)
    truth[1:3, 1:3] = 1
    assert label_iou(np.full((4, 4), IGNORE, np.uint8), truth, 2) == 0.0


def pool_with_truth(tmp_path, errors: list[int], scores: list[float]):
    """Samples of one 10x10 square whose labels miss ``errors[i]`` of its rows; each carries
    the judge score ``scores[i]``."""
    storage = LocalStorage(tmp_path)
    truth = np.zeros((16, 16), np.uint8)
    truth[3:13, 3:13] = 1
    storage.write_bytes("truth.png", encode_image(truth, "truth.png"))
    samples = []
    for index, (missing, score) in enumerate(zip(errors, scores, strict=True)):
        label = truth.copy()
        label[3 : 3 + missing] = 0
        path = f"label{index}.png"
        storage.write_bytes(path, encode_image(label, path))
        samples.append(
            Sample(
                id=f"s{index}",
                image=path,
                width=16,
                height=16,
                semantic_mask=path,
                truth_mask="truth.png",
                scores={"judge": score},
            )
        )
    return storage, samples


def test_discard_precision_compares_the_filter_with_one_that_knows_the_truth(tmp_path) -> None:
    storage, samples = pool_with_truth(tmp_path, [0, 1, 2, 6, 8], [0.9, 0.8, 0.7, 0.2, 0.1])
    perfect = discard_precision(storage, samples[:3], samples[3:], 2, score_key="judge")
    assert perfect["gap"] == perfect["oracle_gap"] > 0.3
    assert perfect["judge_rank_correlation"] == pytest.approx(1.0)
    backwards = discard_precision(storage, samples[2:], samples[:2], 2, score_key="judge")
    assert backwards["gap"] < 0 < backwards["oracle_gap"]
    assert backwards["oracle_gap"] == perfect["oracle_gap"]  # as many discarded: same oracle
    assert backwards["judge_rank_correlation"] == pytest.approx(1.0)  # the rule, not the judge
    # Clean labels (true IoU >= 0.85: the first two here) are all kept, or all thrown out.
    assert perfect["clean_discarded"] == 0.0 and backwards["clean_discarded"] == 1.0


def test_a_pool_of_equally_good_labels_has_nothing_to_find(tmp_path) -> None:
    storage, samples = pool_with_truth(tmp_path, [1, 1, 1, 1], [0.9, 0.5, 0.4, 0.1])
    result = discard_precision(storage, samples[:2], samples[2:], 2, score_key="judge")
    assert result["gap"] == result["oracle_gap"] == 0.0
    assert result["judge_rank_correlation"] is None  # the truth does not vary: nothing to rank
    assert discard_precision(storage, samples, [], 2)["oracle_gap"] is None


def test_dispute_precision_compares_disputed_with_undisputed_labels_against_truth(tmp_path):
    storage = LocalStorage(tmp_path)
    truth = np.array([[1, 1, 2, 2, 0, 0]], np.uint8)
    label = np.array([[1, 1, 0, 2, 2, 2]], np.uint8)  # class 1 exact, class 2 at IoU 0.25
    storage.write_bytes("truth.png", encode_image(truth, "truth.png"))
    storage.write_bytes("label.png", encode_image(label, "label.png"))
    instances = [Instance.from_mask("a", 1, label == 1), Instance.from_mask("b", 2, label == 2)]
    sample = Sample(
        id="s",
        image="i.png",
        semantic_mask="label.png",
        truth_mask="truth.png",
        width=6,
        height=1,
        instances=instances,
    )
    assert dispute_precision(storage, [sample], [[2]]) == {
        "disputed_true_iou": 0.25,
        "undisputed_true_iou": 1.0,
        "gap": 0.75,
    }
    assert dispute_precision(storage, [sample], [[1]])["gap"] == -0.75  # disputed the good one
    assert (
        dispute_precision(storage, [sample.model_copy(update={"truth_mask": None})], [[2]]) is None
    )


def test_wrong_class_share_counts_object_labels_whose_truth_is_another_object() -> None:
    truth = np.zeros((4, 10), np.uint8)
    truth[:, :5] = 2  # a box (2) ...
    truth[:, 5:8] = 1  # ... beside a ball (1)
    label = np.zeros((4, 10), np.uint8)
    label[:, :4] = 2  # 16 box pixels right
    label[:, 4:8] = 1  # 4 box pixels called ball, 12 ball pixels right
    label[:, 8] = 1  # 4 background pixels called ball
    quality = LabelQuality(["ball", "box"])
    quality.add(label, truth)
    summary = quality.summary()
    ball = summary["per_class"]["ball"]
    assert ball["wrong_class_share"] == pytest.approx(4 / 20)
    assert ball["background_share"] == pytest.approx(4 / 20)
    assert summary["per_class"]["box"]["wrong_class_share"] == 0.0
    assert summary["wrong_class_share"] == pytest.approx(4 / 36)
    assert summary["per_class"]["background"]["wrong_class_share"] is None


def test_object_recall_is_counted_per_group() -> None:
    truth = np.zeros((4, 4), np.uint8)
    truth[:2] = 1  # 8 object pixels
    quality = LabelQuality(["ball"])
    quality.add(truth, truth, group="red")  # all found
    highlight = np.zeros((4, 4), np.uint8)
    highlight[0, :2] = 1  # 2 of 8 found
    quality.add(highlight, truth, group="white")
    quality.add(highlight, truth, group="white")
    quality.add(np.zeros((4, 4), np.uint8), truth)  # no group: only in the totals
    summary = quality.summary()
    assert summary["object_recall_by_group"] == {"red": 1.0, "white": 0.25}
    assert summary["object_recall"] == pytest.approx(12 / 32)


def test_the_colour_is_the_word_before_the_class() -> None:
    colours = ["red", "white"]
    assert prompt_word("a photo of a white ball on a field", "ball", colours) == "white"
    assert prompt_word("a photo of a red box and a white ball on a sky", "ball", colours) == "white"
    assert prompt_word("a photo of a ball", "ball", colours) is None


def test_stage_quality_groups_single_objects_by_the_colour_in_their_prompt(tmp_path) -> None:
    storage, samples = pool_with_truth(tmp_path, [0, 5], [0.0, 0.0])
    ball = [Instance.from_mask("ball", 1, np.ones((16, 16), bool))]
    samples = [
        sample.model_copy(update={"prompt": f"a photo of a {colour} ball", "instances": ball})
        for sample, colour in zip(samples, ["red", "white"], strict=True)
    ]
    summary = stage_quality(storage, samples, ["ball"], group_words=["red", "white"])
    assert summary["object_recall_by_group"] == {"red": 1.0, "white": 0.5}


def test_own_object_is_the_part_the_label_touches() -> None:
    truth = np.zeros((10, 10), np.uint8)
    truth[1:4, 1:4] = 3  # the sample's object
    truth[7:9, 7:9] = 2  # a stray second object
    label = np.zeros((10, 10), np.uint8)
    label[2, 2] = 3
    assert own_object(truth, label).sum() == 9
    assert own_object(truth, np.zeros_like(label)).sum() == 13  # nothing touched: all objects


def test_completeness_is_the_share_of_the_object_its_cutout_shows() -> None:
    own = np.zeros((10, 10), bool)
    own[0:4, 0:5] = True  # 20 pixels
    shown_truth = own[0:4, 0:4]  # the cut-out's crop keeps 16 of them ...
    alpha = np.ones((4, 4), np.float32)
    alpha[0] = 0.3  # ... and its alpha hides a row of 4
    assert object_completeness(own, shown_truth, alpha) == pytest.approx(12 / 20)
    assert object_completeness(np.zeros((3, 3), bool), shown_truth, alpha) == 1.0
    summary = completeness_summary({"ball": [1.0, 0.9], "ring": [0.5, 0.2]})
    assert summary["mean"] == pytest.approx(0.65) and summary["objects"] == 4
    assert summary["share_below"] == {"0.6": 0.5}
    assert summary["per_class"] == {"ball": 0.95, "ring": 0.35}
    assert summary["p10"] == pytest.approx(0.29)
