"""Sample and Instance records and the JSONL manifest that every stage reads and writes.

A manifest is ``manifest.jsonl`` under a stage's output prefix: one Sample per line. Paths in
a record are relative to that prefix. Semantic masks hold, per pixel, 0 for background,
``k`` for the run's k-th class (1-based, ``RunConfig.classes`` order) and an ignore value: 8-bit
with 255 = ignore for a run of up to 254 classes, 16-bit with 65535 = ignore for more (up to
65534). ``label_dtype`` and ``ignore_index`` give a run's encoding; a mask read back carries it
in its dtype, so ``ignore_value(mask)`` is its ignore value.
"""

from __future__ import annotations

import hashlib
import io
import re
from typing import Annotated

import numpy as np
from pycocotools import mask as mask_util
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from freemask.errors import ConfigError, ManifestError, StorageError
from freemask.storage import Storage, safe_relative_path

IGNORE_INDEX = 255  # ignore in an 8-bit label map (a run of up to 254 classes)
IGNORE_INDEX_16 = 65535  # ignore in a 16-bit label map (a run of 255 to 65534 classes)
MAX_CLASSES = IGNORE_INDEX_16 - 1
MANIFEST = "manifest.jsonl"
MAX_SIDE = 16384  # the largest image side a record may declare
# One manifest line: far above any real record (254 instances of complex 4096x4096 masks take
# a few MB), so a corrupt or hostile line is refused before it is parsed.
MAX_RECORD_CHARS = 64 * 2**20


class RLE(BaseModel):
    """COCO compressed run-length encoding of a binary mask."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: tuple[Annotated[int, Field(ge=0, le=MAX_SIDE)], Annotated[int, Field(ge=0, le=MAX_SIDE)]]
    counts: str


class Instance(BaseModel):
    """One object in a sample: its class, box (x, y, w, h in pixels) and mask. A ``disputed``
    object's label was contradicted by the active filter's judge: its pixels are ignore (255, or
    65535 in a 16-bit mask) in the semantic mask and COCO exports it with ``iscrowd: 1`` (a
    region to ignore)."""

    model_config = ConfigDict(extra="forbid")

    class_name: str
    class_id: Annotated[int, Field(ge=1, le=MAX_CLASSES)]
    bbox: tuple[float, float, float, float]
    rle: RLE
    disputed: bool = False

    @classmethod
    def from_mask(cls, class_name: str, class_id: int, mask: np.ndarray) -> Instance:
        """Build an instance from a binary HxW mask."""
        rle = mask_to_rle(mask)
        return cls(class_name=class_name, class_id=class_id, bbox=rle_bbox(rle), rle=rle)

    def mask(self) -> np.ndarray:
        """The instance's mask as an HxW bool array."""
        return rle_to_mask(self.rle)

    @property
    def area(self) -> int:
        return int(mask_util.area(self.rle.model_dump()))


class StageStamp(BaseModel):
    """One entry of a sample's stage history."""

    model_config = ConfigDict(extra="forbid")

    stage: str
    version: str
    config_hash: str | None = None
    parents: list[str] = Field(default_factory=list)


class Placement(BaseModel):
    """Where a pasted object came from and where it went (compose stage provenance)."""

    model_config = ConfigDict(extra="forbid")

    source: str
    class_name: str
    box: tuple[int, int, int, int]
    scale: float
    flip: bool
    z: int
    visible_fraction: float
    kept: bool


class Sample(BaseModel):
    """One image with its masks, instances, provenance and quality scores."""

    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    image: str
    width: Annotated[int, Field(ge=1, le=MAX_SIDE)]
    height: Annotated[int, Field(ge=1, le=MAX_SIDE)]
    semantic_mask: str | None = None
    soft_mask: str | None = None
    # The exact label (same encoding as semantic_mask) where the data has truth: the toy
    # world's rendered masks, carried through redraws and replayed through composition.
    truth_mask: str | None = None
    instances: list[Instance] = Field(default_factory=list)
    prompt: str | None = None
    seed: int | None = None
    model_id: str | None = None
    model_revision: str | None = None
    source: list[StageStamp] = Field(default_factory=list)
    scores: dict[str, float] = Field(default_factory=dict)
    round: Annotated[int, Field(ge=0)] = 0
    # Dataset versions: the one that drew the sample, and those whose dataset kept it (a
    # growing dataset carries kept samples from version to version; versions.mode "grow").
    drawn_in: str | None = None
    kept_in: list[str] = Field(default_factory=list)
    scene: str | None = None
    placements: list[Placement] = Field(default_factory=list)

    @field_validator("image", "semantic_mask", "soft_mask", "truth_mask")
    @classmethod
    def _inside_prefix(cls, path: str | None) -> str | None:
        if path is None:
            return None
        try:
            return safe_relative_path(path)
        except StorageError as exc:
            raise ValueError(str(exc)) from None

    def files(self) -> list[str]:
        """Relative paths of every file the record refers to."""
        paths = (self.image, self.semantic_mask, self.soft_mask, self.truth_mask)
        return list(dict.fromkeys(path for path in paths if path))

    def class_names(self) -> list[str]:
        """The distinct classes of the sample's instances, in first-seen order."""
        return list(dict.fromkeys(instance.class_name for instance in self.instances))


