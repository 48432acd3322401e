"""``freemask run``: the whole pipeline in this process (the local front end), with its tables."""

from __future__ import annotations

import shlex
import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from freemask.cli.options import ConfigOption, out
from freemask.config import RunConfig, load_config
from freemask.redact import redact

if TYPE_CHECKING:
    from freemask.local.runner import LocalRunReport


def register(app: typer.Typer) -> None:
    """Add ``run`` to the ``freemask`` app."""
    app.command("run")(run)


def announce_stage(number: int, count: int, stage: str) -> None:
    """One line as a stage starts (``stage 3/7: refine``), flushed: in a terminal and in a log
    alike, the run says how far it is."""
    print(f"stage {number}/{count}: {stage}", file=sys.stderr, flush=True)


def run(
    config: ConfigOption,
    refresh: Annotated[
        bool,
        typer.Option(
            "--refresh",
            help="Draw a new dataset version under <workdir>/versions/ (resuming one a kill "
            "left unfinished), then point <workdir>/LATEST at it and apply versions.keep "
            "[default: run <workdir> itself].",
        ),
    ] = False,
) -> None:
    """Run the whole pipeline in this process on local defaults (no cluster needed)."""
    from freemask.preflight import preflight

    run_config: RunConfig = load_config(config)
    # Seconds now, not minutes in: classes the models cannot know, an unreachable tracking
    # server or bucket (checked before the stages' libraries load).
    preflight(run_config, str(config))
    from freemask.file_lock import hold_workdir
    from freemask.local.runner import run_local
    from freemask.storage import open_storage
    from freemask.versions import REFRESHED, local_refresh, version_storage

    version = None
    # One run per work directory: a second start is refused before it writes anything.
    with hold_workdir(run_config.workdir):
        if refresh:
            top = open_storage(run_config.workdir)
            run_config, version = local_refresh(run_config)
        report = run_local(run_config, on_stage=announce_stage)
        published = ""
        if version is not None:
            from mlflow import MlflowClient

            from freemask.refresh_summary import finish_refresh

            client, model = MlflowClient(report.tracking_uri), f"{run_config.name}-segmenter"
            keep = run_config.versions.keep
            latest, deleted = finish_refresh(top, version, keep, client, report.run_id, model)
            version_storage(top, version).write_bytes(REFRESHED, b"{}\n")
            pruned = f"; deleted {', '.join(deleted)}" if deleted else ""
            published = f"refresh {version} published; LATEST: {latest}{pruned}"
    print_tables(run_config, report)
    out.print(
        f"workdir: {report.workdir}\n"
        f"exports: {report.workdir}/export/coco, {report.workdir}/export/voc, "
        f"{report.workdir}/export/hf\n"
        f"report: {report.workdir}/report ({len(report.report.get('files', []))} files)\n"
        f"MLflow: {redact(report.tracking_uri)} (run {report.run_id})",
        markup=False,
        highlight=False,
    )
    if published:
        out.print(published, markup=False, highlight=False)
    out.print(outcome(report), markup=False, highlight=False)
    out.print(next_commands(str(config), report), markup=False, highlight=False)


def print_tables(run_config: RunConfig, report: LocalRunReport) -> None:
    """The stages' table (written, already done, rejected, seconds) and the rounds' table."""
    stages = Table(
        title=f"freemask run {run_config.name}" + (" (resumed)" if report.resumed else "")
    )
    for column in ("stage", "written", "already done", "rejected", "seconds"):
        stages.add_column(column, justify="left" if column == "stage" else "right")
    for stage, result in report.ran.items():
        stages.add_row(
            stage,
            str(result.written),
            str(result.skipped),
            str(result.dropped),
            f"{result.seconds:.1f}",
        )
    out.print(stages)
    best = report.ran["active"].summary.get("best_round") if "active" in report.ran else None
    rounds = Table(title="active-learning rounds")
    for column in ("round", "kept", "kept fraction", "validation mIoU", "exported"):
        rounds.add_column(column, justify="right")
    for summary in report.report.get("rounds", []):
        rounds.add_row(
            "0 (pool)" if summary["round"] == 0 else str(summary["round"]),
            str(summary["kept"]),
            f"{summary['kept_fraction']:.3f}",
            f"{summary['val_miou']:.3f}",
            "yes" if summary["round"] == best else "",
        )
    out.print(rounds)


def outcome(report: LocalRunReport) -> str:
    """Which round the dataset is, and why the loop stopped."""
    active = report.ran.get("active")
    if active is None or "best_round" not in active.summary:
        return "exported: the active loop's dataset"
    chosen = active.summary.get("chosen") or f"round {active.summary['best_round']}"
    return (
        f"exported: {active.written} samples of {chosen}: the best validated candidate\n"
        f"stopped: {active.summary.get('stop_reason', 'unknown')}"
    )


def next_commands(config: str, report: LocalRunReport) -> str:
    """What to run next: browse the run in MLflow, compare its rounds, export elsewhere."""
    quoted = shlex.quote(config)
    uri = redact(report.tracking_uri)
    if uri.startswith(("http://", "https://")):
        browse = f"  open {uri} (the MLflow UI; run {report.run_id})"
    else:
        browse = f"  mlflow ui --backend-store-uri {shlex.quote(uri)}"
    lines = [
        "next:",
        browse,
        f"  freemask compare {report.run_id} --config {quoted}",
        f"  freemask export --config {quoted} --format voc --out DIR",
        f"  freemask run --config {quoted} --refresh   (a new dataset version)",
    ]
    return "\n".join(lines)
