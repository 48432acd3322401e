"""``freemask models``: copy a run's models to a bucket so that pods load them without the hub.

``freemask models mirror --config C --to gs://bucket/models`` copies every model the config
names (see ``freemask.model_mirror``), then prints the config values that point at the mirror;
``--write-config FILE`` writes the whole config with them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml

from freemask.cli.options import ConfigOption, out

models_app = typer.Typer(
    help="Models: mirror a run's models to a bucket or folder.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add the ``models`` commands to the ``freemask`` app."""
    app.add_typer(models_app, name="models")


@models_app.command("mirror")
def mirror(
    config: ConfigOption,
    to: Annotated[
        str, typer.Option("--to", help="Where to mirror: gs://bucket/prefix or a local folder.")
    ],
    write_config: Annotated[
        Path | None,
        typer.Option(
            "--write-config",
            help="Write the config pointing at the mirror here [default: print the fields to "
            "set instead].",
        ),
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            help="Mirror only this field (repeatable), e.g. generate.model_id [default: every "
            "model field the config names].",
        ),
    ] = None,
) -> None:
    """Copy every model the run uses to TO (safetensors only, sha256 manifest; resumable)."""
    from freemask.config import load_config
    from freemask.model_mirror import mirror_models, mirror_overlay, write_mirrored_config

    results = mirror_models(load_config(config), to, only=only)
    for result in results:
        if result.uri is None or result.note:
            out.print(
                f"{result.field.name}: {result.value} -> {result.uri or 'kept'} ({result.note})",
                soft_wrap=True,
            )
        else:
            out.print(
                f"{result.field.name}: {result.value} -> {result.uri} "
                f"({result.uploaded} uploaded, {result.skipped} already there)",
                soft_wrap=True,
            )
    overlay = mirror_overlay(results)
    if write_config is not None:
        write_mirrored_config(config, overlay, write_config)
        out.print(f"config pointing at the mirror: {write_config}", soft_wrap=True)
    elif overlay:
        # Plain YAML (no console wrapping), to paste into the run config.
        sys.stdout.write("# set these in the run config:\n")
        sys.stdout.write(yaml.safe_dump(overlay, sort_keys=False, width=1000))
