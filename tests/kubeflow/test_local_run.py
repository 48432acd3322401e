"""The pipeline run for real on this machine: kfp.local executes it with host-run components
that run the same `freemask` command lines as the containers. The config is as small as what it
proves allows: two shards, two classes of two objects, two training steps, two rounds."""

from __future__ import annotations

import json
import os
from pathlib import Path

import host_tasks
import pytest
import yaml
from mlflow import MlflowClient

from freemask.config import RunConfig
from freemask.records import read_manifest
from freemask.storage import LocalStorage
from pipelines.freemask_pipeline import Tasks, build_pipeline

pytestmark = pytest.mark.slow


def tiny_config(root: Path) -> dict:
    return {
        "name": "kfp-local",
        "workdir": str(root / "work"),
        "classes": ["ball", "box"],
        "generate": {
            "model_id": "builtin:tiny-sd",
            "reject_implausible": False,  # random weights: meaningless attention
            "images_per_class": 2,
            "height": 64,
            "width": 64,
            "num_inference_steps": 1,
        },
        "relate": {"thesaurus": str(Path(__file__).parents[2] / "configs" / "demo_thesaurus.yaml")},
        "compose": {"images": 4, "backgrounds_per_scene": 1, "objects_per_image": [1, 2]},
        "refine": {"method": "guided_filter"},
        "segment": {
            "model_id": "builtin:tiny-mask2former",
            "image_size": 64,
            "train_steps": 2,
            "checkpoint_every": 2,
        },
        # The judge is a random tiny model: its scores may all tie (at 0), and percentile then
        # falls back to iou_threshold, which must keep them for round 2 to run.
        "active": {"max_rounds": 2, "keep_rule": "percentile", "iou_threshold": 0.0},
        "tracking": {"uri": f"sqlite:///{root / 'mlflow.db'}", "experiment": "kfp-local"},
        "kubeflow": {"shards": 2, "parallelism": 2},
    }


def run_pipeline(tmp_path: Path, max_rounds: int) -> RunConfig:
    from kfp import local

    settings = tiny_config(tmp_path)
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(settings))
    config = RunConfig.model_validate(settings)
    tasks = Tasks(**{name: getattr(host_tasks, name) for name in Tasks.__dataclass_fields__})
    local.init(
        runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp-root")
    )
    pipeline = build_pipeline(tasks, config, kubernetes=False)
    pipeline(config_uri=str(config_path), max_rounds=str(max_rounds))
    return config


def versions(tmp_path: Path) -> list[Path]:
    """The dataset versions the runs wrote, one per KFP run id."""
    return sorted((tmp_path / "work" / "versions").iterdir())


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path, Path]:
    """Two runs of the same pipeline on one config: max_rounds 2, then 1 (a refresh with the
    stop rule saying stop early); yields the root and each run's dataset version."""
    root = tmp_path_factory.mktemp("kfp-local")
    with pytest.MonkeyPatch.context() as patch:  # the twins import host_tasks in kfp.local's
        here = str(Path(__file__).parent)  # subprocesses
        patch.setenv(
            "PYTHONPATH", os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
        )
        run_pipeline(root, max_rounds=2)
        (first,) = versions(root)
        run_pipeline(root, max_rounds=1)
        (second,) = set(versions(root)) - {first}
    return root, first, second


def test_shards_fan_out_and_two_rounds_run(two_runs) -> None:
    tmp_path, work, _ = two_runs
    for stage in ("generate", "backgrounds", "compose", "refine", "harmonize"):
        parts = sorted(path.name for path in (work / stage / "parts").glob("manifest-*"))
        assert parts == ["manifest-00000-of-00002.jsonl", "manifest-00001-of-00002.jsonl"], stage
        assert (work / stage / "_SUCCESS").is_file()
    assert (
        len(read_manifest(LocalStorage(work / "generate")))
        + len(
            (work / "generate" / "rejected.jsonl").read_text().splitlines()
            if (work / "generate" / "rejected.jsonl").exists()
            else []
        )
        == 4
    )
    summaries = [
        json.loads((work / "active" / "rounds" / f"{k:02d}" / "summary.json").read_text())
        for k in (1, 2)
    ]
    assert [summary["round"] for summary in summaries] == [1, 2]
    assert (work / "active" / "_SUCCESS").is_file()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("kfp-local").experiment_id
    linked = client.search_runs([experiment], filter_string=f"tags.`kfp.run_id` = '{work.name}'")
    (parent,) = [run for run in linked if "mlflow.parentRunId" not in run.data.tags]
    rounds = client.search_runs(
        [experiment], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert {run.data.tags["freemask.round"] for run in rounds} == {"0", "1", "2"}
    assert parent.data.tags["freemask.stop_reason"] == "reached max_rounds (2)"
    for run in rounds:
        if run.data.tags["freemask.round"] == "0":
            continue
        # Each round links back to the KFP run and names the data its model trained on.
        assert run.data.tags["kfp.run_id"] == work.name
        (logged,) = run.inputs.dataset_inputs
        assert logged.dataset.name == f"round-{run.data.tags['freemask.round']}-kept"
        assert logged.dataset.digest == run.data.tags["freemask.dataset_version"]
    # The exit handler ended the parent run with the pipeline's outcome.
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["kfp.final_status"] == "FINISHED"


def test_each_run_is_a_new_dataset_version_and_a_stop_rule_ends_the_loop_early(two_runs):
    # Two runs with the same config, caching as compiled (off): nothing is skipped or reused.
    tmp_path, first, second = two_runs
    active = second / "active"
    assert (active / "rounds" / "01" / "summary.json").is_file()
    assert not (active / "rounds" / "02").exists()
    assert (active / "_SUCCESS").is_file()
    for version in (first, second):
        assert yaml.safe_load((version / "config.yaml").read_text())["name"] == "kfp-local"
        assert (version / "generate" / "_SUCCESS").is_file()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("kfp-local").experiment_id
    parents = client.search_runs([experiment], filter_string="tags.`freemask.runner` = 'kubeflow'")
    assert sorted(run.data.tags["kfp.run_id"] for run in parents) == sorted(
        [first.name, second.name]
    )