def label_dtype(num_classes: int) -> np.dtype:
    """The dtype of a run's label maps: uint8 for up to 254 classes, uint16 for up to 65534.

    Raises ConfigError beyond 65534 classes (no label map holds them beside an ignore value).
    """
    if num_classes > MAX_CLASSES:
        raise ConfigError(
            f"{num_classes} classes: label maps hold at most {MAX_CLASSES} classes "
            f"(16-bit, {IGNORE_INDEX_16} = ignore); split the class list into several runs"
        )
    return np.dtype(np.uint8 if num_classes < IGNORE_INDEX else np.uint16)


def ignore_index(num_classes: int) -> int:
    """The ignore value in a run's label maps: 255 for up to 254 classes, else 65535."""
    return IGNORE_INDEX if label_dtype(num_classes) == np.uint8 else IGNORE_INDEX_16


def ignore_value(labels: np.ndarray | np.dtype | type) -> int:
    """The ignore value of a label map (or a label dtype): 65535 for uint16, else 255."""
    dtype = labels.dtype if isinstance(labels, np.ndarray) else np.dtype(labels)
    return IGNORE_INDEX_16 if dtype == np.uint16 else IGNORE_INDEX


def sample_id(config_hash: str, class_name: str, seed: int) -> str:
    """Deterministic sample id from (config hash, class, seed), readable by its class prefix."""
    digest = hashlib.sha256(f"{config_hash}|{class_name}|{seed}".encode()).hexdigest()[:16]
    slug = re.sub(r"[^a-z0-9]+", "_", class_name.lower()).strip("_") or "sample"
    return f"{slug}-{digest}"


