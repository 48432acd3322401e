"""URI-addressed storage over local directories and ``gs://bucket/prefix``, with atomic writes.

A ``Storage`` is rooted at a URI; every object path given to it is relative to that root and
is refused if it would escape it. Readers never see a partial object: local writes go to a
hidden temporary file that is renamed into place, GCS writes (``freemask.gcs_storage``) are
single uploads. The image and array helpers below work on any storage.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any, Protocol

import numpy as np
from PIL import Image

from freemask.errors import StorageError, WriteConflictError
from freemask.gcs_storage import GCSStorage
from freemask.object_paths import TEMP_PREFIX, safe_relative_path

# Images larger than this are refused before they are decoded (decompression bombs).
MAX_IMAGE_PIXELS = 8192 * 8192
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


class Storage(Protocol):
    """Objects under one root URI. Implementations: LocalStorage, GCSStorage."""

    uri: str
    # True where appending to one object is cheap (a local file); an object store allows about
    # one write per second per object, so there each record is its own object.
    appends_cheaply: bool

    def read_bytes(self, path: str) -> bytes: ...

    def write_bytes(self, path: str, data: bytes, *, write_once: bool = False) -> None: ...

    def writer(
        self, path: str, *, write_once: bool = False
    ) -> contextlib.AbstractContextManager[IO[bytes]]: ...

    def append_lines(self, path: str, data: bytes) -> None: ...

    def update(self, path: str, change: Callable[[bytes | None], bytes | None]) -> bytes | None:
        """Read-modify-write ``path`` atomically: ``change`` gets the current bytes (None when
        absent) and returns the new ones (None: leave it); a concurrent writer makes it run again
        on what that writer wrote. Returns what ``path`` holds afterwards."""
        ...

    def exists(self, path: str) -> bool: ...

    def list(self, prefix: str = "") -> list[str]: ...

    def delete(self, path: str) -> None: ...

    def child(self, path: str) -> Storage: ...

    def remove_temporary(self) -> int: ...


def _fsync_directory(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (its entry survives a power loss)."""
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalStorage:
    """Storage in a local directory. Writes are temp file + fsync + rename."""

    appends_cheaply = True

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def _target(self, path: str) -> Path:
        """The file for ``path``; refused if a symbolic link leads it outside the root."""
        target = self.root / safe_relative_path(path)
        if not target.resolve().is_relative_to(self.root):
            raise StorageError(
                f"{target}: resolves to {target.resolve()}, outside {self.root} "
                "(a symbolic link); refusing to follow it"
            )
        return target

    def read_bytes(self, path: str) -> bytes:
        target = self._target(path)
        try:
            return target.read_bytes()
        except FileNotFoundError:
            raise StorageError(f"{target}: not found") from None
        except IsADirectoryError:
            raise StorageError(f"{target}: is a directory, expected a file") from None
        except NotADirectoryError:
            raise StorageError(f"{target}: not found ({self.root} is not a directory)") from None
        except PermissionError:
            raise StorageError(f"{target}: permission denied") from None

    @contextlib.contextmanager
    def writer(self, path: str, *, write_once: bool = False) -> Iterator[IO[bytes]]:
        """Yield a file to write; it appears at ``path`` only if the block finishes."""
        target = self._target(path)
        if write_once and target.exists():
            raise WriteConflictError(f"{target}: already exists and is write-once")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise StorageError(f"{target.parent}: exists and is not a directory") from None
        # The writer's pid in the name tells remove_temporary which files are left over.
        handle, temp_name = tempfile.mkstemp(
            prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=target.parent
        )
        temp = Path(temp_name)
        try:
            with os.fdopen(handle, "wb") as stream:
                yield stream
                stream.flush()
                os.fsync(stream.fileno())
            if write_once:
                # link() fails if the target exists, so two writers cannot both win.
                try:
                    os.link(temp, target)
                except FileExistsError:
                    raise WriteConflictError(
                        f"{target}: already exists and is write-once"
                    ) from None
            else:
                os.replace(temp, target)
            _fsync_directory(target.parent)
        finally:
            temp.unlink(missing_ok=True)

    def write_bytes(self, path: str, data: bytes, *, write_once: bool = False) -> None:
        with self.writer(path, write_once=write_once) as stream:
            stream.write(data)

    def append_lines(self, path: str, data: bytes) -> None:
        """Append newline-terminated lines under an exclusive lock.

        A torn last line left by an interrupted append (no trailing newline) is cut first,
        so a reader sees whole lines only.
        """
        if not data.endswith(b"\n"):
            raise StorageError(f"{path}: appended data must end with a newline")
        target = self._target(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        created = not target.exists()
        with open(target, "ab+") as stream:
            fcntl.flock(stream.fileno(), fcntl.LOCK_EX)
            size = stream.seek(0, os.SEEK_END)
            if size:
                stream.seek(size - 1)
                if stream.read(1) != b"\n":
                    stream.seek(0)
                    stream.truncate(stream.read().rfind(b"\n") + 1)
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        if created:
            _fsync_directory(target.parent)

    def update(self, path: str, change: Callable[[bytes | None], bytes | None]) -> bytes | None:
        """Read-modify-write under an exclusive lock on the object's folder (flock), the new
        bytes renamed into place as ``write_bytes`` does."""
        target = self._target(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        folder = os.open(target.parent, os.O_RDONLY)
        try:
            fcntl.flock(folder, fcntl.LOCK_EX)
            current = target.read_bytes() if target.is_file() else None
            new = change(current)
            if new is None:
                return current
            self.write_bytes(path, new)
            return new
        finally:
            os.close(folder)  # releases the lock

    def exists(self, path: str) -> bool:
        return self._target(path).is_file()

    def list(self, prefix: str = "") -> list[str]:
        """Relative paths of all objects under ``prefix``, sorted; temporary files are hidden."""
        base = self._target(prefix) if prefix else self.root
        if base.is_file():
            return [safe_relative_path(prefix)]
        if not base.is_dir():
            return []
        return sorted(
            file.relative_to(self.root).as_posix()
            for file in base.rglob("*")
            if file.is_file() and not file.name.startswith(TEMP_PREFIX)
        )

    def delete(self, path: str) -> None:
        self._target(path).unlink(missing_ok=True)

    def remove_temporary(self) -> int:
        """Delete temporary files left by killed writers (their process is gone); return how many."""
        removed = 0
        for file in self.root.rglob(f"{TEMP_PREFIX}*") if self.root.is_dir() else []:
            pid = file.name[len(TEMP_PREFIX) :].partition("-")[0]
            if not (pid.isdigit() and _process_alive(int(pid))):
                file.unlink(missing_ok=True)
                removed += 1
        return removed

    def child(self, path: str) -> LocalStorage:
        return LocalStorage(self._target(path))

    def local_path(self, path: str) -> Path:
        """The file system path of an object (for tools that need a real file)."""
        return self._target(path)


def replace_folder(folder: Path, write: Callable[[Path], None]) -> None:
    """Replace a local ``folder`` whole: ``write`` fills a sibling ``.partial`` folder; the old
    folder is renamed aside (``.old``), the new one renamed in, then the old one deleted. A kill
    never leaves a mix of old and new files under ``folder``; between the two renames the
    folder is briefly absent, both versions whole beside it. When ``write`` raises, the partial
    folder is removed and ``folder`` left as it was."""
    partial = folder.with_name(folder.name + ".partial")
    retired = folder.with_name(folder.name + ".old")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        write(partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(retired, ignore_errors=True)
    if folder.exists():
        os.replace(folder, retired)
    os.replace(partial, folder)
    shutil.rmtree(retired, ignore_errors=True)


def open_storage(uri: str | Path, *, gcs_client: Any | None = None) -> Storage:
    """Return the storage for a local directory (path or ``file://``) or a ``gs://`` prefix."""
    text = str(uri)
    if text.startswith("gs://"):
        return GCSStorage(text, client=gcs_client)
    if "://" in text and not text.startswith("file://"):
        raise StorageError(
            f"{text!r}: unsupported URI scheme; expected a local path, file:// or gs://"
        )
    return LocalStorage(text.removeprefix("file://"))


def read_json(storage: Storage, path: str) -> Any:
    """Read and parse a JSON object, naming the object on a parse error."""
    data = storage.read_bytes(path)
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise StorageError(
            f"{storage.uri}/{path}: not UTF-8 text (byte {exc.start}); expected JSON"
        ) from None
    except json.JSONDecodeError as exc:
        raise StorageError(
            f"{storage.uri}/{path}: not valid JSON ({exc.msg} at line {exc.lineno})"
        ) from None


def read_json_object(storage: Storage, path: str, required: tuple[str, ...] = ()) -> dict:
    """Read a JSON object and check it has the ``required`` keys, naming the file and key."""
    value = read_json(storage, path)
    if not isinstance(value, dict):
        raise StorageError(
            f"{storage.uri}/{path}: expected a JSON object, got {type(value).__name__}"
        )
    missing = [key for key in required if key not in value]
    if missing:
        raise StorageError(f"{storage.uri}/{path}: missing key(s) {missing}")
    return value


def write_json(storage: Storage, path: str, value: Any, *, write_once: bool = False) -> None:
    """Write ``value`` as indented JSON, atomically."""
    payload = json.dumps(value, indent=2, sort_keys=True).encode() + b"\n"
    storage.write_bytes(path, payload, write_once=write_once)


def read_image(storage: Storage, path: str, mode: str | None = None) -> np.ndarray:
    """Read a PNG or JPEG as a numpy array; ``mode`` converts (e.g. 'RGB'), None keeps the file's."""
    data = storage.read_bytes(path)
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert(mode) if mode else image.copy())
    except Image.DecompressionBombError:
        raise StorageError(
            f"{storage.uri}/{path}: image is larger than {MAX_IMAGE_PIXELS} pixels; refused "
            "(a decompression bomb, or an image to downscale first)"
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise StorageError(f"{storage.uri}/{path}: not a readable image ({exc})") from None


def encode_image(array: np.ndarray, path: str, palette: list[int] | None = None) -> bytes:
    """Encode an HxW or HxWx3 uint8 array as PNG or JPEG (by ``path``'s suffix); an HxW uint16
    array (a 16-bit label map) as a 16-bit greyscale PNG, which ``read_image`` reads back as
    uint16."""
    suffix = PurePosixPath(path).suffix.lower()
    if array.dtype == np.uint16:
        if array.ndim != 2 or palette is not None or suffix != ".png":
            raise StorageError(
                f"{path}: a uint16 array is written as a 16-bit greyscale PNG only (HxW, no "
                f"palette, .png); got shape {array.shape}, suffix {suffix!r}"
            )
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(array, dtype="<u2")).save(buffer, format="PNG")
        return buffer.getvalue()
    if array.dtype != np.uint8:
        raise StorageError(
            f"{path}: image array has dtype {array.dtype}, expected uint8 (or uint16 labels)"
        )
    if palette is not None:
        if array.ndim != 2:
            raise StorageError(
                f"{path}: palette image needs an HxW index array, got shape {array.shape}"
            )
        height, width = array.shape
        image = Image.frombytes("P", (width, height), np.ascontiguousarray(array).tobytes())
        image.putpalette(palette)
    else:
        image = Image.fromarray(array)
    buffer = io.BytesIO()
    if suffix == ".png":
        image.save(buffer, format="PNG")
    elif suffix in (".jpg", ".jpeg"):
        image.save(buffer, format="JPEG", quality=95)
    else:
        raise StorageError(
            f"{path}: unsupported image suffix {suffix!r}; expected .png, .jpg or .jpeg"
        )
    return buffer.getvalue()


def write_image(
    storage: Storage, path: str, array: np.ndarray, palette: list[int] | None = None
) -> None:
    """Write an image atomically; with ``palette`` an HxW index array becomes a palette PNG."""
    storage.write_bytes(path, encode_image(array, path, palette))


def read_array(storage: Storage, path: str) -> np.ndarray:
    """Read a ``.npy`` array (object arrays refused: no pickle)."""
    data = storage.read_bytes(path)
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        reason = str(exc) or type(exc).__name__
        raise StorageError(f"{storage.uri}/{path}: not a readable .npy array ({reason})") from None


def write_array(storage: Storage, path: str, array: np.ndarray) -> None:
    """Write a ``.npy`` array atomically."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    storage.write_bytes(path, buffer.getvalue())


def copy(source: Storage, source_path: str, target: Storage, target_path: str) -> None:
    """Copy one object between any two storages."""
    target.write_bytes(target_path, source.read_bytes(source_path))
