"""The refine stage: records re-derived from refined masks, weights, resuming, bad soft masks."""

from __future__ import annotations

import io

import numpy as np
import pytest

from freemask.config import RunConfig
from freemask.errors import FreemaskError
from freemask.evaluation import (
    degrade_mask,
    exact_composites,
    iou,
    sample_photographs,
)
from freemask.records import Instance, Sample, read_manifest, write_manifest
from freemask.refine import WEIGHTS, run_refine
from freemask.stage_output import Shard, read_rejected
from freemask.storage import LocalStorage, encode_image, read_image
from freemask.tracking import MlflowTracker


def write_set(root, count=6, size=96, broken=()):
    """Composites with degraded soft masks as a stage output; returns the exact masks by id."""
    storage = LocalStorage(root)
    rng = np.random.default_rng(1)
    truths, samples = {}, []
    for index, item in enumerate(exact_composites(sample_photographs(), count, size, seed=3)):
        soft = degrade_mask(item.mask, rng)[None]
        if "nan" in broken and index == 0:
            soft[0, 0, 0] = np.nan
        if "size" in broken and index == 1:
            soft = soft[:, :-4]
        if "flat" in broken and index == 2:
            soft = np.full_like(soft, 0.9)
        identifier = f"sample-{index}"
        label = (np.nan_to_num(soft[0]) > 0.5).astype(np.uint8)
        sample = Sample(
            id=identifier,
            image=f"images/{identifier}.png",
            semantic_mask=f"masks/{identifier}.png",
            soft_mask=f"soft_masks/{identifier}.npy",
            width=size,
            height=size,
            instances=[
                Instance.from_mask(
                    "cat",
                    1,
                    np.ones((size, size), bool)
                    if "flat" in broken and index == 2
                    else label.astype(bool),
                )
            ],
        )
        buffer = io.BytesIO()
        np.save(buffer, soft.astype(np.float16), allow_pickle=False)
        storage.write_bytes(sample.image, encode_image(item.image, sample.image))
        storage.write_bytes(sample.semantic_mask, encode_image(label, sample.semantic_mask))
        storage.write_bytes(sample.soft_mask, buffer.getvalue())
        samples.append(sample)
        truths[identifier] = item.mask
    write_manifest(storage, samples)
    return truths


def config_for(tmp_path, **refine) -> RunConfig:
    return RunConfig.model_validate(
        {"name": "refine-test", "workdir": str(tmp_path), "classes": ["cat"], "refine": refine}
    )


def mean_iou(root, truths, path="masks") -> float:
    storage = LocalStorage(root)
    scores = [
        iou(read_image(storage, s.semantic_mask) == 1, truths[s.id]) for s in read_manifest(storage)
    ]
    return float(np.mean(scores))


def test_guided_filter_stage_sharpens_masks_and_rewrites_records(tmp_path) -> None:
    truths = write_set(tmp_path / "in")
    config = config_for(tmp_path, method="guided_filter", guided_radius=0.0625)
    result = run_refine(config, str(tmp_path / "in"), str(tmp_path / "out"))
    assert result.written == 6
    assert mean_iou(tmp_path / "out", truths) > mean_iou(tmp_path / "in", truths)
    storage = LocalStorage(tmp_path / "out")
    for sample in read_manifest(storage):
        label = read_image(storage, sample.semantic_mask)
        assert np.array_equal(sample.instances[0].mask(), label == 1)
        assert sample.source[-1].stage == "refine"
        assert "refine_changed_fraction" in sample.scores
        assert storage.exists(sample.image) and storage.exists(sample.soft_mask)


def test_unrefinable_soft_masks_are_rejected_with_reasons(tmp_path) -> None:
    write_set(tmp_path / "in", broken=("nan", "size", "flat"))
    config = config_for(tmp_path, method="guided_filter")
    result = run_refine(config, str(tmp_path / "in"), str(tmp_path / "out"))
    reasons = {
        entry["id"]: entry["reason"] for entry in read_rejected(LocalStorage(tmp_path / "out"))
    }
    assert result.written == 3 and result.dropped == 3
    assert "non-finite" in reasons["sample-0"]
    assert "does not match" in reasons["sample-1"]
    assert "foreground everywhere" in reasons["sample-2"]


def test_affinity_weights_are_saved_logged_and_reused(tmp_path, monkeypatch) -> None:
    write_set(tmp_path / "in", count=4)
    config = config_for(tmp_path, method="affinity", epochs=2, logt=4)
    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "refine-test")
    run = tracker.start_run("refine")
    run_refine(config, str(tmp_path / "in"), str(tmp_path / "out"), run=run, train_only=True)
    assert (tmp_path / "out" / WEIGHTS).is_file()
    assert not (tmp_path / "out" / "manifest.jsonl").exists()
    logged = tracker.client.get_run(run.run_id)
    assert len(tracker.client.get_metric_history(run.run_id, "refine.affinity_loss")) == 2
    artifacts = [item.path for item in tracker.client.list_artifacts(run.run_id, "models/affinity")]
    assert "models/affinity/model.safetensors" in artifacts and logged is not None

    def no_training(*args, **kwargs):
        raise AssertionError("saved weights must be reused, not retrained")

    monkeypatch.setattr("freemask.refine.stage.train_affinity", no_training)
    for index in range(2):
        run_refine(config, str(tmp_path / "in"), str(tmp_path / "out"), shard=Shard(index, 2))
    shards = [
        read_manifest(LocalStorage(tmp_path / "out"), Shard(i, 2).manifest_path) for i in range(2)
    ]
    assert sum(len(part) for part in shards) == 4


def test_sharded_affinity_refinement_needs_trained_weights(tmp_path) -> None:
    write_set(tmp_path / "in", count=2)
    config = config_for(tmp_path, method="affinity")
    with pytest.raises(FreemaskError, match="--train-only"):
        run_refine(config, str(tmp_path / "in"), str(tmp_path / "out"), shard=Shard(0, 2))


def test_thresholds_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="background_threshold must be below"):
        RunConfig.model_validate(
            {
                "classes": ["cat"],
                "refine": {"foreground_threshold": 0.3, "background_threshold": 0.5},
            }
        )
