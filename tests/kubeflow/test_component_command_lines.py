"""Each container component's command line, as the compiled IR has it, run for real against the
local CLI on tiny data: the argument list Kubernetes would run, placeholders filled in."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from freemask.cli import main
from freemask.config import RunConfig
from pipelines.freemask_pipeline import compile_pipeline
from pipelines.ir import executor_task, load_ir

pytestmark = pytest.mark.slow
PLACEHOLDER = re.compile(r"\{\{\$\.(inputs|outputs)\.parameters\['(\w+)'\](?:\.output_file)?\}\}")
# The order a pipeline run takes (with one shard and one round).
ORDER = [
    "start-run", "generate", "relate", "backgrounds", "compose", "refine-train", "refine",
    "harmonize", "prepare", "bootstrap", "pseudo-label", "filter", "train", "close",
]  # fmt: skip


def fill(argument: str, values: dict[str, str]) -> str:
    """An IR argument with its placeholders (and a Concat of them) filled in."""
    if argument.startswith('{"Concat"'):
        return "".join(fill(part, values) for part in json.loads(argument)["Concat"])
    return PLACEHOLDER.sub(lambda match: values[match.group(2)], argument)


def test_container_command_lines_run_against_the_cli(tmp_path: Path) -> None:
    settings = {
        "name": "command-lines",
        "workdir": str(tmp_path / "work"),
        "classes": ["ball", "box"],
        "generate": {
            "model_id": "builtin:tiny-sd",
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
        "active": {"max_rounds": 1, "keep_rule": "percentile"},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
        "kubeflow": {"shards": 1, "parallelism": 1},
    }
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(settings))
    spec, _ = load_ir(
        compile_pipeline(RunConfig.model_validate(settings), tmp_path / "pipeline.yaml")
    )
    executors = {
        executor_task(e): e["container"] for e in spec["deploymentSpec"]["executors"].values()
    }
    values = {
        "config": str(config_path), "classes": "", "images_per_class": "2", "iou_threshold": "0.5",
        "max_rounds": "1", "tracking_uri": "", "shard": "0", "shards": "1", "round_index": "1",
        "parent_run_id": "", "depth": "1", "run_id": str(tmp_path / "run_id"), "decision": str(tmp_path / "decision"),
    }  # fmt: skip
    for task in ORDER:
        container = executors[task]
        argv = [fill(argument, values) for argument in container["args"]]
        assert container["command"] == ["freemask"]
        assert main(argv) == 0, f"{task}: freemask {' '.join(argv)}"
        if task == "start-run":
            values["parent_run_id"] = (tmp_path / "run_id").read_text()
        if task in ("generate", "backgrounds", "compose", "refine", "harmonize"):
            join = [
                fill(argument, {**values, "stage": task}) for argument in executors["join"]["args"]
            ]
            assert main(join) == 0, f"join {task}"
    assert (tmp_path / "decision").read_text() == "false"  # max_rounds 1: the loop ends here
    assert (tmp_path / "work" / "active" / "_SUCCESS").is_file()
