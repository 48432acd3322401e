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
    sample_photographs,
)
from freemask.quality import stage_quality
from freemask.records import Instance, Placement, Sample, read_manifest, write_manifest
from freemask.refine import WEIGHTS, band_labels, class_scores, refine_soft, run_refine
from freemask.stage_output import Shard, read_rejected
from freemask.storage import LocalStorage, encode_image, read_array, read_image
from freemask.tracking import MlflowTracker


def write_set(root, count=6, size=96, broken=(), scenes=False):
    """Single objects as the generate stage writes them (soft mask [H, W], class id on the
    object, 255 in the uncertain band, exact truth beside); returns the exact masks by id."""
    storage = LocalStorage(root)
    rng = np.random.default_rng(1)
    truths, samples = {}, []
    for index, item in enumerate(exact_composites(sample_photographs(), count, size, seed=3)):
        soft = degrade_mask(item.mask, rng)
        if "nan" in broken and index == 0:
            soft[0, 0] = np.nan
        if "size" in broken and index == 1:
            soft = soft[:-4]
        if "flat" in broken and index == 2:
            soft = np.full_like(soft, 0.9)
        identifier = f"sample-{index}"
        label = band_labels(np.nan_to_num(soft)[None], 0.35, 0.6)
        object_mask = label == 1 if label.any() else np.ones((size, size), bool)
        sample = Sample(
            id=identifier,
            image=f"images/{identifier}.png",
            semantic_mask=f"masks/{identifier}.png",
            soft_mask=f"soft_masks/{identifier}.npy",
            truth_mask=f"truth/{identifier}.png",
            width=size,
            height=size,
            instances=[Instance.from_mask("cat", 1, object_mask)],
            placements=[PLACEMENT] if scenes else [],
        )
        buffer = io.BytesIO()
        np.save(buffer, soft.astype(np.float16), allow_pickle=False)
        storage.write_bytes(sample.image, encode_image(item.image, sample.image))
        storage.write_bytes(sample.semantic_mask, encode_image(label, sample.semantic_mask))
        storage.write_bytes(sample.truth_mask, encode_image(item.mask.astype(np.uint8), "t.png"))
        storage.write_bytes(sample.soft_mask, buffer.getvalue())
        samples.append(sample)
        truths[identifier] = item.mask
    write_manifest(storage, samples)
    storage.write_bytes("_SUCCESS", b"{}\n")  # a finished stage output
    return truths


PLACEMENT = Placement(
    source="obj",
    class_name="cat",
    box=(0, 0, 8, 8),
    scale=1.0,
    flip=False,
    z=0,
    visible_fraction=1.0,
    kept=True,
)


def config_for(tmp_path, **refine) -> RunConfig:
    return RunConfig.model_validate(
        {"name": "refine-test", "workdir": str(tmp_path), "classes": ["cat"], "refine": refine}
    )


def label_miou(root) -> float:
    storage = LocalStorage(root)
    samples = read_manifest(storage)
    return stage_quality(storage, samples, ["cat"])["miou"]


def test_default_refinement_raises_label_miou_and_keeps_compose_contract(tmp_path) -> None:
    write_set(tmp_path / "in")
    result = run_refine(config_for(tmp_path), str(tmp_path / "in"), str(tmp_path / "out"))
    assert result.written == 6
    assert label_miou(tmp_path / "out") > label_miou(tmp_path / "in")
    source, storage = LocalStorage(tmp_path / "in"), LocalStorage(tmp_path / "out")
    for sample in read_manifest(storage):
        label = read_image(storage, sample.semantic_mask)
        soft = read_array(storage, sample.soft_mask)
        assert set(np.unique(label)) <= {0, 1, 255} and (label == 255).any()  # band kept
        assert soft.dtype == np.float16 and soft.shape == label.shape
        assert soft.min() >= 0.0 and soft.max() <= 1.0
        assert np.array_equal(sample.instances[0].mask(), label == 1)
        assert storage.read_bytes(sample.truth_mask) == source.read_bytes(sample.truth_mask)
        assert sample.source[-1].stage == "refine"
        assert "refine_changed_fraction" in sample.scores


def test_refinement_that_breaks_the_attention_seeds_falls_back() -> None:
    soft = np.zeros((1, 32, 32), np.float32)
    soft[0, 8:24, 8:24] = 0.9
    soft[0, 6:8, 8:24] = 0.5  # unsure band

    class Inverting:
        def refine(self, image: np.ndarray, soft: np.ndarray) -> np.ndarray:
            return class_scores(1.0 - soft)

    image = np.zeros((32, 32, 3), np.uint8)
    kept, agreement = refine_soft(
        Inverting(), image, soft, thresholds=(0.35, 0.6), scope="all", min_seed_agreement=0.9
    )
    assert agreement < 0.1 and np.array_equal(kept, soft)
    banded, _ = refine_soft(
        Inverting(), image, soft, thresholds=(0.35, 0.6), scope="band", min_seed_agreement=0.0
    )
    confident = (soft[0] > 0.6) | (soft[0] < 0.35)
    assert np.array_equal(banded[0][confident], soft[0][confident])


def test_affinity_never_trains_on_composed_scenes(tmp_path) -> None:
    write_set(tmp_path / "in", count=2, scenes=True)
    config = config_for(tmp_path, method="affinity", epochs=1)
    with pytest.raises(FreemaskError, match="no single-object sample"):
        run_refine(config, str(tmp_path / "in"), str(tmp_path / "out"), train_only=True)


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
