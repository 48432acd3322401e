"""The optional ignore-disputed step: in a kept sample, the classes its judge contradicts
become ignore instead of being trained on as they are.

``any_class`` keeps a composed scene when one of its objects agrees with the judge, so a scene
with one broken object among good ones keeps the broken label; ``mean_over_classes`` can keep
one too. With ``active.ignore_disputed``, a kept sample where at least one class agrees at
``iou_threshold`` has the pixels of every class below it set to ignore (255; 65535 in a 16-bit
mask), and those classes' instances are marked ``disputed`` (COCO ``iscrowd``). A sample where
no class agrees is left as its rule kept it. The new mask is written under the round's folder
and the record points to it; the original file stays where it was.
"""

from __future__ import annotations

import numpy as np

from freemask.active.relabel import agreement
from freemask.config import ActiveConfig
from freemask.records import Sample, StageStamp, ignore_value
from freemask.storage import Storage, encode_image, read_image

DISPUTED_VERSION = "1"


def disputed_classes(sample: Sample, rules: ActiveConfig) -> list[int]:
    """The sample's classes below ``iou_threshold`` when another of its classes reaches it
    (none when every class agrees or none does)."""
    per_class = agreement(sample)
    below = sorted(k for k, v in per_class.items() if v < rules.iou_threshold)
    return below if len(below) < len(per_class) else []


def ignore_classes(mask: np.ndarray, class_ids: list[int]) -> np.ndarray:
    """``mask`` with the pixels of ``class_ids`` set to its ignore value (by its dtype)."""
    result = mask.copy()
    result[np.isin(mask, class_ids)] = ignore_value(mask)
    return result


def ignore_disputed(
    kept: list[Sample], data: Storage, folder: str, rules: ActiveConfig
) -> tuple[list[Sample], list[Sample]]:
    """(kept with disputed classes ignored, the changed samples); new masks are written to
    ``<folder>/disputed/<id>.png`` under ``data``."""
    result, changed = [], []
    for sample in kept:
        disputed = disputed_classes(sample, rules)
        if not disputed:
            result.append(sample)
            continue
        mask = ignore_classes(read_image(data, sample.semantic_mask), disputed)
        path = f"{folder}/disputed/{sample.id}.png"
        data.write_bytes(path, encode_image(mask, path))
        instances = [
            i.model_copy(update={"disputed": True}) if i.class_id in disputed else i
            for i in sample.instances
        ]
        updated = sample.model_copy(
            update={
                "semantic_mask": path,
                "instances": instances,
                "source": [*sample.source, StageStamp(stage="disputed", version=DISPUTED_VERSION)],
                "scores": {**sample.scores, "disputed_classes": float(len(disputed))},
            }
        )
        result.append(updated)
        changed.append(updated)
    return result, changed
