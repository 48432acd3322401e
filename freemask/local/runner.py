"""The embedded runner: the whole pipeline in one process, on local defaults.

``run_local`` calls every stage's ``run_<stage>(config, inputs, outputs)`` in order, each
reading the previous stage's output prefix, under one MLflow parent run; the active-learning
loop uses the same stop rule as the Kubeflow pipeline. Every stage skips what it has already
written, and the parent run's id is kept in the work directory, so running the same command
after a kill continues the same run where it stopped. At the end the final dataset is exported
(COCO, VOC and Hugging Face datasets) and the report folder is written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from freemask.active import run_active
from freemask.compose import run_backgrounds, run_compose
from freemask.config import RunConfig
from freemask.errors import WriteConflictError
from freemask.generate import run_generate
from freemask.harmonize import run_harmonize
from freemask.local.report import stage_facts
from freemask.publish import STAGE_TABLE, log_config, log_report, publish_run, stage_table
from freemask.redact import redact
from freemask.refine import run_refine
from freemask.relate import run_relate
from freemask.run_description import DESCRIPTION_TAG, describe_run, source_tags
from freemask.stage_output import StageResult
from freemask.storage import Storage, open_storage, read_json_object, write_json
from freemask.tracking import MlflowTracker, Run, run_page_url
from freemask.versions import project_tracking_uri

# (stage, its function, the stage whose output it reads): the pipeline's order. refine works on
# the single objects (DiffuMask's order), where the mask edge is the object's, not a paste seam;
# compose cuts the refined objects and also reads relate's and backgrounds' outputs from their
# default places under the workdir.
PIPELINE: list[tuple[str, Callable[..., StageResult], str | None]] = [
    ("generate", run_generate, None),
    ("relate", run_relate, None),
    ("backgrounds", run_backgrounds, "relate"),
    ("refine", run_refine, "generate"),
    ("compose", run_compose, "refine"),
    ("harmonize", run_harmonize, "compose"),
    ("active", run_active, "harmonize"),
]
# Stages that log models or training curves into the parent run.
TRACKED_STAGES = {"refine", "active"}
RUN_FILE = "run.json"


@dataclass
class LocalRunReport:
    """What a local run did: the stages' results, where the exports and report went."""

    run_id: str
    tracking_uri: str
    workdir: str
    ran: dict[str, StageResult] = field(default_factory=dict)
    exports: dict[str, dict] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    resumed: bool = False


def parent_run(config: RunConfig, workdir: Storage, tracking_uri: str) -> tuple[Run, bool]:
    """The run's MLflow parent run: the one this work directory started, or a new one.

    Returns (run, resumed).
    """
    # With the embedded sqlite store, artifacts go beside it (MlflowTracker: shared by every
    # refresh that uses the store); a server decides for itself.
    tracker = MlflowTracker(tracking_uri, config.tracking.experiment)
    tags = {
        "freemask.runner": "local",
        "freemask.workdir_id": hashlib.sha256(workdir.uri.encode()).hexdigest()[:16],
    }
    if config.kubeflow.dataset_version:  # a refresh: compare --experiment lists it by version
        tags["freemask.dataset_version"] = config.kubeflow.dataset_version
    known = None
    if workdir.exists(RUN_FILE):
        known = read_json_object(workdir, RUN_FILE, required=("run_id", "tracking_uri"))
        if known["tracking_uri"] == redact(tracking_uri):
            run = tracker.resume_run(known["run_id"])
            run.end_orphans()  # nested runs left RUNNING by the killed process
            return run, True
    # A process killed between creating the run and writing run.json left it behind: find it.
    found = tracker.find_run(tags)
    run = found or tracker.start_run(config.name, tags=tags)
    if found:
        found.end_orphans()
    run.log_params(config.model_dump(mode="json"))  # the same values again when found
    # What the run makes and where it came from (the run page's description and source).
    run.set_tags({**source_tags("freemask run"), DESCRIPTION_TAG: describe_run(config)})
    record = {"run_id": run.run_id, "tracking_uri": redact(tracking_uri)}
    if known is not None:  # it names another tracking server: this run replaces it
        write_json(workdir, RUN_FILE, record)
        return run, found is not None
    try:
        # Write-once (a generation precondition on GCS): of two processes starting this work
        # directory at the same moment, one names the parent run and the other joins it.
        write_json(workdir, RUN_FILE, record, write_once=True)
    except WriteConflictError:
        winner = read_json_object(workdir, RUN_FILE, required=("run_id", "tracking_uri"))
        if winner["run_id"] != run.run_id:
            run.finish("KILLED")
            run = tracker.resume_run(winner["run_id"])
        return run, True
    return run, found is not None


def run_local(
    config: RunConfig,
    run: Run | None = None,
    on_stage: Callable[[int, int, str], None] | None = None,
) -> LocalRunReport:
    """Run every stage in order under one MLflow parent run, then export and report;
    ``on_stage(number, count, stage)`` is told as each stage starts (1-based)."""
    # 1. Work directory and the resolved config, so the run can be reproduced from its folder.
    workdir = open_storage(config.workdir)
    workdir.remove_temporary()  # partial files of a killed earlier run, in any stage's folder
    snapshot = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    workdir.write_bytes("config.yaml", redact(snapshot).encode())

    # 2. Tracking: the parent run for the whole pipeline (resumed after an interruption). A
    # user and password in the tracking URI go to MLflow's environment, never to a file.
    # Every version of a project shares the store of its top work directory (refreshes
    # compare side by side in one experiment).
    tracking_uri = project_tracking_uri(config)
    resumed = False
    if run is None:
        run, resumed = parent_run(config, workdir, tracking_uri)
    report = LocalRunReport(
        run_id=run.run_id, tracking_uri=tracking_uri, workdir=workdir.uri, resumed=resumed
    )

    with run:
        log_config(run, workdir)
        # 3. Stages in order; each skips the samples it has already written. Their counts and
        # times go to the run as one table (not metrics: the run's charts are the rounds').
        for number, (stage, runner, source) in enumerate(PIPELINE, start=1):
            if on_stage is not None:
                on_stage(number, len(PIPELINE), stage)
            inputs = workdir.child(source).uri if source else workdir.uri
            extra = {"run": run} if stage in TRACKED_STAGES else {}
            result = runner(config, inputs, workdir.child(stage).uri, **extra)
            report.ran[stage] = result
            facts = {name: stage_facts(workdir.child(name)) for name in report.ran}
            run.log_dict(stage_table({"stages": facts}), STAGE_TABLE)
        # 4. The dataset in the formats users train on, and the report folder (also kept with
        # the run in MLflow): what the pipeline's publish task does.
        url = run_page_url(config.tracking.ui_url, tracking_uri, run)
        published = publish_run(config, workdir, url)
        report.exports, report.report = published.exports, published.report
        log_report(run, workdir, report.report["files"])
    return report
