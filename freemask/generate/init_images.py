"""Images to start from: image-to-image redraws of a user's own single-object samples.

``generate.init_images`` names a prefix holding a freemask manifest of single-object samples
(e.g. photographs a user labelled, or the toy world's rendered objects). The k-th sample of a
class starts from that class's k-th image (by sample id, cycling), prompted with that image's
own caption when it has one naming the class. Where the samples have label
masks, the redraw keeps their layout, so the mask is the new sample's exact truth.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import DTypeLike

from freemask.errors import FreemaskError
from freemask.generate.prompts import Prompt
from freemask.records import Sample, ignore_value, label_dtype, read_manifest
from freemask.storage import Storage, open_storage, read_image


@dataclass
class InitImages:
    """The init samples of each class, in a fixed order, the storage they live in, and the
    run's label dtype (``records.label_dtype``) that truth labels are made in."""

    storage: Storage
    by_class: dict[str, list[Sample]]
    labels: DTypeLike = np.uint8

    def _pick(self, class_name: str, index: int) -> Sample:
        samples = self.by_class[class_name]
        return samples[index % len(samples)]

    def image(self, class_name: str, index: int, size: tuple[int, int]) -> np.ndarray:
        """The RGB image the class's ``index``-th sample starts from, resized to ``size``."""
        image = read_image(self.storage, self._pick(class_name, index).image, mode="RGB")
        return _resize(image, size, cv2.INTER_AREA)

    def prompt(self, class_name: str, index: int) -> Prompt | None:
        """The start image's own caption as the prompt when it names the class: a redraw
        prompted with other colours or scenes than its start image would not keep its layout."""
        caption = self._pick(class_name, index).prompt
        if caption and re.search(rf"\b{re.escape(class_name)}\b", caption):
            return Prompt(text=caption, phrase=class_name)
        return None

    def truth(
        self, class_name: str, index: int, class_id: int, size: tuple[int, int]
    ) -> np.ndarray | None:
        """The start image's object as a label of ``size`` in the run's label dtype
        (``class_id``, 0, ignore where the source ignores), or None when the init sample has
        no label mask."""
        sample = self._pick(class_name, index)
        if not sample.semantic_mask:
            return None
        source = read_image(self.storage, sample.semantic_mask)
        source_id = next(i.class_id for i in sample.instances if i.class_name == class_name)
        truth = np.where(source == source_id, class_id, 0).astype(self.labels)
        truth[source == ignore_value(source)] = ignore_value(self.labels)
        return _resize(truth, size, cv2.INTER_NEAREST)


def _resize(image: np.ndarray, size: tuple[int, int], interpolation: int) -> np.ndarray:
    rows, cols = size
    if image.shape[:2] == (rows, cols):
        return image
    return cv2.resize(image, (cols, rows), interpolation=interpolation)


def load_init_images(uri: str, classes: list[str]) -> InitImages:
    """Read the init prefix's manifest and group its single-object samples by class.

    Raises FreemaskError when a sample holds more than one class, or a run class has none.
    """
    storage = open_storage(uri)
    by_class: dict[str, list[Sample]] = {name: [] for name in classes}
    for sample in sorted(read_manifest(storage), key=lambda s: s.id):
        names = sample.class_names()
        if len(names) != 1:
            raise FreemaskError(
                f"generate.init_images {uri}: sample {sample.id} holds {len(names)} classes "
                f"({', '.join(names) or 'none'}); expected single-object samples"
            )
        if names[0] in by_class:
            by_class[names[0]].append(sample)
    missing = [name for name, samples in by_class.items() if not samples]
    if missing:
        raise FreemaskError(
            f"generate.init_images {uri}: no sample of class(es) {', '.join(missing)}"
        )
    return InitImages(storage, by_class, label_dtype(len(classes)))
