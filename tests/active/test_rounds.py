"""Rounds: who judges, what each round filters, what it fine-tunes, what it is scored on."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from active_helpers import save_tiny, write_truth_pool
from helpers import write_shapes_set

from freemask.active import run_active, steps
from freemask.errors import FreemaskError
from freemask.records import read_manifest, serialize_samples
from freemask.segment import build_tiny_mask2former, predict
from freemask.storage import LocalStorage, encode_image, read_image, read_json
from freemask.tracking import NullRun


class RecordingRun(NullRun):
    """A null run that keeps the metrics logged to it (and to its nested runs)."""

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}

    def log_metrics(self, metrics, step=None) -> None:
        self.metrics.update(metrics)

    def child_with_tag(self, key: str, value: str, name: str) -> RecordingRun:
        return self


def same_weights(first: dict, second: dict) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_round_one_is_judged_by_the_labeller_not_a_bootstrap(tmp_path, config_for, prepared):
    write_shapes_set(tmp_path / "pool", 6)
    labeller = save_tiny(tmp_path / "labeller", seed=3)
    config = config_for(segment={"labeller": str(tmp_path / "labeller")})
    out = prepared(config, tmp_path / "pool")
    assert not steps.needs_bootstrap(config)
    steps.pseudo(config, out, 1)
    pool = steps.pool_of(out)
    expected = predict(labeller, [read_image(out, s.image, mode="RGB") for s in pool])
    labels = [read_image(out, f"rounds/01/pseudo/{s.id}.png") for s in pool]
    assert all(np.array_equal(a, b) for a, b in zip(labels, expected, strict=True))
    assert not out.exists("rounds/00/model/model.safetensors")
    assert steps.judge_of(config, 1).startswith(f"labeller {tmp_path / 'labeller'}")
    bootstrap = config_for()
    assert steps.needs_bootstrap(bootstrap) and "bootstrap" in steps.judge_of(bootstrap, 1)
    assert "cross-fitted on round 1's kept set" in steps.judge_of(config, 2)
    previous = config_for(active={"later_judges": "previous_round"})
    assert "round 1 segmenter" in steps.judge_of(previous, 2)
    assert steps.judge_of(config, 0) == "none: the unfiltered pool"


def test_round_two_filters_round_one_kept_set_with_round_one_model(tmp_path, config_for, prepared):
    write_shapes_set(tmp_path / "pool", 8)
    config = config_for(
        segment={"labeller": str(tmp_path / "labeller")},
        active={"later_judges": "previous_round"},
    )
    save_tiny(tmp_path / "labeller", seed=3)
    out = prepared(config, tmp_path / "pool")
    pool = steps.pool_of(out)
    out.write_bytes("rounds/01/kept.jsonl", serialize_samples(pool[:3]))
    out.write_bytes("rounds/01/discarded.jsonl", serialize_samples(pool[3:]))
    round_one = save_tiny(tmp_path / "active/rounds/01/model", seed=5)

    steps.pseudo(config, out, 2)
    steps.select(config, out, 2)
    kept_before = sorted(s.id for s in pool[:3])
    labelled = sorted(p.stem for p in (tmp_path / "active/rounds/02/pseudo").iterdir())
    judged = [*read_manifest(out, "rounds/02/kept.jsonl")]
    judged += read_manifest(out, "rounds/02/discarded.jsonl")
    assert labelled == kept_before and sorted(s.id for s in judged) == kept_before
    first = pool[0]
    expected = predict(round_one, [read_image(out, first.image, mode="RGB")])[0]
    assert np.array_equal(read_image(out, f"rounds/02/pseudo/{first.id}.png"), expected)


def test_cross_fitted_judges_never_judge_a_sample_they_learnt(
    tmp_path, config_for, prepared, monkeypatch
):
    write_shapes_set(tmp_path / "pool", 12)
    config = config_for(segment={"labeller": str(tmp_path / "labeller"), "validation": None})
    labeller = save_tiny(tmp_path / "labeller", seed=3)
    out = prepared(config, tmp_path / "pool")
    pool = steps.pool_of(out)
    out.write_bytes("rounds/01/kept.jsonl", serialize_samples(pool))
    save_tiny(tmp_path / "active/rounds/01/model", seed=5)  # learnt every candidate: unused
    learnt: list[set[str]] = []
    started: list[dict] = []

    def record(segmenter, samples, *args, **kwargs):
        learnt.append({sample.id for sample in samples})
        started.append({k: v.clone() for k, v in segmenter.model.state_dict().items()})

    monkeypatch.setattr("freemask.active.rounds.train_segmenter", record)
    pairs = steps.cross_fit_judges(config, out, 2, pool, NullRun())
    judged = [{sample.id for sample in fold} for _, fold in pairs]
    assert len(pairs) == 2 and set().union(*judged) == {s.id for s in pool}
    assert judged[0].isdisjoint(judged[1])
    for seen, fold in zip(learnt, judged, strict=True):
        assert seen and seen.isdisjoint(fold) and seen | fold == {s.id for s in pool}
    # Each judge starts from the independent labeller, not from round 1's segmenter.
    assert all(same_weights(weights, labeller.model.state_dict()) for weights in started)


def test_each_round_fine_tunes_from_the_last(tmp_path, config_for, prepared, monkeypatch):
    write_shapes_set(tmp_path / "pool", 6)
    config = config_for(segment={"labeller": str(tmp_path / "labeller")})
    labeller = save_tiny(tmp_path / "labeller", seed=3)
    out = prepared(config, tmp_path / "pool")
    pool = steps.pool_of(out)
    for round_index in (1, 2):
        out.write_bytes(f"rounds/0{round_index}/kept.jsonl", serialize_samples(pool))
    round_one = save_tiny(tmp_path / "active/rounds/01/model", seed=5)
    started: list[dict] = []

    def record(segmenter, *args, **kwargs):
        started.append({k: v.clone() for k, v in segmenter.model.state_dict().items()})

    monkeypatch.setattr("freemask.active.rounds.train_segmenter", record)
    steps.train(config, out, 2, NullRun())
    assert same_weights(started[0], round_one.model.state_dict())
    assert read_json(out, "rounds/02/trained_from.json") == {"trained_from": "round 1 segmenter"}

    # Round 1 starts from the labeller when it predicts the run's labels.
    segmenter, origin = steps.starting_point(config, out, 1)
    assert same_weights(segmenter.model.state_dict(), labeller.model.state_dict())
    assert origin.startswith("labeller")


def test_round_one_starts_fresh_after_a_bootstrap_or_a_foreign_labeller(
    tmp_path, config_for, prepared
):
    write_shapes_set(tmp_path / "pool", 6)
    out = prepared(config_for(), tmp_path / "pool")
    save_tiny(tmp_path / "active/rounds/00/model", seed=7)  # the bootstrap judge
    assert steps.starting_point(config_for(), out, 1) == (None, "fresh builtin:tiny-mask2former")

    foreign = build_tiny_mask2former(["background", "cat", "ball", "box"], seed=2)
    foreign.save_pretrained(tmp_path / "foreign")
    config = config_for(segment={"labeller": str(tmp_path / "foreign")})
    segmenter, origin = steps.starting_point(config, out, 1)
    assert segmenter is None and "other labels" in origin


def test_validation_prefix_is_used_and_a_pool_split_warns(tmp_path, config_for, prepared):
    write_shapes_set(tmp_path / "pool", 12)
    write_shapes_set(tmp_path / "truth", 4, start=500)
    config = config_for(segment={"validation": str(tmp_path / "truth")})
    out = prepared(config, tmp_path / "pool")
    assert len(steps.pool_of(out)) == 12 and not read_manifest(out, steps.VALIDATION)
    samples, store = steps.validation_of(config, out)
    assert [s.id for s in samples] == [f"shapes-{i}" for i in range(500, 504)]
    assert store.uri == str(tmp_path / "truth")

    with pytest.raises(FreemaskError, match=r"segment\.validation"):
        steps.prepare(
            config_for(segment={"validation": str(tmp_path / "nowhere")}),
            str(tmp_path / "pool"),
            LocalStorage(tmp_path / "other"),
        )


def shift(index: int, semantic: np.ndarray) -> np.ndarray:
    """Samples 1 and 4 get masks shifted far off their objects."""
    return np.roll(semantic, (25, 25), axis=(0, 1)) if index in (1, 4) else semantic


def filter_with_truth_as_judge(tmp_path, config, prepared, pool_root):
    """Prepare, write the truth as round 1's pseudo-labels, select and close round 1."""
    out = prepared(config, pool_root)
    for sample in steps.pool_of(out):
        truth = read_image(LocalStorage(pool_root), f"truth/{sample.id}.png")
        path = f"rounds/01/pseudo/{sample.id}.png"
        out.write_bytes(path, encode_image(truth, path))
    steps.select(config, out, 1)
    steps.train(config, out, 1, NullRun())
    run = RecordingRun()
    return out, steps.close(config, out, 1, run), run


