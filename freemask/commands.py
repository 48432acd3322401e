"""The ``freemask`` command lines that pipeline tasks run, built in one place.

Kubeflow's container components and the host-run components that test the pipeline with
``kfp.local`` both take their argument lists from ``task_argv``, so a task runs the very same
command line either way. Every argument is one plain string, built with f-strings: given a
pipeline placeholder, the string embeds ``{{$.inputs.parameters['x']}}``, the one form that the
open-source KFP driver substitutes inside a string (it passes struct placeholders such as
``Concat`` through as JSON, kubeflow/pipelines#9486).

Every command line starts with the runtime overrides: ``--set field=VALUE`` for each pipeline
parameter in ``OVERRIDES``; an empty VALUE sets nothing, so the config file stays the truth and a
parameter overrides it only when the run sets it.

Tasks with KFP output artifacts (``ARTIFACTS``: Datasets, Models, Metrics) run their command
through ``freemask kfp-outputs TASK --executor-input {{$}} ... -- COMMAND``: the launcher
substitutes ``{{$}}`` with the executor input JSON, and after the command the wrapper writes
the artifacts' metadata (the data's gs:// prefix, sample count, digest; the round's metrics) to
the executor output file that JSON names, the one way a container sets artifact metadata.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from freemask.config import RunConfig

Argument = Any  # a string or number, or a pipeline placeholder (its str() is the placeholder)
# Pipeline parameter -> the config field it overrides when set.
OVERRIDES = {
    "classes": "classes",
    "images_per_class": "generate.images_per_class",
    "iou_threshold": "active.iou_threshold",
    "max_rounds": "active.max_rounds",
    "tracking_uri": "tracking.uri",
}
# Every task's inputs: the config URI, the overrides, and the dataset version (the KFP run id).
RUNTIME = ("config", *OVERRIDES, "dataset_version")
SHARDED = ("generate", "refine", "backgrounds", "compose", "harmonize")
ROUND_STEPS = ("prepare", "bootstrap", "pseudo-label", "filter", "train", "close")
TASKS = (
    "start-run", *SHARDED, "relate", "refine-train", "join", *ROUND_STEPS, "publish", "end-run",
)  # fmt: skip
# The launcher's placeholder for the whole executor input JSON (launcher_v2.go compileCmdAndArgs).
EXECUTOR_INPUT = "{{$}}"
# Task -> its KFP output artifacts: output name -> (artifact kind, what it describes).
ARTIFACTS: dict[str, dict[str, tuple[str, str]]] = {
    "relate": {"relations": ("dataset", "relate/relations.json")},
    "join": {"dataset": ("dataset", "{stage}/manifest.jsonl")},
    "refine-train": {"affinity_net": ("model", "refine/affinity.safetensors")},
    "prepare": {"pool": ("dataset", "active/pool.jsonl")},
    "filter": {"kept": ("dataset", "active/rounds/{round:02d}/kept.jsonl")},
    "train": {"segmenter": ("model", "active/rounds/{round:02d}/model/model.safetensors")},
    "close": {"round_metrics": ("metrics", "active/rounds/{round:02d}/summary.json")},
    "publish": {"dataset": ("dataset", "export/coco/annotations/instances.json")},
}


def gpu_tasks(config: RunConfig) -> frozenset[str]:
    """The tasks whose command runs a network on a GPU under ``config``: they run on a GPU node
        (an accelerator, the pool's toleration and /dev/shm); the others stay on CPU nodes.

        Decided at compile time from the stages' settings: a stage whose ``device`` is "cpu", or
        whose method has no network (refine's guided filter, harmonize's colour transfer, drawn
        backgrounds replaced by given ones), gets none. ``bootstrap`` trains round 0, the unfiltered
    pool's candidate, and ``pseudo-label`` trains a later round's cross-fitted judges.
    """
    segment = config.segment.device
    devices = {
        "generate": config.generate.device,
        "backgrounds": "cpu" if config.compose.backgrounds else config.generate.device,
        "refine-train": config.refine.device if config.refine.method == "affinity" else "cpu",
        "refine": config.refine.device if config.refine.method == "affinity" else "cpu",
        "harmonize": config.harmonize.device if config.harmonize.method == "pctnet" else "cpu",
        "bootstrap": segment,
        "pseudo-label": segment,
        "train": segment,
        "close": segment,  # evaluates the round's segmenter on the validation set
    }
    return frozenset(task for task, device in devices.items() if device != "cpu")


def override_argv(values: Mapping[str, Argument]) -> list[str]:
    """``--set field=VALUE`` for every override and for the run's dataset version."""
    argv: list[str] = []
    for name, field in OVERRIDES.items():
        argv += ["--set", f"{field}={values[name]}"]
    return [*argv, "--set", f"kubeflow.dataset_version={values['dataset_version']}"]


def task_argv(task: str, values: Mapping[str, Argument]) -> list[str]:
    """The ``freemask`` arguments of pipeline task ``task`` with ``values`` for its inputs.

    ``values`` holds ``RUNTIME`` plus the task's own inputs (``shard``/``shards``, ``stage``,
    ``round_index``, ``parent_run_id``, ``depth``, ``status``, the output files ``run_id`` or
    ``decision``, the Markdown paths ``mlflow_run`` and ``report``, and ``executor_input`` for the tasks in
    ``ARTIFACTS``). Raises ValueError for an unknown task.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    config = ["--config", f"{values['config']}"]
    if task in SHARDED:
        command = [task, *config, "--shard", f"{values['shard']}/{values['shards']}"]
    elif task == "relate":
        command = ["relate", *config]
    elif task == "refine-train":
        command = ["refine", *config, "--train-only"]
    elif task == "join":
        command = ["join", *config, "--stage", f"{values['stage']}"]
        command += ["--shards", f"{values['shards']}"]
    elif task == "start-run":
        command = ["start-run", *config, "--run-id-file", f"{values['run_id']}"]
        command += ["--depth", f"{values['depth']}", "--mlflow-link", f"{values['mlflow_run']}"]
    elif task == "end-run":
        command = ["end-run", *config, "--status", f"{values['status']}"]
    elif task == "publish":
        command = ["publish", *config, "--parent-run-id", f"{values['parent_run_id']}"]
        command += ["--report-html", f"{values['report']}"]
    else:
        round_index = values["round_index"] if task not in ("prepare", "bootstrap") else 0
        command = ["round", task, *config, "--round", f"{round_index}"]
        command += ["--parent-run-id", f"{values['parent_run_id']}"]
        if task == "close":
            command += ["--depth", f"{values['depth']}", "--decision-file", f"{values['decision']}"]
    if task in ARTIFACTS:
        command = _with_outputs(task, values, command)
    return override_argv(values) + command


def _with_outputs(task: str, values: Mapping[str, Argument], command: list[str]) -> list[str]:
    """``command`` run by ``freemask kfp-outputs``, which then writes the task's artifacts."""
    wrapper = ["kfp-outputs", task, "--executor-input", f"{values['executor_input']}"]
    wrapper += ["--config", f"{values['config']}"]
    if task == "join":
        wrapper += ["--stage", f"{values['stage']}"]
    elif task in ROUND_STEPS:
        wrapper += ["--round", f"{values['round_index'] if task != 'prepare' else 0}"]
    return [*wrapper, "--", *command]
