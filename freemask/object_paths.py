"""Object paths inside a storage prefix: the one rule every storage applies before any access."""

from __future__ import annotations

from pathlib import PurePosixPath

from freemask.errors import StorageError

# Temporary objects (a write in progress) start with this and are hidden from listings.
TEMP_PREFIX = ".freemask-tmp-"


def safe_relative_path(path: str) -> str:
    """Return ``path`` normalised, or raise StorageError if it could escape its prefix.

    Refused: empty paths, absolute paths, URIs (``gs://``, ``file:``), backslashes and ``..``.
    """
    if not isinstance(path, str) or not path.strip():
        raise StorageError(
            f"object path {path!r} is empty; expected a relative path like 'images/x.png'"
        )
    if "://" in path or path.startswith(("file:", "gs:")):
        raise StorageError(f"object path {path!r} is a URI; expected a path relative to its prefix")
    if path.startswith("/") or "\\" in path or (len(path) > 1 and path[1] == ":"):
        raise StorageError(
            f"object path {path!r} is absolute; expected a path relative to its prefix"
        )
    parts = PurePosixPath(path).parts
    if ".." in parts:
        raise StorageError(f"object path {path!r} contains '..'; expected a path inside its prefix")
    return str(PurePosixPath(*[part for part in parts if part != "."]))
