"""What the command groups share: the console, the common options and their defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from freemask.config import RunConfig, load_config
from freemask.stage_output import StageResult

out = Console()
ConfigOption = Annotated[
    str, typer.Option("--config", "-c", help="Run config YAML (path or gs:// URI).")
]
ShardOption = Annotated[
    str, typer.Option("--shard", help="This worker's share as i/n (0-based), e.g. 0/4.")
]
CheckOption = Annotated[
    bool,
    typer.Option(
        "--check",
        help="Only parse the arguments, validate the config with its overrides and resolve "
        "the inputs and outputs; read no data, write nothing [default: off, run the command].",
    ),
]


def load_run_config(path: str | Path) -> RunConfig:
    """The run config at ``path`` (``--set`` overrides applied); with ``kubeflow.dataset_version``
    set (a pipeline run), its workdir is that run's own ``<workdir>/versions/<version>`` and,
    unless ``draw`` is set, the version is its draw (new samples per version)."""
    run_config = load_config(path)
    version = run_config.kubeflow.dataset_version
    if not version:
        return run_config
    workdir = f"{run_config.workdir.rstrip('/')}/versions/{version}"
    return run_config.model_copy(update={"workdir": workdir, "draw": run_config.draw or version})


def report_check(command: str, run_config: RunConfig, **uris: str | Path | None) -> None:
    """Print what ``--check`` resolved: the command, its classes, workdir and URIs."""
    resolved = "".join(f", {name} {uri}" for name, uri in uris.items() if uri is not None)
    out.print(
        f"check ok: {command}: {len(run_config.classes)} classes, "
        f"workdir {run_config.workdir}{resolved}"
    )


def stage_output_uri(run_config: RunConfig, outputs: str | None, stage: str) -> str:
    """``--out`` if given, else ``<workdir>/<stage>``."""
    return outputs or f"{run_config.workdir.rstrip('/')}/{stage}"


def stage_summary(stage: str, result: StageResult) -> str:
    """One line: what a stage wrote, skipped and rejected, and where."""
    return (
        f"{stage}: {result.written} written, {result.skipped} already done, "
        f"{result.dropped} rejected -> {result.output}"
    )