def test_round_summary_reports_discard_precision_and_judge(tmp_path, config_for, prepared):
    write_truth_pool(tmp_path / "pool", 8, corrupt=shift)
    config = config_for(segment={"validation": str(tmp_path / "pool")})
    _, summary, run = filter_with_truth_as_judge(tmp_path, config, prepared, tmp_path / "pool")
    assert summary["discarded"] == 2 and summary["kept"] == 6
    precision = summary["discard_precision"]
    assert precision["kept_true_iou"] == 1.0 and precision["gap"] > 0.5
    assert precision["gap"] == precision["oracle_gap"]  # the truth as judge: a perfect filter
    assert precision["judge_rank_correlation"] > 0.5
    assert run.metrics["discard_precision.gap"] == precision["gap"]
    assert run.metrics["discard_precision.oracle_gap"] == precision["oracle_gap"]
    assert summary["judge"].startswith("bootstrap") and summary["keep_rule_used"] == "any_class"
    assert summary["trained_from"] == "fresh builtin:tiny-mask2former"
    assert summary["validation"] == str(tmp_path / "pool") and summary["warnings"] == []


def test_without_truth_discard_precision_is_none_and_the_split_warns(
    tmp_path, config_for, prepared
):
    write_truth_pool(tmp_path / "pool", 8, corrupt=shift)
    manifest = tmp_path / "pool/manifest.jsonl"  # the same pool, its truth forgotten
    samples = [
        s.model_copy(update={"truth_mask": None})
        for s in read_manifest(LocalStorage(tmp_path / "pool"))
    ]
    manifest.write_bytes(serialize_samples(samples))
    _, summary, run = filter_with_truth_as_judge(
        tmp_path, config_for(), prepared, tmp_path / "pool"
    )
    assert summary["discard_precision"] is None
    assert not any(key.startswith("discard_precision") for key in run.metrics)
    assert "synthetic labels" in summary["warnings"][0]


