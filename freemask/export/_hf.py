"""The Hugging Face ``datasets`` export: Parquet shards under ``data/`` and a dataset card.

``data/{train,validation}-NNNNN-of-NNNNN.parquet`` hold one row per sample: ``id``, ``image``
and ``semantic_mask`` (``datasets.Image``: the image file as it is, the class-index mask as a
greyscale PNG, 8-bit with 255 = ignore or 16-bit with 65535 = ignore past 254 classes), its
``width`` and ``height``, and ``objects``, a list of {``category`` (a ``ClassLabel`` named
background + the run's classes, so an object's id is its pixel value in ``semantic_mask``),
``bbox`` [x, y, w, h], ``area`` (pixels), ``disputed`` (a region to ignore), ``rle`` (the mask
as COCO compressed RLE: ``pycocotools.mask.decode``)}. The shards are written by ``datasets``
itself, so each carries the features in its schema metadata (the ``huggingface`` key that
``Features.from_arrow_schema`` reads back); ``README.md``'s YAML header names the splits'
files (``configs``) and the features (``dataset_info``) as the Hub does. Either of
``datasets.load_dataset(folder)`` and ``load_dataset("parquet", data_dir=folder + "/data")``
restores the features.
"""

from __future__ import annotations

import io
import math
from pathlib import PurePosixPath

from freemask.errors import ExportError
from freemask.export._common import (
    check_val_fraction,
    checked_samples,
    class_ids,
    lookup,
    semantic_labels,
    split_of,
)
from freemask.records import MANIFEST, Sample, ignore_index
from freemask.storage import Storage, encode_image

# Samples per Parquet file: about 100 MB of 512-px PNGs, a size the Hub serves well.
SHARD_SAMPLES = 256
ROW_GROUP_SAMPLES = 64  # what a reader holds in memory at once
SPLIT_NAMES = {"train": "train", "val": "validation"}  # the names datasets gives the splits


def hf_features(classes: list[str]):
    """The ``datasets.Features`` of a run's rows (see the module's docstring); ExportError
    when the ``datasets`` package is missing."""
    try:
        from datasets import ClassLabel, Features, Image, List, Value
    except ImportError:
        raise ExportError(
            "the hf format needs the 'datasets' package: pip install 'freemask[segment]'"
        ) from None

    return Features(
        {
            "id": Value("string"),
            "image": Image(),
            "semantic_mask": Image(),
            "width": Value("int32"),
            "height": Value("int32"),
            "objects": List(
                {
                    "category": ClassLabel(names=["background", *classes]),
                    "bbox": List(Value("float32"), length=4),
                    "area": Value("int64"),
                    "disputed": Value("bool"),
                    "rle": {"size": List(Value("int32"), length=2), "counts": Value("string")},
                }
            ),
        }
    )


def export_hf(
    source: Storage,
    target: Storage,
    classes: list[str],
    manifest: str = MANIFEST,
    val_fraction: float = 0.1,
    name: str = "freemask dataset",
) -> dict:
    """Write ``data/*.parquet`` and ``README.md`` (see the module's docstring); return counts.
    The split is VOC's (``val_fraction`` of the samples by id hash in ``validation``). Raises
    ExportError when the ``datasets`` package is missing."""
    check_val_fraction(val_fraction)
    features = hf_features(classes)
    import pyarrow as pa  # a dependency of datasets
    import pyarrow.parquet as pq

    samples = checked_samples(source, manifest, classes)
    ids = class_ids(classes)
    splits: dict[str, list[Sample]] = {"train": [], "val": []}
    for sample in samples:
        splits[split_of(sample.id, val_fraction)].append(sample)
    files: dict[str, str] = {}
    for split, members in splits.items():
        if not members:
            continue
        split_name = SPLIT_NAMES[split]
        shards = math.ceil(len(members) / SHARD_SAMPLES)
        for shard in range(shards):
            chunk = members[shard * SHARD_SAMPLES : (shard + 1) * SHARD_SAMPLES]
            rows = [features.encode_example(_row(source, sample, ids)) for sample in chunk]
            # features.arrow_schema carries the features as datasets' own Parquet writer
            # stores them: JSON under the schema metadata's "huggingface" key.
            table = pa.Table.from_pylist(rows, schema=features.arrow_schema)
            buffer = io.BytesIO()
            pq.write_table(table, buffer, row_group_size=ROW_GROUP_SAMPLES)
            path = f"data/{split_name}-{shard:05d}-of-{shards:05d}.parquet"
            target.write_bytes(path, buffer.getvalue())
        files[split_name] = f"data/{split_name}-*.parquet"
    target.write_bytes("README.md", _card(name, classes, features, files).encode())
    return {
        "format": "hf",
        "images": len(samples),
        "train": len(splits["train"]),
        "validation": len(splits["val"]),
    }


def _row(source: Storage, sample: Sample, ids: dict[str, int]) -> dict:
    semantic = semantic_labels(source, sample, ids)
    objects = [
        {
            "category": lookup(ids, instance.class_name, sample),
            "bbox": list(instance.bbox),
            "area": instance.area,
            "disputed": instance.disputed,
            "rle": {"size": list(instance.rle.size), "counts": instance.rle.counts},
        }
        for instance in sample.instances
    ]
    suffix = PurePosixPath(sample.image).suffix
    return {
        "id": sample.id,
        "image": {"bytes": source.read_bytes(sample.image), "path": f"{sample.id}{suffix}"},
        "semantic_mask": {
            "bytes": encode_image(semantic, "x.png"),
            "path": f"{sample.id}.png",
        },
        "width": sample.width,
        "height": sample.height,
        "objects": objects,
    }


def _card(name: str, classes: list[str], features, files: dict[str, str]) -> str:
    """README.md: the YAML header ``datasets`` and the Hub read, then what the columns hold."""
    from datasets import DatasetInfo
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCardData

    card = DatasetCardData()
    DatasetInfosDict({"default": DatasetInfo(features=features)}).to_dataset_card_data(card)
    card["configs"] = [
        {
            "config_name": "default",
            "data_files": [{"split": split, "path": path} for split, path in files.items()],
        }
    ]
    ignore = ignore_index(len(classes))
    return (
        f"---\n{card.to_yaml()}\n---\n\n# {name}\n\n"
        "Synthetic semantic and instance segmentation data made by freemask, with no manual "
        "labels.\n\n"
        f"- `semantic_mask`: per pixel 0 for background, k for the k-th class, {ignore} for "
        "pixels to ignore (uncertain or disputed labels).\n"
        "- `objects.category`: the same ids, named by the ClassLabel feature.\n"
        "- `objects.rle`: the object's mask as COCO compressed RLE "
        "(`pycocotools.mask.decode`); `objects.disputed` marks regions to ignore.\n\n"
        f"Classes ({len(classes)}): {', '.join(classes[:50])}"
        f"{', ...' if len(classes) > 50 else ''}\n"
    )
