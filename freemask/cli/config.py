"""``freemask config``: check a run config, show it resolved, and print the reference of every
field."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml

from freemask.cli.options import out
from freemask.config import load_config
from freemask.errors import FreemaskError

config_app = typer.Typer(
    help="Check and show run configs; print the reference of every field.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add the ``config`` commands to the ``freemask`` app."""
    config_app.command("validate")(config_validate)
    config_app.command("show")(config_show)
    config_app.command("reference")(config_reference)
    app.add_typer(config_app, name="config")


def config_validate(
    file: Annotated[Path, typer.Argument(help="Run config YAML.")],
    offline: Annotated[
        bool,
        typer.Option(
            "--offline",
            help="Check the file alone: probe neither the tracking server nor the work "
            "directory's bucket [default: probe both, 5 s each at most].",
        ),
    ] = False,
) -> None:
    """Validate a config file and what a run would meet in its first seconds (classes against
    the relation table and the models' labels, tracking and storage reachable); print one
    line per problem."""
    from freemask.preflight import preflight

    config = load_config(file)
    notes = preflight(config, str(file), reach=not offline)
    out.print(f"ok: {file} ({len(config.classes)} classes, workdir {config.workdir})")
    for note in notes:
        out.print(f"  not checked: {note}", markup=False, highlight=False, soft_wrap=True)


def config_show(file: Annotated[Path, typer.Argument(help="Run config YAML.")]) -> None:
    """Print the resolved config (defaults and environment overrides applied) as YAML."""
    config = load_config(file)
    sys.stdout.write(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))


def config_reference(
    out_file: Annotated[
        Path | None,
        typer.Option("--out", help="Write the Markdown to this file [default: print it]."),
    ] = None,
) -> None:
    """Print the configuration reference (docs/configuration.md): every field of every section
    with its type, default, bounds and description, rendered from the config models."""
    from freemask.config_reference import render_reference

    text = render_reference()
    if out_file is None:
        sys.stdout.write(text)
        return
    try:
        out_file.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise FreemaskError(f"{out_file}: cannot write the reference ({exc.strerror})") from None
    out.print(f"wrote {out_file}", markup=False, highlight=False)
