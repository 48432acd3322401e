"""The embedded runner: the pipeline's stages in one process, on local defaults.

Each stage lives in ``freemask/<package>/`` and exposes ``run_<stage>(config, inputs, outputs)``.
The runner calls them in order, each reading the previous stage's output prefix, under one
MLflow parent run. Stages not built yet are reported, not faked.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from freemask.config import RunConfig
from freemask.storage import open_storage
from freemask.tracking import MlflowTracker, Run, resolve_tracking_uri

# (stage, package, the stage whose output it reads): the pipeline's order. A stage is available
# once its package exports run_<stage>; compose also reads relate's and backgrounds' outputs from
# their default places under the workdir.
PIPELINE: list[tuple[str, str, str | None]] = [
    ("generate", "freemask.generate", None),
    ("relate", "freemask.relate", None),
    ("backgrounds", "freemask.compose", "relate"),
    ("compose", "freemask.compose", "generate"),
    ("refine", "freemask.refine", "compose"),
    ("harmonize", "freemask.harmonize", "refine"),
    ("active", "freemask.active", "harmonize"),
]


@dataclass
class LocalRunReport:
    """What a local run did: stages run (with their results), missing, and blocked behind a missing one."""

    run_id: str
    tracking_uri: str
    workdir: str
    ran: dict[str, Any] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)


def find_stage(stage: str, package: str) -> Callable[..., Any] | None:
    """The stage's ``run_<stage>`` function, or None if its package does not provide it yet."""
    try:
        module = importlib.import_module(package)
    except ModuleNotFoundError as exc:
        if exc.name != package:
            raise
        return None
    return getattr(module, f"run_{stage}", None)


def run_local(config: RunConfig, run: Run | None = None) -> LocalRunReport:
    """Run every available stage in order under one MLflow parent run; report the rest."""
    # 1. Work directory and the resolved config, so the run can be reproduced from its folder.
    workdir = open_storage(config.workdir)
    workdir.write_bytes(
        "config.yaml", yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False).encode()
    )

    # 2. Tracking: a parent run for the whole pipeline.
    tracking_uri = resolve_tracking_uri(config.tracking.uri, config.workdir)
    if run is None:
        # With the embedded sqlite store, artifacts go beside it; a server decides for itself.
        artifacts = workdir.child("mlartifacts").uri if tracking_uri.startswith("sqlite:") else None
        tracker = MlflowTracker(
            tracking_uri, config.tracking.experiment, artifact_location=artifacts
        )
        run = tracker.start_run(config.name, tags={"freemask.runner": "local"})
    run.log_params(config.model_dump(mode="json"))
    report = LocalRunReport(run_id=run.run_id, tracking_uri=tracking_uri, workdir=workdir.uri)

    # 3. Stages in order; the first missing one blocks those after it (they need its output).
    with run:
        for stage, package, source in PIPELINE:
            if report.missing:
                report.blocked.append(stage)
                continue
            runner = find_stage(stage, package)
            if runner is None:
                report.missing.append(stage)
                continue
            outputs = workdir.child(stage).uri
            inputs = workdir.child(source).uri if source else workdir.uri
            # Stages that log models or training curves take the run.
            extra = {"run": run} if "run" in inspect.signature(runner).parameters else {}
            result = runner(config, inputs, outputs, **extra)
            report.ran[stage] = result
            run.log_metrics(
                {
                    f"{stage}.written": result.written,
                    f"{stage}.skipped": result.skipped,
                    f"{stage}.rejected": result.dropped,
                    f"{stage}.seconds": result.seconds,
                }
            )
        run.set_tags({"freemask.missing_stages": ",".join(report.missing) or "none"})
    return report
