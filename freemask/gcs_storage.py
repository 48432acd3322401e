"""Storage under ``gs://bucket/prefix`` through the google-cloud-storage client.

Every write is one upload, so an object appears whole or not at all; write-once objects use the
generation precondition ``if_generation_match=0``. ``freemask.storage.open_storage`` returns
this for a ``gs://`` URI.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import IO, Any

from freemask.errors import StorageError, WriteConflictError
from freemask.object_paths import TEMP_PREFIX, safe_relative_path

APPEND_ATTEMPTS = 8
# Objects in flight at once when many files move (model folders): threads, as the work waits on
# the network and the threads share one client.
TRANSFER_WORKERS = 8
# A temporary object older than this is left over from a killed writer.
STALE_TEMP_SECONDS = 3600


class GCSStorage:
    """Storage under ``gs://bucket/prefix`` through the google-cloud-storage client."""

    appends_cheaply = False

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
            from google.auth.exceptions import DefaultCredentialsError
            from google.cloud import storage as gcs

            try:
                self._client = gcs.Client()
            except (DefaultCredentialsError, ValueError, OSError) as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise StorageError(
                    f"{self.uri}: no usable Google Cloud credentials ({first}); set "
                    "GOOGLE_APPLICATION_CREDENTIALS or run `gcloud auth application-default login`"
                ) from None
        return self._client.bucket(self._bucket_name)

    def _name(self, path: str) -> str:
        relative = safe_relative_path(path)
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def blob(self, path: str) -> Any:
        """The client's Blob for ``path``, for streaming large files (model weights)."""
        return self.bucket.blob(self._name(path))

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

    def update(self, path: str, change: Callable[[bytes | None], bytes | None]) -> bytes | None:
        """Read-modify-write guarded by the object's generation (``if_generation_match``; 0
        when absent): a concurrent writer's change makes the upload fail, and ``change`` runs
        again on what that writer wrote."""
        from google.api_core.exceptions import NotFound, PreconditionFailed

        name = self._name(path)
        for _attempt in range(APPEND_ATTEMPTS):
            blob = self.bucket.blob(name)
            try:
                current = blob.download_as_bytes()  # also takes the generation it read
                generation = blob.generation
            except NotFound:
                current, generation = None, 0
            new = change(current)
            if new is None:
                return current
            with contextlib.suppress(PreconditionFailed):
                blob.upload_from_string(new, if_generation_match=generation)
                return new
        raise StorageError(
            f"gs://{self._bucket_name}/{name}: update lost {APPEND_ATTEMPTS} races; retry later"
        )

    def upload_files(
        self, files: Mapping[str, Path], metadata: Mapping[str, Mapping[str, str]] | None = None
    ) -> None:
        """Upload local files (path under this prefix -> file) concurrently, each object in
        one upload (whole or absent), with ``metadata`` on the objects it names. Runs on
        google-cloud-storage's ``transfer_manager.upload_many`` (a pool of threads; each pair's
        outcome is returned, an exception in place of a failed one). Raises StorageError
        naming the first file that failed, after every upload has ended."""
        from google.cloud.storage import transfer_manager

        pairs = []
        for path, local in files.items():
            blob = self.bucket.blob(self._name(path))
            if metadata and path in metadata:
                blob.metadata = dict(metadata[path])
            pairs.append((str(local), blob))
        outcomes = transfer_manager.upload_many(
            pairs, worker_type=transfer_manager.THREAD, max_workers=TRANSFER_WORKERS
        )
        for path, outcome in zip(files, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                first = (str(outcome).splitlines() or [type(outcome).__name__])[0][:200]
                raise StorageError(
                    f"gs://{self._bucket_name}/{self._name(path)}: upload failed ({first})"
                )

    def download_files(self, files: Mapping[str, Path]) -> None:
        """Download objects (path under this prefix -> local file, its folder made)
        concurrently through ``transfer_manager.download_many`` (a pool of threads). Raises
        StorageError naming the first object missing or failed, after every download has
        ended; the local file of a failed one is removed (download_many leaves it)."""
        from google.api_core.exceptions import NotFound
        from google.cloud.storage import transfer_manager

        for local in files.values():
            local.parent.mkdir(parents=True, exist_ok=True)
        pairs = [(self.bucket.blob(self._name(path)), str(local)) for path, local in files.items()]
        outcomes = transfer_manager.download_many(
            pairs, worker_type=transfer_manager.THREAD, max_workers=TRANSFER_WORKERS
        )
        failed = []
        for (path, local), outcome in zip(files.items(), outcomes, strict=True):
            if isinstance(outcome, BaseException):
                local.unlink(missing_ok=True)
                failed.append((path, outcome))
        if failed:
            path, outcome = failed[0]
            where = f"gs://{self._bucket_name}/{self._name(path)}"
            if isinstance(outcome, NotFound):
                raise StorageError(f"{where}: not found")
            first = (str(outcome).splitlines() or [type(outcome).__name__])[0][:200]
            raise StorageError(f"{where}: download failed ({first})")

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

    def remove_temporary(self) -> int:
        """Delete temporary parts older than an hour (left by killed appenders, beside the
        manifests: at the top and in ``parts/``); return how many. Uploads are whole, so
        nothing else is left by a kill, and the sample folders are not listed."""
        from google.api_core.exceptions import NotFound

        root = f"{self.prefix}/" if self.prefix else ""
        cutoff = datetime.datetime.now(datetime.UTC) - datetime.timedelta(
            seconds=STALE_TEMP_SECONDS
        )
        removed = 0
        for folder in (root, f"{root}parts/"):
            removed += self._remove_stale(folder, cutoff, NotFound)
        return removed

    def _remove_stale(self, folder: str, cutoff: datetime.datetime, not_found: type) -> int:
        removed = 0
        listing = self.bucket.client.list_blobs(
            self._bucket_name, prefix=f"{folder}{TEMP_PREFIX}", delimiter="/"
        )
        for blob in listing:
            stale = blob.time_created is not None and blob.time_created < cutoff
            if stale:
                with contextlib.suppress(not_found):
                    blob.delete()
                removed += 1
        return removed

    def child(self, path: str) -> GCSStorage:
        return GCSStorage(f"gs://{self._bucket_name}/{self._name(path)}", client=self._client)
