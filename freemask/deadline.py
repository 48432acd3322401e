"""One call bounded in wall-clock time, whatever it blocks on: a socket's own timeout covers each
operation, not a name lookup or a credential search, which can hang far longer on a machine
without DNS or metadata server."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def within(seconds: float, call: Callable[[], Any]) -> tuple[bool, Any]:
    """Run ``call`` in a daemon thread for at most ``seconds``: (True, its result, or the
    exception it raised) when it ends in time, else (False, None), the thread left behind."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as exc:  # the caller tells every failure apart
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    return (True, outcome[0]) if outcome else (False, None)
