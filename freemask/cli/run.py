"""``freemask run``: the whole pipeline in this process (the local front end), with its tables."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from freemask.cli.options import ConfigOption, out
from freemask.config import RunConfig, load_config
from freemask.redact import redact


def register(app: typer.Typer) -> None:
    """Add ``run`` to the ``freemask`` app."""
    app.command("run")(run)


def run(
    config: ConfigOption,
    refresh: Annotated[
        bool,
        typer.Option(
            "--refresh",
            help="Draw a new dataset version under <workdir>/versions/ (resuming one a kill "
            "left unfinished), then point <workdir>/LATEST at it and apply versions.keep.",
        ),
    ] = False,
) -> None:
    """Run the whole pipeline in this process on local defaults (no cluster needed)."""
    from freemask.file_lock import hold_workdir
    from freemask.local.runner import run_local
    from freemask.storage import open_storage
    from freemask.versions import REFRESHED, local_refresh, version_storage

    run_config: RunConfig = load_config(config)
    version = None
    # One run per work directory: a second start is refused before it writes anything.
    with hold_workdir(run_config.workdir):
        if refresh:
            top = open_storage(run_config.workdir)
            run_config, version = local_refresh(run_config)
        report = run_local(run_config)
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
    rounds = Table(title="active-learning rounds")
    for column in ("round", "kept", "kept fraction", "validation mIoU"):
        rounds.add_column(column, justify="right")
    for summary in report.report.get("rounds", []):
        rounds.add_row(
            str(summary["round"]),
            str(summary["kept"]),
            f"{summary['kept_fraction']:.3f}",
            f"{summary['val_miou']:.3f}",
        )
    out.print(rounds)
    out.print(
        f"workdir: {report.workdir}\n"
        f"exports: {report.workdir}/export/coco, {report.workdir}/export/voc\n"
        f"report: {report.workdir}/report ({len(report.report.get('files', []))} files)\n"
        f"MLflow: {redact(report.tracking_uri)} (run {report.run_id})"
    )
    if published:
        out.print(published)