def test_killed_loop_rerun_finishes_identically(tmp_path, config_for):
    write_shapes_set(tmp_path / "pool", 10)
    save_tiny(tmp_path / "labeller", seed=3)
    config = config_for(
        segment={"labeller": str(tmp_path / "labeller")},
        active={"iou_threshold": 0.0, "min_miou_gain": 0.0},
    )
    first = run_active(config, str(tmp_path / "pool"), str(tmp_path / "active"))
    assert [r["round"] for r in first.summary["rounds"]] == [0, 1, 2]
    root = tmp_path / "active"
    weights = (root / "rounds/02/model/model.safetensors").read_bytes()
    # Killed in round 2's training after its step-2 checkpoint: no final model, no summary.
    for name in ("rounds/02/summary.json", "rounds/02/model/model.safetensors", "_SUCCESS"):
        (root / name).unlink()
    shutil.rmtree(root / "rounds/02/model/checkpoints/step-0000003")
    latest = {"step": 2, "folder": "checkpoints/step-0000002"}
    (root / "rounds/02/model/checkpoints/latest.json").write_text(json.dumps(latest))
    again = run_active(config, str(tmp_path / "pool"), str(tmp_path / "active"))
    assert again.summary == first.summary
    assert (root / "rounds/02/model/model.safetensors").read_bytes() == weights
