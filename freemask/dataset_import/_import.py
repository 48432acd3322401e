"""Bring your own labelled data: the steps of ``import_dataset``."""

from __future__ import annotations

import io
from pathlib import PurePosixPath

from PIL import Image, UnidentifiedImageError

from freemask.dataset_import._coco import CocoReader
from freemask.dataset_import._common import BACKGROUND, IGNORE
from freemask.dataset_import._voc import VocReader
from freemask.errors import DatasetImportError, some_names
from freemask.records import Sample, StageStamp, label_dtype
from freemask.stage_output import StageOutput, StageResult, classes_setting
from freemask.storage import Storage, encode_image

STAGE = "import"
VERSION = "1"
IMPORT_FORMATS = ("voc", "coco")


def import_dataset(
    fmt: str,
    source: Storage,
    target: Storage,
    classes: list[str],
    mapping: dict[str, str] | None = None,
    split: str | None = None,
) -> StageResult:
    """Import the ``fmt`` ('voc' or 'coco') folder at ``source`` into the prefix ``target``
    for a run of ``classes``; ``mapping`` renames source classes, ``split`` picks VOC's
    ``ImageSets/Segmentation/<split>.txt`` (default trainval, else every mask) or the COCO
    annotation file whose name holds it. Raises DatasetImportError for a folder it cannot read
    and for classes that do not map, before anything is written."""
    if fmt not in IMPORT_FORMATS:
        raise DatasetImportError(
            f"format {fmt!r} cannot be imported; expected one of {', '.join(IMPORT_FORMATS)}"
        )
    # 1. Read the source's layout, its samples and the class names they use.
    reader = VocReader(source, split) if fmt == "voc" else CocoReader(source, split)
    samples = reader.samples()
    if not samples:
        raise DatasetImportError(f"{source.uri}: no labelled images found in the {fmt} layout")
    # 2. Map every used class onto the run's, or refuse before writing anything.
    table = class_table(reader.names, reader.used_names(samples), classes, mapping or {})
    # 3. Write each sample whole, then the success marker.
    settings = {
        "import.format": fmt,
        "import.source": source.uri,
        "import.split": split,
        "import.map": dict(sorted((mapping or {}).items())),
        "classes": classes_setting(classes),
    }
    output = StageOutput(target, STAGE, settings=settings)
    dtype = label_dtype(len(classes))
    for item in samples:
        if output.is_done(item.id):
            continue
        semantic, instances = reader.labels(item, table, classes, dtype)
        data = source.read_bytes(item.image)
        _require_size(f"{source.uri}/{item.image}", data, semantic.shape)
        image = f"images/{item.id}{PurePosixPath(item.image).suffix.lower()}"
        sample = Sample(
            id=item.id,
            image=image,
            semantic_mask=f"masks/{item.id}.png",
            width=semantic.shape[1],
            height=semantic.shape[0],
            instances=instances,
            source=[StageStamp(stage=STAGE, version=VERSION)],
        )
        files = {
            image: data,
            sample.semantic_mask: encode_image(semantic, sample.semantic_mask),
        }
        output.commit(sample, files)
    return output.finish({"format": fmt, "source": source.uri, "samples": len(samples)})


def class_table(
    names: list[str], used: set[str], classes: list[str], mapping: dict[str, str]
) -> dict[str, int | None]:
    """Source class name -> run label (0 background, k the k-th class, None ignore) for every
    name of ``names``; DatasetImportError listing the ``used`` names that map to nothing, or a
    ``mapping`` that names no source class or no target."""
    exact = {name: index for index, name in enumerate(classes, start=1)}
    folded = {name.casefold(): index for name, index in reversed(exact.items())}

    def run_label(name: str) -> int | None:
        return exact.get(name, folded.get(name.casefold()))

    specials: dict[str, int | None] = {BACKGROUND: 0, IGNORE: None}
    by_fold = {name.casefold(): name for name in names}
    renames: dict[str, int | None] = {}
    for src, dst in mapping.items():
        if src.casefold() not in by_fold:
            raise DatasetImportError(
                f"--map {src}={dst}: the source has no class {src!r} ({some_names(names)})"
            )
        if run_label(dst) is None and dst.casefold() not in specials:
            raise DatasetImportError(
                f"--map {src}={dst}: {dst!r} is none of the run's classes "
                f"({some_names(classes)}), {BACKGROUND} or {IGNORE}"
            )
        label = run_label(dst)
        renames[by_fold[src.casefold()]] = specials[dst.casefold()] if label is None else label
    table: dict[str, int | None] = {}
    unknown = []
    for name in names:
        if name in renames:
            table[name] = renames[name]
        elif run_label(name) is not None:
            table[name] = run_label(name)
        elif name.casefold() == BACKGROUND:
            table[name] = 0
        elif name in used:
            unknown.append(name)
    if unknown:
        raise DatasetImportError(
            f"{len(unknown)} class name(s) of the source are not among the run's classes: "
            f"{some_names(sorted(unknown))}; map each with --map NAME=CLASS (CLASS one of the "
            f"run's classes, {BACKGROUND} or {IGNORE})"
        )
    return table


def _require_size(where: str, data: bytes, shape: tuple[int, ...]) -> None:
    """Refuse an image (``data``, read from ``where``) whose size is not its labels'."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            size = (image.height, image.width)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise DatasetImportError(f"{where}: not a readable image ({exc})") from None
    if size != tuple(shape):
        raise DatasetImportError(
            f"{where}: {size[0]}x{size[1]}, but its labels are {shape[0]}x{shape[1]} "
            "(height x width)"
        )
