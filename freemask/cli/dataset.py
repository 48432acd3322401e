"""Commands on a stage's output as a dataset: validate its manifest, export it, join its shards;
and bring labelled data in (``import``)."""

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
    """Add ``manifest``, ``export``, ``import`` and ``join`` to the ``freemask`` app."""
    manifest_app.command("validate")(manifest_validate)
    app.add_typer(manifest_app, name="manifest")
    app.command("export")(export)
    app.command("import")(import_labelled)
    app.command("join")(join)


def manifest_validate(
    inputs: Annotated[str, typer.Option("--in", help="Stage output prefix (local path or gs://).")],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="Run config, to check class ids [default: ids not checked]."
        ),
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
        float,
        typer.Option(help="VOC and hf: share of samples in val.txt (hf: the validation split)."),
    ] = 0.1,
) -> None:
    """Export a manifest as a COCO, VOC or Hugging Face datasets (hf) dataset."""
    from freemask.versions import read_latest, version_storage

    run_config = load_config(config)
    if inputs is None:
        workdir = open_storage(run_config.workdir)
        latest = read_latest(workdir)
        source = version_storage(workdir, latest["version"]) if latest else workdir
        inputs = source.child("active").uri
    options: dict = {"val_fraction": val_fraction} if fmt in ("voc", "hf") else {}
    if fmt == "hf":
        options["name"] = run_config.name
    counts = export_dataset(
        open_storage(inputs), open_storage(outputs), run_config.classes, fmt, **options
    )
    out.print(f"exported {json.dumps(counts)} to {outputs}")


def import_labelled(
    config: ConfigOption,
    inputs: Annotated[str, typer.Option("--in", help="The VOC or COCO folder (path or gs://).")],
    outputs: Annotated[
        str, typer.Option("--out", help="The freemask prefix to write (manifest.jsonl, ...).")
    ],
    fmt: Annotated[str, typer.Option("--format", help="voc or coco.")],
    mapping: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            help="SRC=DST: name the source's class SRC as the run's class DST (or background, "
            "ignore); repeatable [default: each class by its own name].",
        ),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(
            help="VOC: the ImageSets/Segmentation list [default: trainval, else every mask]; "
            "COCO: the annotations/instances*.json whose name holds it."
        ),
    ] = None,
) -> None:
    """Import a labelled VOC or COCO dataset as a freemask prefix (for segment.validation or
    freemask evaluate), its classes mapped onto the run's."""
    from freemask.dataset_import import import_dataset

    pairs = {}
    for item in mapping or []:
        src, sep, dst = item.partition("=")
        if not sep or not src.strip() or not dst.strip():
            raise FreemaskError(f"--map {item!r}: expected SRC=DST, e.g. --map tvmonitor=tv")
        pairs[src.strip()] = dst.strip()
    run_config = load_config(config)
    result = import_dataset(
        fmt, open_storage(inputs), open_storage(outputs), run_config.classes, pairs, split
    )
    out.print(
        f"imported {result.written} samples ({result.skipped} already there) from {inputs} "
        f"to {outputs}"
    )


def join(
    stage: Annotated[str, typer.Option(help="Stage name (its prefix under the workdir).")],
    shards: Annotated[int, typer.Option(min=1, help="Number of shards the stage ran with.")],
    inputs: Annotated[
        str | None,
        typer.Option("--in", help="The sharded stage's prefix [default: <workdir>/<stage>]."),
    ] = None,
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            "-c",
            help="Run config YAML (path or gs:// URI) [default: none; --in is then needed].",
        ),
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
