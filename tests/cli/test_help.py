"""``--help`` shows every option's default: typer's own for a value, the text written in the help
for the rest (``[default: <workdir>/generate]``), which rich markup must not swallow."""

from __future__ import annotations

import re

import pytest
import typer

from freemask.cli import main
from freemask.cli.main import app


def commands(command, path=()):
    """Every command of the CLI as (its argv path, the click command)."""
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from commands(sub, (*path, name))
    else:
        yield path, command


COMMANDS = list(commands(typer.main.get_command(app)))
OPTION_ROW = re.compile(r"^│\s+(?:\*\s+)?(--[\w-]+)")


@pytest.mark.parametrize("path", [path for path, _ in COMMANDS], ids=" ".join)
def test_every_option_shows_its_default_or_that_it_is_required(path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "3000")  # one row per option
    assert main([*path, "--help"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if OPTION_ROW.match(line)]
    assert rows
    silent = [
        OPTION_ROW.match(row).group(1)
        for row in rows
        if not re.search(r"\[default: |\[required\]|\(default: ", row)
        and OPTION_ROW.match(row).group(1) != "--help"
    ]
    assert silent == [], f"{' '.join(path)}: options with no default shown: {silent}"


def test_a_written_default_is_shown_as_written(capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "3000")
    assert main(["generate", "--help"]) == 0
    shown = capsys.readouterr().out
    assert "Output prefix [default: <workdir>/generate]." in shown
    assert "[default: 0/1]" in shown  # typer's own, beside it
