"""The ``freemask`` command line: ``main(argv)`` runs it and returns the exit code."""

from freemask.cli.main import app, main

__all__ = ["app", "main"]
