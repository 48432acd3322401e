"""The ``freemask`` command line: the app, its command groups, and ``main(argv)``.

Exit codes: 0 success, 2 bad input (one line per problem, no traceback), 1 internal error,
130 interrupted.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
import traceback
from collections.abc import Iterator

import click
import typer
from rich.markup import escape

from freemask.cli import config, dataset, kubeflow, learning, models, run, stages, toyworld
from freemask.errors import FreemaskError
from freemask.redact import has_userinfo, redact

app = typer.Typer(
    name="freemask",
    help="Synthetic segmentation datasets with no manual labels (Free-Mask method).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for group in (config, dataset, stages, run, learning, kubeflow, toyworld, models):
    group.register(app)

INTERRUPTED = 130  # the exit code of a command stopped by Ctrl-C
# A bad-input message prints at most this many lines of at most this many characters each:
# whatever a message quotes from the input (a value, a list), the terminal gets a summary.
MAX_ERROR_LINES = 100
MAX_ERROR_LINE = 1000


def error_lines(message: str) -> list[str]:
    """The lines of a FreemaskError's message as the CLI prints them: each cut to
    ``MAX_ERROR_LINE`` characters, the first ``MAX_ERROR_LINES``, then how many more; any URI
    in them without its user and password."""
    every = redact(message).splitlines()
    lines = [
        line
        if len(line) <= MAX_ERROR_LINE
        else f"{line[:MAX_ERROR_LINE]}... ({len(line)} characters)"
        for line in every[:MAX_ERROR_LINES]
    ]
    if len(every) > MAX_ERROR_LINES:
        lines.append(f"... and {len(every) - MAX_ERROR_LINES} more lines")
    return lines


@contextlib.contextmanager
def runtime_overrides(argv: list[str]) -> Iterator[list[str]]:
    """Take ``--set section.field=value`` pairs out of ``argv`` (how pipeline tasks pass runtime
    parameters) and expose them as ``FREEMASK__`` variables while the command runs; an empty
    value sets nothing. The environment is restored afterwards."""
    rest: list[str] = []
    overrides: dict[str, str] = {}
    tokens = iter(argv)
    for token in tokens:
        if token != "--set":
            rest.append(token)
            continue
        pair = next(tokens, "")
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise FreemaskError(f"--set {redact(pair)!r}: expected section.field=value")
        if has_userinfo(value):
            # A command line is seen by every process listing and kept with a pipeline's run.
            raise FreemaskError(
                f"--set {key}={redact(value)}: a user and password do not belong on a command "
                "line; put the URI with them in the config or its FREEMASK__ environment "
                "variable, or set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
                "(pipeline tasks: tracking.credentials_secret)"
            )
        if value != "":
            overrides["FREEMASK__" + key.upper().replace(".", "__")] = value
    saved = {name: os.environ.get(name) for name in overrides}
    os.environ.update(overrides)
    try:
        yield rest
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _refused_credentials(exc: Exception) -> bool:
    """True for an expired or broken Google credential (found when a request is made)."""
    auth = sys.modules.get("google.auth.exceptions")
    return auth is not None and isinstance(exc, auth.GoogleAuthError)


def help_as_written(command: click.Command) -> click.Command:
    """``command`` and its subcommands with their help texts shown as written: typer renders
    help as rich markup (``rich_markup_mode="rich"``), where ``[default: <workdir>/x]`` reads as
    a style tag and vanishes, so square brackets are escaped (rich.markup.escape). A command's
    line in its group's list is the first paragraph of its help on one line (typer keeps the
    docstring's line breaks there)."""
    if command.help:
        command.help = escape(command.help)
        if command.short_help is None:
            first = inspect.cleandoc(command.help).split("\n\n", 1)[0]
            command.short_help = " ".join(first.split())
    for param in command.params:
        if getattr(param, "help", None):
            param.help = escape(param.help)
    for sub in getattr(command, "commands", {}).values():
        help_as_written(sub)
    return command


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv``; return the exit code (2 bad input, 1 internal error)."""
    command = help_as_written(typer.main.get_command(app))
    try:
        with runtime_overrides(sys.argv[1:] if argv is None else list(argv)) as rest:
            # Typer turns Ctrl-C into exit code 130 and returns it rather than raising.
            code = command.main(
                args=rest, prog_name="freemask", standalone_mode=False, obj={"run_cli": main}
            )
    except FreemaskError as exc:
        for line in error_lines(str(exc)):
            print(f"error: {line}", file=sys.stderr)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 1
    except typer.TyperException as exc:  # usage errors: unknown command, missing option, bad value
        exc.show()
        return 2
    except Exception as exc:
        if _refused_credentials(exc):
            reason = (str(exc).splitlines() or [type(exc).__name__])[0]
            print(
                f"error: Google Cloud refused the credentials ({reason}); renew them "
                "(gcloud auth application-default login) or set GOOGLE_APPLICATION_CREDENTIALS",
                file=sys.stderr,
            )
            return 2
        traceback.print_exc()
        print("internal error: the traceback above shows where; please report it", file=sys.stderr)
        return 1
    if code == INTERRUPTED:
        print("interrupted: run the same command again to continue", file=sys.stderr)
    return code if isinstance(code, int) else 0
