"""Exclusive locks on local files (flock): a work directory held by one run, a tracking store
created once. The kernel releases a lock when its holder dies, so a killed run holds none (its
file stays, and the next holder removes it as it lets go)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from freemask.errors import FreemaskError

RUN_LOCK = ".freemask-run.lock"  # in a local work directory, while a run holds it


class BusyError(FreemaskError):
    """Another process holds the lock (a second run on one work directory)."""


@contextmanager
def exclusive_lock(path: Path, *, wait: bool = True, what: str = "") -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing, removed on release) for the
    block. Without ``wait``, a lock held elsewhere raises BusyError naming ``what`` and the
    holder's process id."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(handle, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(handle)
            raise BusyError(
                f"{what or path}: another freemask process (pid {holder}) holds it; wait for it "
                "to end, or use another work directory"
            ) from None
        # The holder before us removes the file as it lets go: a lock on the removed file
        # guards nothing, so take the one at the path now.
        if _same_file(handle, path):
            break
        os.close(handle)
    try:
        os.ftruncate(handle, 0)
        os.pwrite(handle, str(os.getpid()).encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(handle)  # releases the lock


def _same_file(handle: int, path: Path) -> bool:
    """True when the open ``handle`` is the file at ``path`` (not one removed since)."""
    try:
        return os.stat(path).st_ino == os.fstat(handle).st_ino
    except FileNotFoundError:
        return False


@contextmanager
def hold_workdir(workdir: str) -> Iterator[None]:
    """Hold a local work directory for one run; a second start on it is refused at once
    (BusyError), before it writes anything. Remote (gs://) work directories are not locked:
    their run record is written once (a generation precondition) instead."""
    if "://" in workdir and not workdir.startswith("file://"):
        yield
        return
    root = Path(workdir.removeprefix("file://")).expanduser()
    with exclusive_lock(root / RUN_LOCK, wait=False, what=f"work directory {root}"):
        yield
