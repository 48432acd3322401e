"""``builtin:<name>`` model ids: the folders that packages register, found without torch.

Packages that ship a trained model folder register it under the ``freemask.model_folders``
entry-point group (name: the id after ``builtin:``, value: a function returning the folder), so
a ``builtin:`` id resolves (e.g. ``builtin:toy-sd``) without importing the package that ships
it, and a machine without torch (the KFP client) can still read a shipped model's files.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path

from freemask.errors import FreemaskError

BUILTIN_PREFIX = "builtin:"
MODEL_FOLDER_ENTRY_POINTS = "freemask.model_folders"


def builtin_model_folder(model_id: str, field: str = "generate.model_id") -> Path:
    """The folder registered for ``model_id`` (``builtin:<name>``) under the
    ``freemask.model_folders`` entry points; a clear error names ``field`` and the registered
    ones."""
    name = model_id.removeprefix(BUILTIN_PREFIX)
    registered = {entry.name: entry for entry in entry_points(group=MODEL_FOLDER_ENTRY_POINTS)}
    if name not in registered:
        known = ", ".join(sorted(BUILTIN_PREFIX + known for known in [*registered, "tiny-sd"]))
        raise FreemaskError(f"{field} {model_id!r}: no such builtin model ({known})")
    return Path(registered[name].load()())


def builtin_weights_digest(model_id: str) -> str | None:
    """A digest of the weights a registered ``builtin:`` id ships (every ``*.safetensors`` file
    under its folder, by relative path and bytes); None for any other id. A new release may
    ship new weights under the same id: stage outputs record this digest so that outputs made
    with other weights are never resumed with these (``stage_output.check_settings``)."""
    if not model_id.startswith(BUILTIN_PREFIX):
        return None
    try:
        folder = builtin_model_folder(model_id)
    except FreemaskError:
        return None  # an architecture built from its config (no shipped weights)
    files = sorted(folder.rglob("*.safetensors"))
    if not files:
        return None
    stamp = tuple((str(path), path.stat().st_size, path.stat().st_mtime_ns) for path in files)
    return _digest(folder, stamp)


@cache
def _digest(folder: Path, stamp: tuple[tuple[str, int, int], ...]) -> str:
    """The digest of the files ``stamp`` lists (cached while their sizes and times hold)."""
    digest = hashlib.sha256()
    for path, _, _ in stamp:
        digest.update(str(Path(path).relative_to(folder)).encode() + b"\0")
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:12]
