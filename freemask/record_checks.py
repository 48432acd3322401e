"""Checks of a Sample against the prefix it lies in, before anything large is read or decoded.

Every stage that reads another stage's records (and export) checks them here first, because a
record is only text: it may declare a size its image does not have, name a file that is no
regular file of the prefix, or carry masks and classes that do not fit the run. Checked, in
order of cost:

- the id and file names: an id short enough to name files, path components of at most
  ``MAX_NAME_BYTES`` bytes, no control characters (NUL included), no temporary file of an
  unfinished write (``.freemask-tmp-*``);
- each instance: its RLE's size is the sample's, the RLE decodes (``records.check_rle``), and
  with the run's classes, its class name is one of them and its class id names that class;
- each file: a regular file inside the prefix (no FIFO, device, folder or symbolic link that
  leads out), and for images and masks the size their header declares (the header only: the
  pixels are not decoded) against the record's.

``sample_problem`` returns why a sample cannot be used, or None (a stage with a
``rejected.jsonl`` records the reason and goes on); ``require_usable`` raises an error naming
the manifest, the sample and the field. A file that is no readable image, or an image too large
to decode, raises StorageError as reading it would.
"""

from __future__ import annotations

import io
import os
import stat
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePosixPath

from PIL import Image, UnidentifiedImageError

from freemask.errors import FreemaskError, ManifestError, StorageError, some_names
from freemask.object_paths import TEMP_PREFIX
from freemask.records import Sample, check_rle
from freemask.storage import MAX_IMAGE_PIXELS, Storage

MAX_NAME_BYTES = 255  # one path component (a file name), as local file systems allow
MAX_PATH_BYTES = 1024  # a whole object path: the longest object name GCS accepts
# A sample id names files (``<id>.png``, ``pending/manifest/<id>.json``): room for a suffix.
MAX_ID_BYTES = 200
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FILE_FIELDS = ("image", "semantic_mask", "soft_mask", "truth_mask")
HEADER_BYTES = 64 * 1024  # what an object store sends for a header read (more if it needs)
CHECK_THREADS = 16  # header reads in parallel: they wait on storage, not on the CPU


def name_problem(path: str) -> str | None:
    """Why ``path`` (relative to its prefix) cannot name a file of a stage output, or None."""
    for char in path:
        if unicodedata.category(char) in ("Cc", "Cs"):
            return f"holds the control character {char!r}; file names hold printable text only"
    size = len(path.encode("utf-8"))
    if size > MAX_PATH_BYTES:
        return f"is {size} bytes long, more than the {MAX_PATH_BYTES} a path may have"
    for part in PurePosixPath(path).parts:
        size = len(part.encode("utf-8"))
        if size > MAX_NAME_BYTES:
            return (
                f"has a {size}-byte name ({_short(part)}), more than the {MAX_NAME_BYTES} bytes "
                "a file name may have"
            )
        if part.startswith(TEMP_PREFIX):
            return (
                f"is a temporary file ({TEMP_PREFIX}*) of a write that never finished, not "
                "part of the output"
            )
    return None


def record_problem(sample: Sample, classes: list[str] | None = None) -> str | None:
    """Why the record itself (its id, file names and instances) is unusable, or None; reads no
    file."""
    size = len(sample.id.encode("utf-8"))
    if size > MAX_ID_BYTES:
        return f"id is {size} bytes long, more than {MAX_ID_BYTES} (the id names its files)"
    for field in FILE_FIELDS:
        path = getattr(sample, field)
        problem = path and name_problem(path)
        if problem:
            return f"{field} {_short(path)} {problem}"
    shape = (sample.height, sample.width)
    for index, instance in enumerate(sample.instances):
        where = f"instances[{index}]"
        if tuple(instance.rle.size) != shape:
            return (
                f"{where}.rle.size {instance.rle.size[0]}x{instance.rle.size[1]} does not match "
                f"the sample's {shape[0]}x{shape[1]} (height x width)"
            )
        problem = check_rle(instance.rle)
        if problem:
            return f"{where}.rle: RLE does not decode ({problem})"
        if classes is None or (
            0 < instance.class_id <= len(classes)
            and classes[instance.class_id - 1] == instance.class_name
        ):
            continue
        if instance.class_name not in classes:
            return (
                f"{where}: class {instance.class_name!r} is not among the configured classes "
                f"({some_names(classes)})"
            )
        if instance.class_id > len(classes):
            return (
                f"{where}.class_id {instance.class_id} exceeds the {len(classes)} configured "
                "classes"
            )
        if classes[instance.class_id - 1] != instance.class_name:
            return (
                f"{where}: class {instance.class_name!r} has class_id {instance.class_id}, which "
                f"the config names {classes[instance.class_id - 1]!r}"
            )
    return None


def file_problem(storage: Storage, sample: Sample, field: str) -> str | None:
    """Why the file in ``field`` of ``sample`` does not fit the record (not a regular file of
    the prefix, or an image of another size), or None. Raises StorageError when the file is no
    readable image or is too large to decode."""
    path = getattr(sample, field)
    problem = _not_regular(storage, path)
    if problem:
        return f"{field} {path!r}: {problem}"
    if not path.lower().endswith(IMAGE_SUFFIXES):
        return None
    height, width, bands = _image_header(storage, path)
    if (height, width) == (sample.height, sample.width) and (field == "image" or bands == 1):
        return None
    if field == "image":
        return (
            f"image {path!r}: its header's {height}x{width} does not match the record's "
            f"{sample.height}x{sample.width} (height x width)"
        )
    found = (height, width) if bands == 1 else (height, width, bands)
    return (
        f"{field} {path!r}: shape {found} does not match the {sample.height}x{sample.width} "
        "image (a label mask is one channel of the image's size)"
    )


