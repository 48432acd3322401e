"""Progress shows everywhere: plain lines in a log (at most one every interval, and the last),
a rich bar on a terminal, labelled by what is counted, with the shard only when there are
several."""

from __future__ import annotations

import io

import pytest

from freemask.progress import PlainProgress, duration, label_of, progress_bar
from freemask.stage_output import Shard


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Log(io.StringIO):
    """A stream that is no terminal (a Kubeflow pod's log, CI)."""

    def isatty(self) -> bool:
        return False


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_a_line_at_most_every_interval_and_the_last() -> None:
    clock, log = Clock(), Log()
    progress = PlainProgress("generate: images", 120, log, interval=10.0, clock=clock)
    for _ in range(120):
        clock.now += 0.5  # two images a second: a minute in all
        progress.advance(1)
    progress.finish()
    lines = log.getvalue().splitlines()
    assert len(lines) == 60 // 10 + 1
    assert lines[0] == "generate: images 20/120 (16%), 2/s, ETA 50 s"
    assert lines[-1] == "generate: images 120/120 (100%), 2/s, 60 s"


def test_work_done_before_counts_in_the_total_but_not_the_rate() -> None:
    clock, log = Clock(), Log()
    progress = PlainProgress("refine: masks", 100, log, done=60, interval=10.0, clock=clock)
    for _ in range(10):
        clock.now += 1.0
        progress.advance(1)
    assert log.getvalue() == "refine: masks 70/100 (70%), 1/s, ETA 30 s\n"


def test_slow_work_reads_as_seconds_each() -> None:
    clock, log = Clock(), Log()
    progress = PlainProgress("train segmenter: steps", 600, log, interval=10.0, clock=clock)
    clock.now += 30.0
    progress.advance(1)
    assert log.getvalue() == "train segmenter: steps 1/600 (0%), 30 s each, ETA 4 h 59 min\n"


def test_everything_done_before_says_so() -> None:
    log = Log()
    PlainProgress("compose: scenes", 5, log, done=5, clock=Clock()).finish()
    assert log.getvalue() == "compose: scenes 5/5 (100%), all done before\n"


def test_progress_bar_writes_plain_lines_to_a_log_and_flushes_them() -> None:
    log = Log()
    with progress_bar("harmonize: scenes", 3, done=1, stream=log) as advance:
        advance(2)
    (line,) = log.getvalue().splitlines()
    assert line.startswith("harmonize: scenes 3/3 (100%)")


def test_progress_bar_prints_no_last_line_after_an_error() -> None:
    log = Log()
    with pytest.raises(ValueError), progress_bar("generate: images", 3, stream=log) as advance:
        advance(1)
        raise ValueError("a bad sample")
    assert log.getvalue() == ""


def test_a_terminal_gets_a_rich_bar() -> None:
    terminal = Terminal()
    with progress_bar("generate: images", 4, stream=terminal) as advance:
        advance(4)
    shown = terminal.getvalue()
    assert "generate: images" in shown and "4/4" in shown and "━" in shown


@pytest.mark.parametrize(
    ("shard", "label"),
    [
        (None, "generate: images"),
        (Shard(0, 1), "generate: images"),
        (Shard(1, 4), "generate: images (shard 2/4)"),
    ],
)
def test_the_shard_shows_only_when_there_are_several(shard, label) -> None:
    assert label_of("generate: images", shard) == label


@pytest.mark.parametrize(
    ("seconds", "text"), [(38.2, "38 s"), (725, "12 min 5 s"), (7380, "2 h 3 min")]
)
def test_durations_read_at_a_glance(seconds: float, text: str) -> None:
    assert duration(seconds) == text
