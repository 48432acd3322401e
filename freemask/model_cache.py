"""Mirrored models (``gs://`` folders with a sha256 manifest) fetched once per machine.

``freemask models mirror`` (``freemask.model_mirror``) copies a run's models to a bucket, each
into its own folder with ``model-manifest.json`` (every file's sha256 and size) written last.
A ``gs://`` model id names such a folder (or a file inside one): ``resolve_model_source``
downloads it into the model cache (``FREEMASK_MODEL_CACHE``, default
``~/.cache/freemask/models``; on Kubernetes a cache volume) and returns the local path, which
the loaders pass to ``from_pretrained``. A download goes to a temporary folder, every file is
checked against the manifest, and only then is the folder renamed into place, so a partial or
corrupted download is never used; a lock file keeps two processes of one pod from downloading
the same model twice. The manifest's file names are checked before anything is created: each
must be a plain relative path inside the folder.

Every use checks the cached copy again: the folder keeps, per file, the (size, mtime_ns,
ctime_ns, inode) it had when its sha256 was verified (``.freemask-verified.json``); a file
whose values differ is hashed again, and a copy that no longer matches its manifest (edited in
place, even at the same size) is downloaded again instead of used.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from freemask.errors import FreemaskError, StorageError
from freemask.object_paths import safe_relative_path
from freemask.storage import Storage, open_storage

MANIFEST = "model-manifest.json"
# Inside a cached folder: each file's (size, mtime_ns, ctime_ns, inode) when it was verified.
VERIFIED = ".freemask-verified.json"
MANIFEST_FORMAT = 1
CACHE_ENV = "FREEMASK_MODEL_CACHE"
DEFAULT_CACHE = "~/.cache/freemask/models"
CHUNK = 8 * 1024 * 1024


class ModelIntegrityError(FreemaskError):
    """A mirrored model file differs from its manifest (corrupted, or changed after mirroring)."""


def model_cache_dir() -> Path:
    """The model cache: ``FREEMASK_MODEL_CACHE`` if set, else ``~/.cache/freemask/models``."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def safe_name(text: str) -> str:
    """``text`` as one folder name: runs of other characters than [A-Za-z0-9._-] become '--'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "--", text).strip("-.") or "model"


def file_sha256(path: Path) -> str:
    """The sha256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def build_manifest(files: dict[str, Path], source: str, revision: str) -> dict[str, Any]:
    """The manifest of ``files`` (relative path -> local file): sha256 and size of each."""
    return {
        "format": MANIFEST_FORMAT,
        "source": source,
        "revision": revision,
        "files": {
            name: {"sha256": file_sha256(path), "size": path.stat().st_size}
            for name, path in sorted(files.items())
        },
    }


def encode_manifest(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"


def read_manifest(store: Storage) -> tuple[dict[str, Any], bytes]:
    """The manifest of a mirrored folder and its bytes; FreemaskError when absent or malformed."""
    try:
        data = store.read_bytes(MANIFEST)
    except StorageError:
        raise FreemaskError(
            f"{store.uri}: not a mirrored model (no {MANIFEST}; an unfinished mirror has none); "
            "mirror it with `freemask models mirror --config C --to URI`"
        ) from None
    try:
        manifest = json.loads(data)
        files = manifest["files"]
        for name, entry in files.items():
            if not (isinstance(entry["sha256"], str) and isinstance(entry["size"], int)):
                raise TypeError(name)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FreemaskError(f"{store.uri}/{MANIFEST}: not a model manifest ({exc})") from None
    for name in files:
        problem = file_name_problem(name)
        if problem:
            raise FreemaskError(
                f"{store.uri}/{MANIFEST}: file name {name!r} {problem}; refusing the model "
                "(mirror it again with `freemask models mirror`)"
            )
    return manifest, data


def file_name_problem(name: str) -> str | None:
    """Why ``name`` (from a manifest) cannot name a file inside a model folder, or None: it
    must be a plain relative path (no '..', '.', empty part, absolute path or URI), of printable
    characters, and not one of the names the cache itself uses."""
    try:
        if safe_relative_path(name) != name:
            return "is not a plain relative path (an empty or '.' part)"
    except StorageError as exc:
        return str(exc).removeprefix(f"object path {name!r} ")
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in name):
        return "holds control characters"
    if name in (MANIFEST, VERIFIED):
        return "is a name the model cache uses itself"
    return None


