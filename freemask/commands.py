"""The ``freemask`` command lines that pipeline tasks run, built in one place.

Kubeflow's container components and the host-run components used to test the pipeline both
take their argument lists from here, so a task runs the very same command line either way:
``runtime_argv(...)`` (the pipeline's runtime parameters) followed by one of the commands below.
Arguments may be pipeline placeholders; a tuple stands for pieces to join into one argument
(``("0", "/", "4")`` -> ``0/4``), which a container component turns into a concatenation
placeholder and a host component joins at run time. Output files are the last arguments.
"""

from __future__ import annotations

from typing import Any

Argument = Any  # a string, a pipeline placeholder, or a tuple of them to join
STAGES = ("generate", "relate", "backgrounds", "compose", "refine", "harmonize")
ROUND_STEPS = ("prepare", "bootstrap", "pseudo-label", "filter", "train", "close")
# The stages that run on a GPU node (and get an accelerator, toleration and /dev/shm).
GPU_STAGES = frozenset(
    {"generate", "backgrounds", "refine", "harmonize", "bootstrap", "pseudo-label", "train"}
)


def stage_argv(
    stage: str, config: Argument, shard: Argument = None, shards: Argument = None
) -> list[Argument]:
    """``freemask <stage> --config C [--shard i/n]``; outputs go under the config's workdir."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    argv: list[Argument] = [stage, "--config", config]
    if shard is not None:
        argv += ["--shard", (shard, "/", shards)]
    return argv


def refine_train_argv(config: Argument) -> list[Argument]:
    """``freemask refine --train-only``: AffinityNet's weights, before the sharded refinement."""
    return ["refine", "--config", config, "--train-only"]


def join_argv(config: Argument, stage: str, shards: Argument) -> list[Argument]:
    """``freemask join`` of a sharded stage under the workdir."""
    return ["join", "--config", config, "--stage", stage, "--shards", shards]


def start_run_argv(config: Argument, run_id_file: Argument) -> list[Argument]:
    """``freemask start-run``: create the pipeline's parent MLflow run, write its id."""
    return ["start-run", "--config", config, "--run-id-file", run_id_file]


def runtime_argv(
    classes: Argument,
    images_per_class: Argument,
    iou_threshold: Argument,
    max_rounds: Argument,
    tracking_uri: Argument,
) -> list[Argument]:
    """The pipeline's runtime parameters as ``--set`` overrides (an empty value sets nothing);
    every task's command line starts with them, so every task reads the same settings."""
    return [
        "--set", ("classes=", classes),
        "--set", ("generate.images_per_class=", images_per_class),
        "--set", ("active.iou_threshold=", iou_threshold),
        "--set", ("active.max_rounds=", max_rounds),
        "--set", ("tracking.uri=", tracking_uri),
    ]  # fmt: skip


def round_argv(
    step: str,
    config: Argument,
    round_index: Argument,
    parent_run_id: Argument,
    max_rounds: Argument | None = None,
    depth: Argument | None = None,
    decision_file: Argument | None = None,
) -> list[Argument]:
    """``freemask round <step>`` of the active-learning loop (``close`` decides on the next)."""
    if step not in ROUND_STEPS:
        raise ValueError(f"unknown round step {step!r}; expected one of {ROUND_STEPS}")
    argv: list[Argument] = [
        "round",
        step,
        "--config",
        config,
        "--round",
        round_index,
        "--parent-run-id",
        parent_run_id,
    ]
    if step == "close":
        argv += ["--max-rounds", max_rounds, "--depth", depth, "--decision-file", decision_file]
    return argv


def joined(argv: list[Argument]) -> list[str]:
    """The argument list with every tuple joined into one string (for running it directly)."""
    return [
        "".join(str(part) for part in item) if isinstance(item, tuple) else str(item)
        for item in argv
    ]
