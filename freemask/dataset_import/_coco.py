"""Reading a COCO folder: ``annotations/instances*.json`` and the images it names."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import PurePosixPath

import numpy as np

from freemask.dataset_import._common import Source, instance_of, sample_id
from freemask.errors import DatasetImportError, some_names
from freemask.records import Instance, ignore_value
from freemask.storage import Storage, read_json


class CocoReader:
    """A COCO folder: ``annotations/instances*.json`` and the images it names."""

    def __init__(self, storage: Storage, split: str | None):
        self.source = storage
        files = [
            path
            for path in storage.list("annotations")
            if re.fullmatch(r"annotations/instances[^/]*\.json", path)
        ]
        chosen = [path for path in files if split is None or split in PurePosixPath(path).name]
        if len(chosen) != 1:
            raise DatasetImportError(
                f"{storage.uri}/annotations: {len(chosen)} instances*.json files"
                f"{f' name {split!r}' if split else ''} ({some_names(files) or 'none'}); "
                "expected one (pick one with --split)"
            )
        self.path = chosen[0]
        document = read_json(storage, self.path)
        try:
            categories = {int(c["id"]): str(c["name"]) for c in document["categories"]}
            self.images = {int(image["id"]): image for image in document["images"]}
            self.annotations: dict[int, list[dict]] = {}
            for annotation in document["annotations"]:
                self.annotations.setdefault(int(annotation["image_id"]), []).append(annotation)
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetImportError(
                f"{storage.uri}/{self.path}: not a COCO instances file ({type(exc).__name__}: "
                f"{exc})"
            ) from None
        unknown = sorted(set(self.annotations) - set(self.images))
        if unknown:
            raise DatasetImportError(
                f"{storage.uri}/{self.path}: annotations of images it does not list "
                f"(image_id {some_names([str(i) for i in unknown])})"
            )
        self.category_name = categories
        self.names = list(dict.fromkeys(categories.values()))
        # COCO keeps images beside their annotations in images/ or in <split>/ (val2017/).
        split_folder = PurePosixPath(self.path).stem.removeprefix("instances").lstrip("_")
        self.folders = ["images", *([split_folder] if split_folder else []), ""]

    def samples(self) -> list[Source]:
        taken: set[str] = set()
        found = []
        for image_id in sorted(self.images):
            entry = self.images[image_id]
            name = str(entry.get("file_name", ""))
            try:
                entry["height"], entry["width"] = int(entry["height"]), int(entry["width"])
            except (KeyError, TypeError, ValueError):
                raise DatasetImportError(
                    f"{self.source.uri}/{self.path}: image {image_id} has no width and height"
                ) from None
            paths = [f"{folder}/{name}" if folder else name for folder in self.folders]
            path = next((p for p in paths if name and self.source.exists(p)), None)
            if path is None:
                raise DatasetImportError(
                    f"{self.source.uri}/{self.path}: image {image_id} file {name!r} is in none "
                    f"of {', '.join(f or '.' for f in self.folders)}"
                )
            labels = {"image": entry, "annotations": self.annotations.get(image_id, [])}
            found.append(Source(sample_id(PurePosixPath(name).stem, taken), path, labels))
        return found

    def used_names(self, samples: list[Source]) -> set[str]:
        used = set()
        for item in samples:
            for annotation in item.labels["annotations"]:
                if annotation.get("iscrowd", 0):
                    continue  # a crowd region is ignored whatever its class
                category = self.category_name.get(int(annotation["category_id"]))
                if category is None:
                    raise DatasetImportError(
                        f"{self.source.uri}/{self.path}: annotation {annotation.get('id')} "
                        f"names category {annotation['category_id']}, which it does not list"
                    )
                used.add(category)
        return used

    def labels(
        self, item: Source, table: dict[str, int | None], classes: list[str], dtype: np.dtype
    ) -> tuple[np.ndarray, list[Instance]]:
        height, width = int(item.labels["image"]["height"]), int(item.labels["image"]["width"])
        ignore = ignore_value(dtype)
        semantic = np.zeros((height, width), dtype=dtype)
        claimed = np.zeros((height, width), dtype=np.uint16)
        crowd = np.zeros((height, width), dtype=bool)
        instances = []
        for annotation, mask in self._masks(item, height, width):
            if annotation.get("iscrowd", 0):
                crowd |= mask
                continue
            label = table[self.category_name[int(annotation["category_id"])]]
            if label == 0:
                continue  # mapped to background: its pixels stay what the others make them
            claimed += mask
            semantic[mask] = ignore if label is None else label
            instances.append(instance_of(mask, label, classes))
        semantic[(claimed > 1) | crowd] = ignore
        return semantic, [instance for instance in instances if instance]

    def _masks(self, item: Source, height: int, width: int) -> Iterator[tuple[dict, np.ndarray]]:
        """Each annotation of ``item`` with its mask, decoded as pycocotools' ``annToRLE``
        does: polygons merged, uncompressed RLE converted, compressed RLE as it is."""
        from pycocotools import mask as mask_util

        for annotation in item.labels["annotations"]:
            segmentation = annotation.get("segmentation")
            try:
                if isinstance(segmentation, list):
                    # A ring of fewer than three points has no area (and frPyObjects would
                    # read four numbers as a box): dropped, as detectron2's COCO loader does.
                    rings = [r for r in segmentation if len(r) >= 6 and len(r) % 2 == 0]
                    if not rings:
                        continue
                    rle = mask_util.merge(mask_util.frPyObjects(rings, height, width))
                elif isinstance(segmentation.get("counts"), list):
                    rle = mask_util.frPyObjects(segmentation, height, width)
                else:
                    rle = {"size": segmentation["size"], "counts": segmentation["counts"]}
                    if isinstance(rle["counts"], str):
                        rle["counts"] = rle["counts"].encode("ascii")
                mask = mask_util.decode(rle).astype(bool)
            except Exception as exc:  # pycocotools raises a bare Exception for what it cannot read
                raise DatasetImportError(
                    f"{self.source.uri}/{self.path}: annotation {annotation.get('id')}: its "
                    f"segmentation does not decode ({type(exc).__name__})"
                ) from None
            if mask.shape != (height, width):
                raise DatasetImportError(
                    f"{self.source.uri}/{self.path}: annotation {annotation.get('id')}: mask "
                    f"{mask.shape}, image {height}x{width}"
                )
            yield annotation, mask
