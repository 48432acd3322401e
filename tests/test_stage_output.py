"""Stage outputs: per-sample commits, resume after a crash, sharding and the join."""

import os
from pathlib import Path

import pytest
from helpers import make_sample

from freemask import builtin_models
from freemask.builtin_models import builtin_weights_digest
from freemask.errors import FreemaskError, ManifestError
from freemask.gcs_storage import GCSStorage
from freemask.records import read_manifest
from freemask.stage_output import (
    SUCCESS,
    Shard,
    StageOutput,
    is_complete,
    join_shards,
    read_rejected,
    shipped_weights,
)
from freemask.storage import LocalStorage, read_json, write_json


def run_stage(storage, indices, shard=None, crash_after=None):
    shard = shard or Shard()
    output = StageOutput(storage, "compose", shard)
    for position, index in enumerate(shard.select(indices)):
        sample, files, _ = make_sample(index)
        if output.is_done(sample.id):
            continue
        if crash_after is not None and position == crash_after:
            raise KeyboardInterrupt("killed")
        output.commit(sample, files)
    return output.finish({"note": "test"})


def test_rerun_after_a_crash_completes_without_duplicates(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_stage(storage, list(range(6)), crash_after=4)
    assert not is_complete(storage)
    assert len(read_manifest(storage)) == 4
    result = run_stage(storage, list(range(6)))
    assert (result.written, result.skipped) == (2, 4)
    assert len(read_manifest(storage)) == 6
    again = run_stage(storage, list(range(6)))
    assert (again.written, again.skipped) == (0, 6)
    assert read_json(storage, SUCCESS)["summary"] == {"note": "test"}


def test_commit_refuses_a_record_whose_files_were_not_written(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    sample, files, _ = make_sample(0)
    output = StageOutput(storage, "compose")
    with pytest.raises(ManifestError, match="files not written"):
        output.commit(sample, {sample.image: files[sample.image]})
    assert not storage.exists("manifest.jsonl")


def test_shards_split_the_work_and_join_into_one_manifest(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    indices = list(range(7))
    run_stage(storage, indices, Shard(0, 3))
    run_stage(storage, indices, Shard(2, 3))
    with pytest.raises(FreemaskError, match=r"shards \[1\] of 3 have not finished"):
        join_shards(storage, "compose", 3)
    run_stage(storage, indices, Shard(1, 3))
    result = join_shards(storage, "compose", 3)
    merged = read_manifest(storage)
    assert result.written == 7 and len(merged) == 7
    assert [sample.id for sample in merged] == sorted(make_sample(index)[0].id for index in indices)
    assert is_complete(storage)


@pytest.mark.parametrize("text", ["3/3", "-1/2", "a/b", "1", "0/0"])
def test_bad_shard_specs_are_refused(text: str) -> None:
    with pytest.raises(FreemaskError, match="shard"):
        Shard.parse(text)


def test_shard_selection_covers_every_item_once() -> None:
    items = list(range(10))
    picked = [item for index in range(4) for item in Shard(index, 4).select(items)]
    assert sorted(picked) == items
    assert Shard.parse(" 2 / 4 ") == Shard(2, 4)


def gcs_storage(request) -> GCSStorage:
    bucket = request.getfixturevalue("gcs_bucket")
    return GCSStorage(f"gs://{bucket}/stage", client=request.getfixturevalue("gcs_client"))


def test_on_gcs_each_record_is_its_own_object_until_finish_compacts_them(request) -> None:
    storage = gcs_storage(request)
    with pytest.raises(KeyboardInterrupt):
        run_stage(storage, list(range(5)), crash_after=3)
    assert not storage.exists("manifest.jsonl")
    assert len(storage.list("pending/manifest")) == 3
    result = run_stage(storage, list(range(5)))  # the re-run skips the 3 committed records
    assert (result.written, result.skipped) == (2, 3)
    assert storage.list("pending") == []
    merged = read_manifest(storage)
    assert [sample.id for sample in merged] == sorted(make_sample(i)[0].id for i in range(5))
    assert read_json(storage, SUCCESS)["written"] == 5


def test_on_gcs_the_same_record_twice_is_one_and_a_different_one_is_refused(request) -> None:
    storage = gcs_storage(request)
    sample, files, _ = make_sample(0)
    first, second = StageOutput(storage, "compose"), StageOutput(storage, "compose")
    first.commit(sample, files)
    second.commit(sample, files)  # the same shard run twice at once
    with pytest.raises(ManifestError, match="different record"):
        second.commit(sample.model_copy(update={"seed": 99}), files)
    first.finish()
    assert read_manifest(storage) == [sample]


def test_sharded_gcs_outputs_compact_per_shard_and_join(request) -> None:
    storage = gcs_storage(request)
    for index in range(2):
        run_stage(storage, list(range(4)), Shard(index, 2))
    assert join_shards(storage, "compose", 2).written == 4
    assert len(read_manifest(storage)) == 4
    assert [name for name in storage.list() if "pending" in name] == []


def test_stage_json_is_written_once_so_other_settings_are_refused(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    sample, files, _ = make_sample(0)
    first = StageOutput(storage, "compose", settings_hash="aaa")
    second = StageOutput(storage, "compose", settings_hash="bbb")  # started at the same time
    first.commit(sample, files)
    with pytest.raises(FreemaskError, match="other settings"):
        second.commit(make_sample(1)[0], make_sample(1)[1])


def test_leftover_temporary_files_of_dead_writers_are_removed(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images/.freemask-tmp-999999999-abc").write_bytes(b"partial")
    (tmp_path / f"images/.freemask-tmp-{os.getpid()}-live").write_bytes(b"being written")
    StageOutput(LocalStorage(tmp_path), "compose")
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [
        f".freemask-tmp-{os.getpid()}-live"
    ]


def test_on_gcs_rejections_are_compacted_into_the_rejected_list(request) -> None:
    storage = gcs_storage(request)
    output = StageOutput(storage, "compose")
    output.drop("b-sample", "empty mask")
    output.drop("a-sample", "too small")
    assert StageOutput(storage, "compose").pending(["a-sample", "b-sample", "c"]) == {"c"}
    output.finish()
    assert [entry["id"] for entry in read_rejected(storage)] == ["a-sample", "b-sample"]
    assert read_json(storage, SUCCESS)["dropped"] == 2
    assert storage.list("pending") == []


def test_a_refusal_names_the_changed_settings(tmp_path) -> None:
    storage = LocalStorage(tmp_path / "out")
    sample, files, _ = make_sample(0)
    made = {"refine.band": 8, "refine.scope": "band", "refine.steps": 3}
    first = StageOutput(storage, "refine", settings_hash="aaa", settings=made)
    first.commit(sample, files)
    first.finish()
    changed = {**made, "refine.band": 12, "refine.steps": 3}
    with pytest.raises(FreemaskError, match=r"other settings \(refine\.band 8 -> 12\)"):
        StageOutput(storage, "refine", settings_hash="bbb", settings=changed)
    # The same settings (as a resumed run has) are accepted.
    StageOutput(storage, "refine", settings_hash="aaa", settings=made)


def ship_labeller(tmp_path: Path, monkeypatch) -> Path:
    """A shipped ``builtin:`` model folder: its id stays the same from release to release, its
    weights need not."""
    shipped = tmp_path / "labeller"
    shipped.mkdir()
    (shipped / "model.safetensors").write_bytes(b"release 1 weights")
    monkeypatch.setattr(builtin_models, "builtin_model_folder", lambda model_id, field="": shipped)
    return shipped


def test_an_output_made_with_other_weights_of_a_shipped_model_is_refused(
    tmp_path, monkeypatch
) -> None:
    shipped = ship_labeller(tmp_path, monkeypatch)
    storage = LocalStorage(tmp_path / "out")
    made = {"generate.class_check_model": "builtin:toy-labeller", "generate.seed": 0}
    output = StageOutput(storage, "generate", settings_hash="aaa", settings=made)
    output.commit(*make_sample(0)[:2])
    recorded = read_json(storage, "stage.json")["weights"]
    assert list(recorded) == ["generate.class_check_model"]
    StageOutput(storage, "generate", settings_hash="aaa", settings=made)  # same weights: resumes
    (shipped / "model.safetensors").write_bytes(b"release 2 weights, same id")
    with pytest.raises(
        FreemaskError,
        match=r"generate\.class_check_model 'builtin:toy-labeller' weights sha256 "
        rf"{recorded['generate.class_check_model']} -> [0-9a-f]{{12}}",
    ):
        StageOutput(storage, "generate", settings_hash="aaa", settings=made)


def test_outputs_made_before_weights_were_recorded_resume_on_their_settings(
    tmp_path, monkeypatch
) -> None:
    shipped = ship_labeller(tmp_path, monkeypatch)
    storage = LocalStorage(tmp_path / "out")
    made = {"segment.labeller": "builtin:toy-labeller"}
    # stage.json as a release before this one wrote it: settings, no weights.
    write_json(storage, "stage.json", {"stage": "active", "settings_hash": "aaa", "settings": made})
    StageOutput(storage, "active", settings_hash="aaa", settings=made)
    (shipped / "model.safetensors").write_bytes(b"other weights")
    StageOutput(storage, "active", settings_hash="aaa", settings=made)  # nothing to compare


def test_only_shipped_builtin_models_have_their_weights_recorded() -> None:
    settings = {
        "segment.model_id": "builtin:small-mask2former-conv",  # built from its config
        "segment.labeller": "builtin:toy-labeller",  # shipped with the package
        "generate.model_id": "runwayml/stable-diffusion-v1-5",  # pinned by its revision
        "segment.batch_size": 8,
    }
    weights = shipped_weights(settings)
    assert list(weights) == ["segment.labeller"]
    assert weights["segment.labeller"] == builtin_weights_digest("builtin:toy-labeller")
