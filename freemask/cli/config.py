"""``freemask config``: check a run config and show it resolved."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml

from freemask.cli.options import out
from freemask.config import load_config

config_app = typer.Typer(help="Check and show run configs.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the ``config`` commands to the ``freemask`` app."""
    config_app.command("validate")(config_validate)
    config_app.command("show")(config_show)
    app.add_typer(config_app, name="config")


def config_validate(file: Annotated[Path, typer.Argument(help="Run config YAML.")]) -> None:
    """Validate a config file; print one line per problem."""
    config = load_config(file)
    out.print(f"ok: {file} ({len(config.classes)} classes, workdir {config.workdir})")


def config_show(file: Annotated[Path, typer.Argument(help="Run config YAML.")]) -> None:
    """Print the resolved config (defaults and environment overrides applied) as YAML."""
    config = load_config(file)
    sys.stdout.write(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
