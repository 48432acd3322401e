"""Reading a PASCAL VOC folder: class-index PNGs (and object-index PNGs) beside JPEG images."""

from __future__ import annotations

from pathlib import PurePosixPath

import numpy as np

from freemask.dataset_import._common import Source, instance_of, sample_id
from freemask.errors import DatasetImportError, some_names
from freemask.records import Instance, ignore_value
from freemask.storage import Storage, read_image

VOC_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
VOC_FOLDERS = ("VOCdevkit/VOC2012", "VOC2012", "")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class VocReader:
    """A VOC folder: class-index PNGs (and object-index PNGs) beside JPEG images."""

    def __init__(self, storage: Storage, split: str | None):
        self.source = storage
        self.root = self._root(storage)
        self.split = split
        names = ""
        if self.source.exists(self._path("labels.txt")):
            names = self.source.read_bytes(self._path("labels.txt")).decode("utf-8")
        self.names = [line.strip() for line in names.splitlines() if line.strip()] or list(
            VOC_NAMES
        )

    @staticmethod
    def _root(storage: Storage) -> str:
        for folder in VOC_FOLDERS:
            prefix = f"{folder}/SegmentationClass" if folder else "SegmentationClass"
            if storage.list(prefix):
                return folder
        raise DatasetImportError(
            f"{storage.uri}: no VOC layout (looked for VOCdevkit/VOC2012/, VOC2012/ and the "
            "folder itself holding SegmentationClass/)"
        )

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}" if self.root else name

    def samples(self) -> list[Source]:
        masks = {
            PurePosixPath(path).stem: path
            for path in self.source.list(self._path("SegmentationClass"))
            if path.lower().endswith(".png")
        }
        stems = sorted(masks)
        split = self._path(f"ImageSets/Segmentation/{self.split or 'trainval'}.txt")
        if self.source.exists(split):
            listed = self.source.read_bytes(split).decode("utf-8").split()
            missing = [stem for stem in listed if stem not in masks]
            if missing:
                raise DatasetImportError(
                    f"{self.source.uri}/{split}: lists images without a SegmentationClass PNG "
                    f"({some_names(missing)})"
                )
            stems = listed
        elif self.split:
            raise DatasetImportError(f"{self.source.uri}/{split}: no such split list")
        images = {
            PurePosixPath(path).stem: path
            for path in self.source.list(self._path("JPEGImages"))
            if path.lower().endswith(IMAGE_SUFFIXES)
        }
        objects = self._path("SegmentationObject")
        taken: set[str] = set()
        found = []
        for stem in stems:
            if stem not in images:
                raise DatasetImportError(
                    f"{self.source.uri}/{masks[stem]}: no image {stem}.jpg in JPEGImages/"
                )
            instances = f"{objects}/{stem}.png"
            labels = {
                "class": masks[stem],
                "object": instances if self.source.exists(instances) else None,
            }
            found.append(Source(sample_id(stem, taken), images[stem], labels))
        return found

    def used_names(self, samples: list[Source]) -> set[str]:
        used: set[str] = set()
        for item in samples:
            labels = self._class_mask(item)
            values = np.unique(labels[labels != ignore_value(labels)])
            if values.size and values.max() >= len(self.names):
                raise DatasetImportError(
                    f"{self.source.uri}/{item.labels['class']}: holds class index "
                    f"{values.max()}, but {len(self.names)} class names are known (labels.txt "
                    "beside SegmentationClass/, one a line, background first; else VOC's 21)"
                )
            used.update(self.names[value] for value in values.tolist())
        return used

    def _class_mask(self, item: Source) -> np.ndarray:
        labels = read_image(self.source, item.labels["class"])
        if labels.ndim != 2:
            raise DatasetImportError(
                f"{self.source.uri}/{item.labels['class']}: a {labels.shape[-1]}-channel picture; "
                "expected class indices (a palette or greyscale PNG, as VOC's)"
            )
        return labels

    def labels(
        self, item: Source, table: dict[str, int | None], classes: list[str], dtype: np.dtype
    ) -> tuple[np.ndarray, list[Instance]]:
        labels = self._class_mask(item)
        ignore = ignore_value(dtype)
        # Index -> run label; a name the data does not use (so unmapped) would be ignore.
        lookup = np.array(
            [ignore if table.get(name) is None else table[name] for name in self.names],
            dtype=np.int64,
        )
        ignored = labels == ignore_value(labels)
        semantic = np.full(labels.shape, ignore, dtype=dtype)
        semantic[~ignored] = lookup[labels[~ignored]]
        instances = []
        if item.labels["object"]:
            objects = read_image(self.source, item.labels["object"])
            if objects.shape != labels.shape:
                raise DatasetImportError(
                    f"{self.source.uri}/{item.labels['object']}: shape {objects.shape}, but its "
                    f"class mask is {labels.shape}"
                )
            for number in np.unique(objects[(objects > 0) & (objects != 255)]).tolist():
                mask = objects == number
                inside = semantic[mask]
                inside = inside[(inside > 0) & (inside != ignore)]
                if inside.size:  # the object's class: what most of its labelled pixels say
                    label = int(np.bincount(inside).argmax())
                    instances.append(instance_of(mask, label, classes))
        return semantic, [instance for instance in instances if instance]
