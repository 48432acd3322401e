"""Stage outputs: per-sample commits, resume after a crash, sharding and the join."""

from pathlib import Path

import pytest
from helpers import make_sample

from freemask.errors import FreemaskError, ManifestError
from freemask.records import read_manifest
from freemask.stage_output import SUCCESS, Shard, StageOutput, is_complete, join_shards
from freemask.storage import LocalStorage, read_json


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
