"""Sample and Instance records and the JSONL manifest that every stage reads and writes.

A manifest is ``manifest.jsonl`` under a stage's output prefix: one Sample per line. Paths in
a record are relative to that prefix. Semantic masks hold, per pixel, 0 for background,
``k`` for the run's k-th class (1-based, ``RunConfig.classes`` order) and 255 for ignore.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated

import numpy as np
from pycocotools import mask as mask_util
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from freemask.errors import ManifestError, StorageError
from freemask.storage import Storage, safe_relative_path

IGNORE_INDEX = 255
MANIFEST = "manifest.jsonl"


class RLE(BaseModel):
    """COCO compressed run-length encoding of a binary mask."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: tuple[int, int]
    counts: str


class Instance(BaseModel):
    """One object in a sample: its class, box (x, y, w, h in pixels) and mask."""

    model_config = ConfigDict(extra="forbid")

    class_name: str
    class_id: Annotated[int, Field(ge=1, lt=IGNORE_INDEX)]
    bbox: tuple[float, float, float, float]
    rle: RLE

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
    width: Annotated[int, Field(ge=1)]
    height: Annotated[int, Field(ge=1)]
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
    """Decode a compressed COCO RLE to an HxW bool array."""
    encoded = {"size": list(rle.size), "counts": rle.counts.encode("ascii")}
    return mask_util.decode(encoded).astype(bool)


def rle_bbox(rle: RLE) -> tuple[float, float, float, float]:
    """The (x, y, w, h) box of an RLE mask; zeros for an empty mask."""
    encoded = {"size": list(rle.size), "counts": rle.counts.encode("ascii")}
    return tuple(float(value) for value in mask_util.toBbox(encoded))


def parse_manifest(data: bytes, where: str) -> list[Sample]:
    """Parse JSONL manifest bytes; ``where`` names the file in errors (with the line number).

    A last line without a newline that does not parse is an interrupted append and is dropped.
    """
    text = data.decode("utf-8")
    lines = text.split("\n")
    torn_tail = not text.endswith("\n")
    samples: list[Sample] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        is_last = number == len(lines)
        try:
            sample = Sample.model_validate_json(line)
        except ValidationError as exc:
            if is_last and torn_tail:
                break
            raise ManifestError(f"{where}:{number}: {_first_problem(exc)}") from None
        if sample.id in seen:
            raise ManifestError(
                f"{where}:{number}: sample id {sample.id!r} already on line {seen[sample.id]}"
            )
        seen[sample.id] = number
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
    storage: Storage, path: str = MANIFEST, num_classes: int | None = None
) -> list[str]:
    """Check a manifest against its files; return one line per problem (empty when valid).

    Checks: every record parses, ids are unique, referenced files exist, instance masks match
    the sample's size, and class ids are within ``num_classes`` when given.
    """
    problems: list[str] = []
    where = f"{storage.uri}/{path}"
    try:
        samples = read_manifest(storage, path)
    except (ManifestError, StorageError) as exc:
        return [str(exc)]
    existing = set(storage.list())
    for sample in samples:
        for file in sample.files():
            if file not in existing:
                problems.append(f"{where}: sample {sample.id}: file {file!r} does not exist")
        for index, instance in enumerate(sample.instances):
            if tuple(instance.rle.size) != (sample.height, sample.width):
                problems.append(
                    f"{where}: sample {sample.id}: instance {index} mask is {instance.rle.size[0]}x"
                    f"{instance.rle.size[1]}, expected {sample.height}x{sample.width} (height x width)"
                )
            if num_classes is not None and instance.class_id > num_classes:
                problems.append(
                    f"{where}: sample {sample.id}: instance {index} class_id {instance.class_id} "
                    f"exceeds the {num_classes} configured classes"
                )
    return problems


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"]) or "record"
    if error["type"] == "json_invalid":
        return f"not valid JSON ({error['msg']})"
    return f"{field}: {error['msg']}" + (
        f" (got {error['input']!r})" if error["type"] != "missing" else ""
    )
