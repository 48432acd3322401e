"""URI-addressed storage over local directories and ``gs://bucket/prefix``, with atomic writes.

A ``Storage`` is rooted at a URI; every object path given to it is relative to that root and
is refused if it would escape it. Readers never see a partial object: local writes go to a
hidden temporary file that is renamed into place, GCS writes are single uploads.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any, Protocol

import numpy as np
from PIL import Image

from freemask.errors import StorageError, WriteConflictError

TEMP_PREFIX = ".freemask-tmp-"
APPEND_ATTEMPTS = 8


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


class Storage(Protocol):
    """Objects under one root URI. Implementations: LocalStorage, GCSStorage."""

    uri: str

    def read_bytes(self, path: str) -> bytes: ...

    def write_bytes(self, path: str, data: bytes, *, write_once: bool = False) -> None: ...

    def writer(
        self, path: str, *, write_once: bool = False
    ) -> contextlib.AbstractContextManager[IO[bytes]]: ...

    def append_lines(self, path: str, data: bytes) -> None: ...

    def exists(self, path: str) -> bool: ...

    def list(self, prefix: str = "") -> list[str]: ...

    def delete(self, path: str) -> None: ...

    def child(self, path: str) -> Storage: ...


class LocalStorage:
    """Storage in a local directory. Writes are temp file + fsync + rename."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def _target(self, path: str) -> Path:
        return self.root / safe_relative_path(path)

    def read_bytes(self, path: str) -> bytes:
        target = self._target(path)
        try:
            return target.read_bytes()
        except FileNotFoundError:
            raise StorageError(f"{target}: not found") from None
        except IsADirectoryError:
            raise StorageError(f"{target}: is a directory, expected a file") from None

    @contextlib.contextmanager
    def writer(self, path: str, *, write_once: bool = False) -> Iterator[IO[bytes]]:
        """Yield a file to write; it appears at ``path`` only if the block finishes."""
        target = self._target(path)
        if write_once and target.exists():
            raise WriteConflictError(f"{target}: already exists and is write-once")
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=target.parent)
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

    def child(self, path: str) -> LocalStorage:
        return LocalStorage(self._target(path))

    def local_path(self, path: str) -> Path:
        """The file system path of an object (for tools that need a real file)."""
        return self._target(path)


