"""``builtin:<name>`` model ids: the folders that packages register, found without torch.

Packages that ship a trained model folder register it under the ``freemask.model_folders``
entry-point group (name: the id after ``builtin:``, value: a function returning the folder), so
a ``builtin:`` id resolves (e.g. ``builtin:toy-sd``) without importing the package that ships
it, and a machine without torch (the KFP client) can still read a shipped model's files.
"""

from __future__ import annotations

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
