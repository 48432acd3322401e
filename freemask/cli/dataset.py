"""Commands on a stage's output as a dataset: validate its manifest, export it, join its shards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from freemask.cli.options import CheckOption, ConfigOption, load_run_config, out, report_check
from freemask.config import load_config
from freemask.errors import FreemaskError
from freemask.export import FORMATS, export_dataset
from freemask.records import MANIFEST, validate_manifest
from freemask.stage_output import join_shards
from freemask.storage import open_storage

manifest_app = typer.Typer(help="Inspect sample manifests.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add ``manifest``, ``export`` and ``join`` to the ``freemask`` app."""
    manifest_app.command("validate")(manifest_validate)
    app.add_typer(manifest_app, name="manifest")
    app.command("export")(export)
    app.command("join")(join)


def manifest_validate(
    inputs: Annotated[str, typer.Option("--in", help="Stage output prefix (local path or gs://).")],
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Run config, to check class ids.")
    ] = None,
) -> None:
    """Check a manifest against its files and sizes."""
    classes = load_config(config).classes if config else None
    problems = validate_manifest(open_storage(inputs), MANIFEST, classes)
    if problems:
        raise FreemaskError("\n".join(problems))
    out.print(f"ok: {inputs}/{MANIFEST}")


def export(
    config: ConfigOption,
    outputs: Annotated[str, typer.Option("--out", help="Where to write the dataset.")],
    inputs: Annotated[
        str | None,
        typer.Option(
            "--in",
            help="Stage output prefix holding manifest.jsonl [default: the active loop's output "
            "of the version <workdir>/LATEST names, else <workdir>/active].",
        ),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help=f"One of: {', '.join(FORMATS)}.")] = "coco",
    val_fraction: Annotated[
        float, typer.Option(help="VOC only: share of samples in val.txt.")
    ] = 0.1,
) -> None:
    """Export a manifest as a COCO or VOC dataset."""
    from freemask.versions import read_latest, version_storage

    run_config = load_config(config)
    if inputs is None:
        workdir = open_storage(run_config.workdir)
        latest = read_latest(workdir)
        source = version_storage(workdir, latest["version"]) if latest else workdir
        inputs = source.child("active").uri
    options = {"val_fraction": val_fraction} if fmt == "voc" else {}
    counts = export_dataset(
        open_storage(inputs), open_storage(outputs), run_config.classes, fmt, **options
    )
    out.print(f"exported {json.dumps(counts)} to {outputs}")


def join(
    stage: Annotated[str, typer.Option(help="Stage name (its prefix under the workdir).")],
    shards: Annotated[int, typer.Option(min=1, help="Number of shards the stage ran with.")],
    inputs: Annotated[
        str | None,
        typer.Option("--in", help="The sharded stage's prefix [default: <workdir>/<stage>]."),
    ] = None,
    config: Annotated[
        str | None, typer.Option("--config", "-c", help="Run config YAML (path or gs:// URI).")
    ] = None,
    check: CheckOption = False,
) -> None:
    """Merge a sharded stage's per-shard manifests into one manifest and _SUCCESS."""
    if inputs is None and config is None:
        raise FreemaskError("join needs --in or --config (to find <workdir>/<stage>)")
    run_config = load_run_config(config) if config is not None else None
    if inputs is None:
        inputs = f"{run_config.workdir.rstrip('/')}/{stage}"
    if check:
        if run_config is None:
            raise FreemaskError("join --check needs --config")
        return report_check("join", run_config, inputs=inputs)
    result = join_shards(open_storage(inputs), stage, shards)
    out.print(f"joined {shards} shards of {stage}: {result.written} samples")