class GCSStorage:
    """Storage under ``gs://bucket/prefix`` through the google-cloud-storage client."""

    def __init__(self, uri: str, client: Any | None = None):
        bucket, _, prefix = uri.removeprefix("gs://").partition("/")
        if not uri.startswith("gs://") or not bucket:
            raise StorageError(f"{uri!r}: expected a URI like gs://bucket/prefix")
        self.prefix = prefix.strip("/")
        self.uri = f"gs://{bucket}/{self.prefix}".rstrip("/")
        self._client = client
        self._bucket_name = bucket

    @property
    def bucket(self) -> Any:
        if self._client is None:
            from google.cloud import storage as gcs

            self._client = gcs.Client()
        return self._client.bucket(self._bucket_name)

    def _name(self, path: str) -> str:
        relative = safe_relative_path(path)
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def read_bytes(self, path: str) -> bytes:
        from google.api_core.exceptions import NotFound

        try:
            return self.bucket.blob(self._name(path)).download_as_bytes()
        except NotFound:
            raise StorageError(f"gs://{self._bucket_name}/{self._name(path)}: not found") from None

    @contextlib.contextmanager
    def writer(self, path: str, *, write_once: bool = False) -> Iterator[IO[bytes]]:
        """Buffer the block's bytes and upload them once, only if the block finishes."""
        buffer = io.BytesIO()
        yield buffer
        self.write_bytes(path, buffer.getvalue(), write_once=write_once)

    def write_bytes(self, path: str, data: bytes, *, write_once: bool = False) -> None:
        """One upload: the object appears whole or not at all. Write-once uses generation 0."""
        from google.api_core.exceptions import PreconditionFailed

        name = self._name(path)
        blob = self.bucket.blob(name)
        try:
            blob.upload_from_string(data, if_generation_match=0 if write_once else None)
        except PreconditionFailed:
            raise WriteConflictError(
                f"gs://{self._bucket_name}/{name}: already exists and is write-once"
            ) from None

    def append_lines(self, path: str, data: bytes) -> None:
        """Append by composing the object with an uploaded part, guarded by its generation.

        Concurrent appenders retry on a generation mismatch, so no append is lost.
        """
        from google.api_core.exceptions import NotFound, PreconditionFailed

        name = self._name(path)
        bucket = self.bucket
        target = bucket.blob(name)
        directory, _, _ = name.rpartition("/")
        part = bucket.blob(f"{directory}/{TEMP_PREFIX}{uuid.uuid4().hex}".lstrip("/"))
        part.upload_from_string(data)
        try:
            for _attempt in range(APPEND_ATTEMPTS):
                try:
                    target.reload()
                except NotFound:
                    with contextlib.suppress(PreconditionFailed):
                        target.upload_from_string(data, if_generation_match=0)
                        return
                    continue
                with contextlib.suppress(PreconditionFailed):
                    target.compose([target, part], if_generation_match=target.generation)
                    return
            raise StorageError(
                f"gs://{self._bucket_name}/{name}: append lost {APPEND_ATTEMPTS} races; retry later"
            )
        finally:
            with contextlib.suppress(NotFound):
                part.delete()

    def exists(self, path: str) -> bool:
        return self.bucket.blob(self._name(path)).exists()

    def list(self, prefix: str = "") -> list[str]:
        """Relative paths of all objects under ``prefix``, sorted."""
        root = f"{self.prefix}/" if self.prefix else ""
        search = self._name(prefix) if prefix else root
        blobs = self.bucket.client.list_blobs(self._bucket_name, prefix=search)
        names = (
            blob.name[len(root) :]
            for blob in blobs
            if not PurePosixPath(blob.name).name.startswith(TEMP_PREFIX)
        )
        if prefix:
            wanted = safe_relative_path(prefix)
            names = (name for name in names if name == wanted or name.startswith(wanted + "/"))
        return sorted(names)

    def delete(self, path: str) -> None:
        from google.api_core.exceptions import NotFound

        with contextlib.suppress(NotFound):
            self.bucket.blob(self._name(path)).delete()

    def child(self, path: str) -> GCSStorage:
        return GCSStorage(f"gs://{self._bucket_name}/{self._name(path)}", client=self._client)


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
    try:
        return json.loads(storage.read_bytes(path))
    except json.JSONDecodeError as exc:
        raise StorageError(
            f"{storage.uri}/{path}: not valid JSON ({exc.msg} at line {exc.lineno})"
        ) from None


def write_json(storage: Storage, path: str, value: Any, *, write_once: bool = False) -> None:
    """Write ``value`` as indented JSON, atomically."""
    payload = json.dumps(value, indent=2, sort_keys=True).encode() + b"\n"
    storage.write_bytes(path, payload, write_once=write_once)


def read_image(storage: Storage, path: str, mode: str | None = None) -> np.ndarray:
    """Read a PNG or JPEG as a numpy array; ``mode`` converts (e.g. 'RGB'), None keeps the file's."""
    try:
        with Image.open(io.BytesIO(storage.read_bytes(path))) as image:
            return np.asarray(image.convert(mode) if mode else image.copy())
    except OSError as exc:
        raise StorageError(f"{storage.uri}/{path}: not a readable image ({exc})") from None


def encode_image(array: np.ndarray, path: str, palette: list[int] | None = None) -> bytes:
    """Encode an HxW or HxWx3 uint8 array as PNG or JPEG (by ``path``'s suffix)."""
    if array.dtype != np.uint8:
        raise StorageError(f"{path}: image array has dtype {array.dtype}, expected uint8")
    suffix = PurePosixPath(path).suffix.lower()
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
    try:
        return np.load(io.BytesIO(storage.read_bytes(path)), allow_pickle=False)
    except ValueError as exc:
        raise StorageError(f"{storage.uri}/{path}: not a readable .npy array ({exc})") from None


def write_array(storage: Storage, path: str, array: np.ndarray) -> None:
    """Write a ``.npy`` array atomically."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    storage.write_bytes(path, buffer.getvalue())


def copy(source: Storage, source_path: str, target: Storage, target_path: str) -> None:
    """Copy one object between any two storages."""
    target.write_bytes(target_path, source.read_bytes(source_path))