def mask_to_rle(mask: np.ndarray) -> RLE:
    """Encode an HxW binary mask (bool or 0/1) as compressed COCO RLE."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be HxW, got shape {mask.shape}")
    encoded = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return RLE(size=tuple(encoded["size"]), counts=encoded["counts"].decode("ascii"))


def rle_to_mask(rle: RLE) -> np.ndarray:
    """Decode a compressed COCO RLE to an HxW bool array; ManifestError if it does not decode."""
    problem = check_rle(rle)
    if problem:
        raise ManifestError(f"RLE does not decode: {problem}")
    encoded = {"size": list(rle.size), "counts": rle.counts.encode("ascii")}
    return mask_util.decode(encoded).astype(bool)


def check_rle(rle: RLE) -> str | None:
    """Why ``rle`` cannot be decoded (runs that do not add up to its size), or None if it can."""
    height, width = rle.size
    total, position, runs = 0, 0, []
    counts = rle.counts
    # COCO's LEB128-like encoding (pycocotools' rleFrString), decoded here to check the sum,
    # because pycocotools itself reads past bad strings instead of failing.
    while position < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(counts):
                return "counts end inside a run"
            code = ord(counts[position]) - 48
            if not 0 <= code < 64:
                return f"character {counts[position]!r} is not RLE"
            value |= (code & 0x1F) << (5 * shift)
            more = bool(code & 0x20)
            position += 1
            shift += 1
            if not more and code & 0x10:
                value |= -1 << (5 * shift)
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            return "a run has negative length"
        runs.append(value)
        total += value
    if total != height * width:
        return f"runs cover {total} pixels, expected {height}x{width}={height * width}"
    return None


def rle_bbox(rle: RLE) -> tuple[float, float, float, float]:
    """The (x, y, w, h) box of an RLE mask; zeros for an empty mask."""
    encoded = {"size": list(rle.size), "counts": rle.counts.encode("ascii")}
    return tuple(float(value) for value in mask_util.toBbox(encoded))


def parse_manifest(data: bytes, where: str) -> list[Sample]:
    """Parse JSONL manifest bytes; ``where`` names the file in errors (with the line number).

    A last line without a newline that does not parse is an interrupted append and is dropped.
    The same record twice (a retried or repeated append) counts once; two different records
    under one id are an error.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{where}: not UTF-8 text (byte {exc.start}); expected JSONL") from None
    lines = text.split("\n")
    torn_tail = not text.endswith("\n")
    samples: list[Sample] = []
    seen: dict[str, tuple[int, Sample]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        is_last = number == len(lines)
        if len(line) > MAX_RECORD_CHARS:
            raise ManifestError(
                f"{where}:{number}: a record of {len(line)} characters, more than the "
                f"{MAX_RECORD_CHARS} one sample may take"
            )
        try:
            sample = Sample.model_validate_json(line)
        except ValidationError as exc:
            if is_last and torn_tail:
                break
            raise ManifestError(f"{where}:{number}: {_first_problem(exc)}") from None
        if sample.id in seen:
            first, earlier = seen[sample.id]
            if earlier == sample:
                continue
            raise ManifestError(
                f"{where}:{number}: sample id {sample.id!r} already on line {first} with a "
                "different record"
            )
        seen[sample.id] = (number, sample)
        samples.append(sample)
    return samples


def read_manifest(storage: Storage, path: str = MANIFEST) -> list[Sample]:
    """Read a manifest; a malformed line raises ManifestError naming the file and line."""
    return parse_manifest(storage.read_bytes(path), f"{storage.uri}/{path}")


def serialize_samples(samples: list[Sample]) -> bytes:
    """Samples as JSONL bytes, one compact record per line."""
    return b"".join(
        sample.model_dump_json(exclude_none=True).encode() + b"\n" for sample in samples
    )


def write_manifest(storage: Storage, samples: list[Sample], path: str = MANIFEST) -> None:
    """Write a whole manifest atomically (replacing any previous one)."""
    ids = [sample.id for sample in samples]
    if len(set(ids)) != len(ids):
        duplicates = sorted({sample_id for sample_id in ids if ids.count(sample_id) > 1})
        raise ManifestError(f"{storage.uri}/{path}: duplicate sample ids {duplicates[:5]}")
    storage.write_bytes(path, serialize_samples(samples))


def append_manifest(storage: Storage, samples: list[Sample], path: str = MANIFEST) -> None:
    """Append samples to a manifest; each record lands whole or not at all."""
    if samples:
        storage.append_lines(path, serialize_samples(samples))


def validate_manifest(
    storage: Storage, path: str = MANIFEST, classes: list[str] | None = None
) -> list[str]:
    """Check a manifest against its files; return one line per problem (empty when valid).

    Checks: every line is whole and parses, ids are unique, referenced files exist and are
    images of the sample's size, instance masks match that size and decode, and, with the run's
    ``classes``, each instance's class id and name agree with the config.
    """
    where = f"{storage.uri}/{path}"
    try:
        data = storage.read_bytes(path)
        samples = parse_manifest(data, where)
    except (ManifestError, StorageError) as exc:
        return [str(exc)]
    problems: list[str] = []
    if data and not data.endswith(b"\n"):
        problems.append(f"{where}: last line is torn (no newline): an interrupted write")
    existing = set(storage.list())
    for sample in samples:
        problems.extend(
            f"{where}: sample {sample.id}: {p}"
            for p in _sample_problems(storage, sample, existing, classes)
        )
    return problems


def _sample_problems(
    storage: Storage, sample: Sample, existing: set[str], classes: list[str] | None
) -> list[str]:
    """What is wrong with one sample's files and instances."""
    problems = []
    size = (sample.height, sample.width)
    for file in sample.files():
        if file not in existing:
            problems.append(f"file {file!r} does not exist")
        elif file.endswith((".png", ".jpg", ".jpeg")):
            found = _image_size(storage, file)
            if found is None:
                problems.append(f"file {file!r} is not a readable image")
            elif found != size:
                problems.append(
                    f"file {file!r} is {found[0]}x{found[1]}, expected {size[0]}x{size[1]} "
                    "(height x width)"
                )
    for index, instance in enumerate(sample.instances):
        if tuple(instance.rle.size) != size:
            problems.append(
                f"instance {index} mask is {instance.rle.size[0]}x{instance.rle.size[1]}, "
                f"expected {size[0]}x{size[1]} (height x width)"
            )
        reason = check_rle(instance.rle)
        if reason:
            problems.append(f"instance {index} RLE does not decode: {reason}")
        if classes is None:
            continue
        if instance.class_id > len(classes):
            problems.append(
                f"instance {index} class_id {instance.class_id} exceeds the {len(classes)} "
                "configured classes"
            )
        elif classes[instance.class_id - 1] != instance.class_name:
            problems.append(
                f"instance {index} class {instance.class_name!r} has class_id "
                f"{instance.class_id}, which the config names {classes[instance.class_id - 1]!r}"
            )
    return problems


def _image_size(storage: Storage, path: str) -> tuple[int, int] | None:
    """(height, width) from an image file's header, or None when it is not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(storage.read_bytes(path))) as image:
            return image.height, image.width
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, StorageError):
        return None


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"]) or "record"
    if error["type"] == "json_invalid":
        return f"not valid JSON ({error['msg']})"
    got = repr(error["input"])
    if len(got) > 80:
        got = f"{got[:60]}... ({len(got)} characters)"
    return f"{field}: {error['msg']}" + (f" (got {got})" if error["type"] != "missing" else "")
