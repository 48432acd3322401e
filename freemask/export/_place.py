"""How an export is put in place: checked first, built beside its target, replacing it whole."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from freemask.errors import ExportError
from freemask.export._coco import export_coco
from freemask.export._common import class_ids
from freemask.export._hf import export_hf
from freemask.export._voc import VOC_ROOT, export_voc
from freemask.storage import LocalStorage, Storage, replace_folder

FORMATS = ("coco", "voc", "hf")
# What each format writes at the top of its folder (and, for VOC, what its exports held before
# they moved under VOCdevkit/: an earlier export is replaced, not refused), and the files a
# reader starts from (an object store gets those last).
LAYOUTS = {
    "coco": {"annotations", "images"},
    "voc": {"VOCdevkit"}
    | {"ImageSets", "JPEGImages", "SegmentationClass", "SegmentationObject", "labels.txt"},
    "hf": {"data", "README.md"},
}
INDEXES = {
    "coco": ("annotations/",),
    "voc": (f"{VOC_ROOT}/ImageSets/", f"{VOC_ROOT}/labels.txt"),
    "hf": ("README.md",),
}
UPLOAD_THREADS = 16


def export_dataset(
    source: Storage, target: Storage, classes: list[str], fmt: str, **options
) -> dict:
    """Export the manifest under ``source`` into ``target`` as ``fmt`` (one of ``FORMATS``:
    'coco', 'voc', 'hf').

    Every record is checked against its files before anything is written
    (``freemask.record_checks``), and the export is built beside ``target`` and put in its place
    only once whole, so a refused export leaves ``target`` as it was, an earlier export included.
    A local folder is renamed into place. Where no folder can be renamed (an object store, a
    mount point, a folder whose parent is read-only) the export is built in a local temporary
    folder, then copied over ``target`` file by file (each file whole), its index files last,
    and the files of an earlier export that the new one lacks deleted. Raises ExportError when
    ``target`` holds other files than a ``fmt`` export.
    """
    # Looked up here, not at import: what a format needs (OpenCV, datasets) loads with it.
    exporters: dict[str, Callable[..., dict]] = {
        "coco": export_coco,
        "voc": export_voc,
        "hf": export_hf,
    }
    if fmt not in exporters:
        raise ExportError(f"format {fmt!r} is not supported; expected one of {', '.join(FORMATS)}")
    class_ids(classes)
    _require_export_folder(target, fmt)

    def write(staging: Storage) -> dict:
        return exporters[fmt](source, staging, classes, **options)

    if isinstance(target, LocalStorage) and _renamable(target.root):
        return _replace_local(target, write)
    return _copy_over(target, fmt, write)


def _require_export_folder(target: Storage, fmt: str) -> None:
    """Refuse a target that an export would replace with loss: a file, or a folder holding
    other files than an earlier export of ``fmt``."""
    if isinstance(target, LocalStorage) and target.root.exists() and not target.root.is_dir():
        raise ExportError(f"{target.uri}: exists and is not a folder; export into a folder")
    others = sorted({name.split("/")[0] for name in target.list()} - LAYOUTS[fmt])
    if others:
        raise ExportError(
            f"{target.uri}: holds files that are no part of a {fmt} export "
            f"({', '.join(others[:3])}); export into an empty folder or over an earlier "
            f"{fmt} export"
        )


def _renamable(folder: Path) -> bool:
    """Whether ``folder`` can be replaced by renaming a sibling into its place."""
    existing = next(path for path in [folder.parent, *folder.parent.parents] if path.exists())
    return os.access(existing, os.W_OK) and not os.path.ismount(folder)


def _replace_local(target: LocalStorage, write: Callable[[Storage], dict]) -> dict:
    """Write the export into a sibling folder, then rename it into ``target``'s place."""
    counts: dict = {}

    def fill(partial: Path) -> None:
        partial.mkdir(parents=True)
        counts.update(write(LocalStorage(partial)))

    replace_folder(target.root, fill)
    return counts


def _copy_over(target: Storage, fmt: str, write: Callable[[Storage], dict]) -> dict:
    """Write the export into a local temporary folder, then copy it over ``target``: the index
    files last, then delete what an earlier export left that this one lacks."""
    with tempfile.TemporaryDirectory(prefix="freemask-export-") as temp:
        staging = LocalStorage(temp)
        counts = write(staging)
        names = staging.list()
        body = [name for name in names if not name.startswith(INDEXES[fmt])]
        index = [name for name in names if name.startswith(INDEXES[fmt])]

        def upload(name: str) -> None:
            target.write_bytes(name, staging.read_bytes(name))

        with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
            list(pool.map(upload, body))
            list(pool.map(upload, index))
            list(pool.map(target.delete, sorted(set(target.list()) - set(names))))
    return counts
