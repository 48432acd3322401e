"""Progress of a stage's work: a rich bar on a terminal; in a log (Kubeflow, CI, a file), a plain
line at most every ``PLAIN_INTERVAL`` seconds and one at the end, each flushed, e.g.
``generate: images 40/120 (33%), 2.1/s, ETA 38 s``.

A bar is labelled by what it counts (``generate: images``), with the shard only when the stage
runs in several (``generate: images (shard 2/4)``).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Protocol, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

PLAIN_INTERVAL = 10.0  # seconds between two plain progress lines in a log


class ShardLike(Protocol):
    index: int
    count: int


def label_of(description: str, shard: ShardLike | None = None) -> str:
    """``description``, with ``(shard i/n)`` (1-based) when the work is split in several."""
    if shard is None or shard.count <= 1:
        return description
    return f"{description} (shard {shard.index + 1}/{shard.count})"


@contextlib.contextmanager
def progress_bar(
    description: str,
    total: int,
    *,
    done: int = 0,
    shard: ShardLike | None = None,
    stream: TextIO | None = None,
) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)`` for ``total`` items of which ``done`` were done before (an earlier,
    interrupted run's): a rich bar when ``stream`` (stderr) is a terminal, else plain lines."""
    stream = sys.stderr if stream is None else stream
    label = label_of(description, shard)
    if not stream.isatty():
        plain = PlainProgress(label, total, stream, done=done)
        yield plain.advance
        plain.finish()  # not after an error: its own line says what happened
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=Console(file=stream),
        transient=False,
    )
    with progress:
        task = progress.add_task(label, total=total, completed=done)
        yield lambda count=1: progress.advance(task, count)


class PlainProgress:
    """Progress as lines for a log: ``label done/total (percent), rate/s, ETA``, at most one
    every ``interval`` seconds and one when ``finish`` is called. The rate counts this
    process's work only (``done``, what was done before, is left out of it)."""

    def __init__(
        self,
        label: str,
        total: int,
        stream: TextIO,
        *,
        done: int = 0,
        interval: float = PLAIN_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.label, self.total, self.stream = label, total, stream
        self.done = self.start_done = done
        self.interval, self.clock = interval, clock
        self.started = self.last_line = clock()

    def advance(self, count: int = 1) -> None:
        """Count ``count`` more items; print a line when ``interval`` has passed since the last."""
        self.done += count
        now = self.clock()
        if now - self.last_line >= self.interval:
            self._print(now)

    def finish(self) -> None:
        """Print the last line (how far it got, and in how long)."""
        self._print(self.clock(), last=True)

    def line(self, now: float, last: bool = False) -> str:
        """The progress line at time ``now``."""
        text = f"{self.label} {self.done}/{self.total}"
        if self.total > 0:
            text += f" ({100 * self.done // self.total}%)"
        elapsed = now - self.started
        worked = self.done - self.start_done
        rate = worked / elapsed if elapsed > 0 and worked > 0 else None
        if rate is not None:
            text += f", {rate:.3g}/s" if rate >= 0.1 else f", {1 / rate:.3g} s each"
        if last:
            if worked == 0 and self.done >= self.total:
                return text + ", all done before"
            return text + f", {duration(elapsed)}"
        if rate is not None and self.total > self.done:
            text += f", ETA {duration((self.total - self.done) / rate)}"
        return text

    def _print(self, now: float, last: bool = False) -> None:
        print(self.line(now, last), file=self.stream, flush=True)
        self.last_line = now


def duration(seconds: float) -> str:
    """``38 s``, ``12 min 5 s`` or ``2 h 3 min``."""
    seconds = round(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
