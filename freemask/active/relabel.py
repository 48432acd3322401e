"""The optional relabel step: where a kept sample's mask and the prediction agree, take the
prediction.

A kept sample qualifies when every one of its classes agrees with the pseudo-label at IoU >=
``active.relabel_iou``. Its new mask is the prediction restricted to the sample's classes
(other predicted classes become background) with the generated mask's ignore pixels (255, or
65535 in a 16-bit mask) kept ignore; it is written under the round's folder and the record
points to it, while the original file stays where it was (earlier rounds and the discarded
lists still name it). Each instance takes the new mask's pixels of its class nearest to its old
mask.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import distance_transform_edt

from freemask.active.rounds import SCORE
from freemask.config import ActiveConfig
from freemask.records import Instance, Sample, StageStamp, ignore_value
from freemask.storage import Storage, encode_image, read_image

RELABEL_VERSION = "1"


def relabel_mask(generated: np.ndarray, prediction: np.ndarray, class_ids: list[int]) -> np.ndarray:
    """The prediction restricted to ``class_ids`` (others: background), in the generated
    mask's dtype; ignore stays ignore."""
    ignore = ignore_value(generated)
    mask = np.where(np.isin(prediction, class_ids), prediction, 0).astype(generated.dtype)
    mask[generated == ignore] = ignore
    return mask


def relabel_instances(instances: list[Instance], mask: np.ndarray) -> list[Instance]:
    """Instances redrawn on ``mask``: each takes its class's pixels nearest to its old mask
    (an instance left with no pixel is dropped)."""
    redrawn = []
    for class_id in sorted({instance.class_id for instance in instances}):
        same = [instance for instance in instances if instance.class_id == class_id]
        region = mask == class_id
        if len(same) == 1:
            owner = np.zeros(mask.shape, dtype=np.int64)
        else:
            distances = np.stack([distance_transform_edt(~i.mask()) for i in same])
            owner = distances.argmin(axis=0)
        for index, instance in enumerate(same):
            pixels = region & (owner == index)
            if pixels.any():
                redrawn.append(Instance.from_mask(instance.class_name, class_id, pixels))
    return redrawn


def agreement(sample: Sample) -> dict[int, float]:
    """The per-class IoU vs pseudo-label the filter recorded on the sample, by class id."""
    prefix = f"{SCORE}.class_"
    return {
        int(k.removeprefix(prefix)): v for k, v in sample.scores.items() if k.startswith(prefix)
    }


def qualifies(sample: Sample, rules: ActiveConfig) -> bool:
    """True when every class of the sample agrees with its pseudo-label at ``relabel_iou``."""
    per_class = agreement(sample)
    return bool(per_class) and min(per_class.values()) >= rules.relabel_iou


def relabel_samples(
    kept: list[Sample], data: Storage, pseudo: Storage, folder: str, rules: ActiveConfig
) -> tuple[list[Sample], list[Sample]]:
    """(kept with qualifying samples relabelled, the relabelled ones); new masks are written
    to ``<folder>/relabel/<id>.png`` under ``data``."""
    result, relabelled = [], []
    for sample in kept:
        if not qualifies(sample, rules):
            result.append(sample)
            continue
        generated = read_image(data, sample.semantic_mask)
        prediction = read_image(pseudo, f"{sample.id}.png")
        mask = relabel_mask(generated, prediction, list(agreement(sample)))
        path = f"{folder}/relabel/{sample.id}.png"
        data.write_bytes(path, encode_image(mask, path))
        updated = sample.model_copy(
            update={
                "semantic_mask": path,
                "instances": relabel_instances(sample.instances, mask),
                "source": [*sample.source, StageStamp(stage="relabel", version=RELABEL_VERSION)],
                "scores": {**sample.scores, "relabelled_round": float(sample.round)},
            }
        )
        result.append(updated)
        relabelled.append(updated)
    return result, relabelled
