"""Each container component's command line, resolved from the compiled IR by the open-source KFP
driver's rules (kfp_driver.py), run for real against the local CLI on tiny data, in the order the
pipeline's DAGs allow: the argument lists a cluster's pods would run."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
import yaml
from kfp_driver import OUTPUT_PARAMETER_DIR, command_line, executions
from test_ir_resolution import referenced_executors

from freemask.cli import main
from freemask.config import RunConfig
from pipelines.freemask_pipeline import compile_pipeline
from pipelines.ir import load_ir

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("rounds", [1, 0])  # 0, the default: bootstrap ships the pool
def test_container_command_lines_run_against_the_cli(tmp_path: Path, rounds: int) -> None:
    settings = {
        "name": "command-lines",
        "workdir": str(tmp_path / "work"),
        "classes": ["ball", "box"],
        "generate": {
            "model_id": "builtin:tiny-sd",
            "reject_implausible": False,  # random weights: meaningless attention
            "images_per_class": 2,
            "height": 64,
            "width": 64,
            "num_inference_steps": 2,
        },
        "relate": {"thesaurus": str(Path(__file__).parents[2] / "configs" / "demo_thesaurus.yaml")},
        "compose": {"images": 4, "backgrounds_per_scene": 1, "objects_per_image": [1, 2]},
        "refine": {"method": "affinity", "epochs": 1, "logt": 2},
        "segment": {
            "model_id": "builtin:tiny-mask2former",
            "image_size": 64,
            "train_steps": 2,
            "checkpoint_every": 1,
        },
        "active": {"max_rounds": rounds, "keep_rule": "percentile"},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
        "kubeflow": {"shards": 1, "parallelism": 1},
    }
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(settings))
    spec, _ = load_ir(
        compile_pipeline(RunConfig.model_validate(settings), tmp_path / "pipeline.yaml")
    )
    containers = spec["deploymentSpec"]["executors"]
    outputs: dict[str, str] = {}
    ran = []
    # Output artifacts live under the pipeline root; the launcher reads and writes them at their
    # local path (gs://b/k -> /gcs/b/k, the gcsfuse mount in a pod), removed afterwards here.
    bucket = f"freemask-test-{uuid.uuid4().hex[:8]}"
    try:
        for execution in executions(
            spec,
            {"config_uri": str(config_path)},
            outputs,
            run_id="run-1",
            pipeline_root=f"gs://{bucket}/root",
        ):
            pod = command_line(containers[execution.executor]["container"], execution)
            # The pod's output parameter files (/tmp/kfp/outputs/<name>) are tmp_path's here.
            argv = [arg.replace(OUTPUT_PARAMETER_DIR, str(tmp_path)) for arg in pod[1:]]
            assert main(argv) == 0, f"{execution.path}: freemask {' '.join(argv)}"
            ran.append(execution.executor)
            if "start-run" in argv:
                outputs["run_id"] = (tmp_path / "run_id").read_text()
    finally:
        shutil.rmtree(f"/gcs/{bucket}", ignore_errors=True)
    assert set(ran) == referenced_executors(spec)
    if rounds:
        assert (tmp_path / "decision").read_text() == "false"  # max_rounds 1: the loop ends here
    else:
        assert not (tmp_path / "decision").exists()  # no close step ran
    work = tmp_path / "work" / "versions" / "run-1"
    assert (work / "active" / "_SUCCESS").is_file() and (work / "config.yaml").is_file()