def sample_problem(
    storage: Storage, sample: Sample, classes: list[str] | None = None
) -> str | None:
    """Why ``sample`` cannot be used from ``storage`` (its prefix) with the run's ``classes``
    (None: classes unchecked), or None. The record is checked before its files, its files'
    headers only. Raises StorageError for a file that is no readable image or too large."""
    problem = record_problem(sample, classes)
    if problem:
        return problem
    for field in FILE_FIELDS:
        if getattr(sample, field):
            problem = file_problem(storage, sample, field)
            if problem:
                return problem
    return None


def sample_problems(
    storage: Storage, samples: list[Sample], classes: list[str] | None = None
) -> dict[str, str]:
    """Sample id -> why it cannot be used, for each unusable sample of ``samples`` (in order);
    files are checked in parallel. Raises StorageError as ``sample_problem`` does."""
    with ThreadPoolExecutor(CHECK_THREADS) as pool:
        found = pool.map(lambda sample: sample_problem(storage, sample, classes), samples)
        return {
            sample.id: problem
            for sample, problem in zip(samples, found, strict=True)
            if problem is not None
        }


def require_usable(
    storage: Storage,
    samples: list[Sample],
    classes: list[str] | None,
    where: str,
    error: type[FreemaskError] = ManifestError,
) -> None:
    """Raise ``error`` naming ``where`` (the manifest), the first unusable sample and its field,
    and how many others are unusable; return when every sample can be used."""
    problems = sample_problems(storage, samples, classes)
    if problems:
        sample_id, problem = next(iter(problems.items()))
        more = f" ({len(problems) - 1} more sample(s) unusable)" if len(problems) > 1 else ""
        raise error(f"{where}: sample {_short(sample_id)}: {problem}{more}")


def _short(text: str, limit: int = 60) -> str:
    """``text`` quoted, its middle cut when long (a message stays one readable line)."""
    if len(text) <= limit:
        return repr(text)
    return repr(f"{text[: limit // 2]}...{text[-limit // 4 :]}")


def _not_regular(storage: Storage, path: str) -> str | None:
    """Why the local file at ``path`` is not a regular file of the prefix, or None. Objects of
    an object store are always regular: nothing to check there."""
    local_path = getattr(storage, "local_path", None)
    if local_path is None:
        return None
    try:
        target = local_path(path)  # refuses a symbolic link that leads outside the prefix
    except StorageError as exc:
        return str(exc)
    try:
        mode = os.stat(target).st_mode  # the file a link inside the prefix leads to
    except FileNotFoundError:
        return "does not exist"
    except NotADirectoryError:
        return "does not exist (a folder on its path is a file)"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if stat.S_ISREG(mode):
        return None
    kinds = {
        stat.S_ISDIR: "a folder",
        stat.S_ISFIFO: "a FIFO (named pipe)",
        stat.S_ISSOCK: "a socket",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
    }
    kind = next((name for test, name in kinds.items() if test(mode)), "not a file")
    return f"is {kind}, not a regular file"


def _image_header(storage: Storage, path: str) -> tuple[int, int, int]:
    """(height, width, bands) from an image file's header; StorageError when it is no readable
    image or has more than ``MAX_IMAGE_PIXELS`` pixels (as ``storage.read_image`` would)."""
    where = f"{storage.uri}/{path}"
    local_path = getattr(storage, "local_path", None)
    if local_path is not None:
        attempts = [lambda: local_path(path)]
    else:  # the object's head first; the whole object when its header lies further in
        attempts = [lambda: _head(storage, path), lambda: io.BytesIO(storage.read_bytes(path))]
    for number, source in enumerate(attempts, start=1):
        try:
            with Image.open(source()) as image:
                height, width, bands = image.height, image.width, len(image.getbands())
            break
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            height, width, bands = MAX_IMAGE_PIXELS + 1, 1, 1  # refused just below
            break
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
            if number == len(attempts):
                raise StorageError(f"{where}: not a readable image ({exc})") from None
    if height * width > MAX_IMAGE_PIXELS:
        raise StorageError(
            f"{where}: image is larger than {MAX_IMAGE_PIXELS} pixels; refused (a decompression "
            "bomb, or an image to downscale first)"
        )
    return height, width, bands


def _head(storage: Storage, path: str) -> io.BytesIO:
    """The first ``HEADER_BYTES`` of an object (all of it where the storage reads whole)."""
    blob = getattr(storage, "blob", None)
    if blob is None:
        return io.BytesIO(storage.read_bytes(path))
    from google.api_core.exceptions import NotFound, RequestRangeNotSatisfiable

    try:
        return io.BytesIO(blob(path).download_as_bytes(start=0, end=HEADER_BYTES - 1))
    except RequestRangeNotSatisfiable:  # an empty object
        return io.BytesIO(b"")
    except NotFound:
        raise StorageError(f"{storage.uri}/{path}: not found") from None