def download_file(store: Storage, name: str, target: Path) -> None:
    """Copy one file of a local mirror to ``target`` (a bucket sends many at once:
    ``GCSStorage.download_files``)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copyfile(store.local_path(name), target)
    except FileNotFoundError:
        raise StorageError(f"{store.uri}/{name}: not found") from None


def verify_file(path: Path, entry: dict[str, Any], where: str) -> None:
    """Raise ModelIntegrityError naming ``where`` unless the file has the manifest's size and
    sha256."""
    size = path.stat().st_size
    if size != entry["size"]:
        raise ModelIntegrityError(
            f"{where}: {size} bytes, the manifest says {entry['size']} (corrupted or changed "
            "after mirroring); mirror the model again"
        )
    digest = file_sha256(path)
    if digest != entry["sha256"]:
        raise ModelIntegrityError(
            f"{where}: sha256 {digest[:16]}... does not match the manifest's "
            f"{entry['sha256'][:16]}... (corrupted or changed after mirroring); mirror the "
            "model again"
        )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _fingerprint(path: Path) -> list[int] | None:
    """A regular file's [size, mtime_ns, ctime_ns, inode]; None for anything else. An edit in
    place changes ctime even where mtime is set back."""
    try:
        found = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(found.st_mode):
        return None
    return [found.st_size, found.st_mtime_ns, found.st_ctime_ns, found.st_ino]


def _record_verified(folder: Path, fingerprints: dict[str, list[int] | None]) -> None:
    """Write the fingerprints that the files of ``folder`` had when their hashes matched."""
    temp = folder / f"{VERIFIED}.{os.getpid()}.tmp"
    temp.write_text(json.dumps({"files": fingerprints}, sort_keys=True))
    os.replace(temp, folder / VERIFIED)


def _verified(folder: Path, manifest: dict[str, Any]) -> bool:
    """True when ``folder`` holds every file of ``manifest`` with its sha256. A file whose
    fingerprint is the one recorded at verification is taken as verified; any other is hashed
    again (and, when it still matches, its new fingerprint recorded)."""
    if not (folder / MANIFEST).is_file():
        return False
    try:
        recorded = json.loads((folder / VERIFIED).read_bytes())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        recorded = {}
    if not isinstance(recorded, dict):
        recorded = {}
    fingerprints, rehashed = {}, False
    for name, entry in manifest["files"].items():
        fingerprints[name] = found = _fingerprint(folder / name)
        if found is None or found[0] != entry["size"]:
            return False
        if recorded.get(name) == found:
            continue
        if file_sha256(folder / name) != entry["sha256"]:
            return False
        rehashed = True
    if rehashed:
        _record_verified(folder, fingerprints)
    return True


def fetch_model(uri: str, cache_dir: Path | None = None) -> Path:
    """The local copy of the mirrored model folder at ``uri``, downloaded once into the cache.

    A cached copy is used when its manifest is the remote one (only the manifest is read) and
    its files still match it (``_verified``: hashed again where they changed since they were
    verified); otherwise every file is downloaded to a temporary folder, verified against the
    manifest and the folder renamed into place. Raises ModelIntegrityError naming a file that
    does not match, FreemaskError when ``uri`` is not a mirrored model or its manifest names a
    file outside the folder (before any folder is created).
    """
    store = open_storage(uri)
    manifest, data = read_manifest(store)
    root = cache_dir or model_cache_dir()
    digest = hashlib.sha256(data).hexdigest()[:16]
    final = root / f"{safe_name(store.uri.rstrip('/').rpartition('/')[2])}-{digest}"
    if _verified(final, manifest):
        return final
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f".{final.name}.lock"):
        if _verified(final, manifest):  # another process finished it while this one waited
            return final
        shutil.rmtree(final, ignore_errors=True)  # incomplete, or changed since it was verified
        # Under the lock no other process downloads this model: any download folder of it is
        # what a killed process left.
        for leftover in root.glob(f".download-{final.name}-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        temp = Path(tempfile.mkdtemp(prefix=f".download-{final.name}-", dir=root))
        try:
            if hasattr(store, "download_files"):  # a bucket: the files in flight together
                store.download_files({name: temp / name for name in manifest["files"]})
            else:
                for name in manifest["files"]:
                    download_file(store, name, temp / name)
            fingerprints = {}
            for name, entry in manifest["files"].items():
                fingerprints[name] = _fingerprint(temp / name)  # before the hash: stricter
                verify_file(temp / name, entry, f"{store.uri}/{name}")
            (temp / MANIFEST).write_bytes(data)
            _record_verified(temp, fingerprints)
            os.rename(temp, final)  # renaming the folder leaves its files' fingerprints
        finally:
            shutil.rmtree(temp, ignore_errors=True)
    return final


def resolve_model_source(value: str, field: str, *, required: bool = True) -> str:
    """Where a loader finds the model named by a config ``field``: a ``gs://`` mirrored folder,
    or a file inside one, as its local cached path; any other value as it is.

    A ``gs://`` value that is no mirror raises FreemaskError naming ``field`` when ``required``
    and is returned as it is otherwise (for fields that storage reads directly).
    """
    if not value.startswith("gs://"):
        return value
    store = open_storage(value)
    if store.exists(MANIFEST):
        return str(fetch_model(value))
    parent, _, name = value.rstrip("/").rpartition("/")
    if name and parent.count("/") >= 3 and open_storage(parent).exists(MANIFEST):
        folder = fetch_model(parent)
        if (folder / name).is_file():
            return str(folder / name)
    if required:
        raise FreemaskError(
            f"{field} {value!r}: not a mirrored model (no {MANIFEST} there); mirror it with "
            "`freemask models mirror --config C --to gs://bucket/prefix`"
        )
    return value
