"""The COCO export: ``annotations/instances.json`` and ``images/``, in COCO's own convention.

Objects (``iscrowd: 0``) are polygons (``_polygons.mask_polygons``, exact under pycocotools);
regions to ignore are crowd annotations (``iscrowd: 1``, uncompressed RLE), which COCO's
evaluation neither rewards nor penalises. Two kinds of region are ignored:

- a disputed object (the active filter's judge contradicted its label): one crowd annotation
  with its own class and mask;
- the other ignore pixels of the semantic mask (255, or 65535 past 254 classes: uncertain
  rims left by compose and refine, classes the active filter disputed): each pixel goes to the
  class of the nearest object pixel of its sample (any instance, disputed ones included; where
  a sample has none, the nearest labelled pixel of its semantic mask), and each image gets one
  crowd annotation per class so attributed. Ignore pixels with nothing labelled in their image
  are left out and counted (``ignore_unattributed``).
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath

import numpy as np

from freemask.errors import ExportError
from freemask.export._common import checked_samples, class_ids, lookup, semantic_labels
from freemask.export._polygons import mask_polygons, polygons_iou, uncompressed_rle
from freemask.records import MANIFEST, Sample, ignore_value
from freemask.storage import Storage

ANNOTATIONS = "annotations/instances.json"
# An object whose polygons would rasterize to less than this IoU with its mask is written as
# uncompressed RLE instead (pycocotools and torchvision's loader read both for iscrowd 0).
MIN_POLYGON_IOU = 0.99


def export_coco(
    source: Storage, target: Storage, classes: list[str], manifest: str = MANIFEST
) -> dict:
    """Write ``annotations/instances.json`` and ``images/`` in COCO format; return counts.

    Category ids are 1-based in ``classes`` order; objects are polygons, ignore regions crowd
    annotations (see the module's docstring)."""
    try:
        import cv2  # noqa: F401  (the polygons are traced with OpenCV)
    except ImportError:
        raise ExportError("the coco format needs OpenCV: pip install 'freemask[segment]'") from None
    samples = checked_samples(source, manifest, classes)
    ids = class_ids(classes)
    images: list[dict] = []
    annotations: list[dict] = []
    counts = {"objects": 0, "rle_objects": 0, "crowd": 0, "ignore_unattributed": 0}
    worst_iou = 1.0
    for image_id, sample in enumerate(samples, start=1):
        file_name = f"{sample.id}{PurePosixPath(sample.image).suffix}"
        target.write_bytes(f"images/{file_name}", source.read_bytes(sample.image))
        images.append(
            {"id": image_id, "file_name": file_name, "width": sample.width, "height": sample.height}
        )
        # (category, mask, crowd): the objects in the record's order, then the ignore regions.
        regions = [
            (lookup(ids, instance.class_name, sample), instance.mask(), instance.disputed)
            for instance in sample.instances
        ]
        regions += [(c, mask, True) for c, mask in _ignore_regions(source, sample, ids, counts)]
        for category, mask, crowd in regions:
            if not mask.any():
                continue  # an object hidden whole: COCO has no empty annotation
            annotation = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": category,
                "area": float(mask.sum()),
                "bbox": _bbox(mask),
                "iscrowd": int(crowd),
            }
            if crowd:
                annotation["segmentation"] = uncompressed_rle(mask)
                counts["crowd"] += 1
            else:
                annotation["segmentation"], iou = _object_segmentation(mask)
                worst_iou = min(worst_iou, iou)
                counts["objects"] += 1
                counts["rle_objects"] += int(iou < MIN_POLYGON_IOU)
            annotations.append(annotation)
    categories = [
        {"id": index, "name": name, "supercategory": "object"} for name, index in ids.items()
    ]
    document = {
        "info": {"description": "freemask synthetic dataset", "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    # Compact: polygons and run lengths are long lists of numbers, one a line when indented.
    target.write_bytes(ANNOTATIONS, json.dumps(document, separators=(",", ":")).encode())
    return {
        "format": "coco",
        "images": len(images),
        "annotations": len(annotations),
        **counts,
        "polygon_min_iou": round(worst_iou, 6),
    }


def _object_segmentation(mask: np.ndarray) -> tuple[list | dict, float]:
    """(segmentation, IoU of its polygons with ``mask``): polygons where they reproduce the
    mask to ``MIN_POLYGON_IOU``, else uncompressed RLE."""
    from pycocotools import mask as mask_util

    polygons = mask_polygons(mask)
    iou = polygons_iou(polygons, mask_util.encode(np.asfortranarray(mask.astype(np.uint8))))
    return (polygons if iou >= MIN_POLYGON_IOU else uncompressed_rle(mask)), iou


def _bbox(mask: np.ndarray) -> list[float]:
    """The [x, y, w, h] box around a non-empty mask, in pixel-corner coordinates."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return [
        float(cols[0]),
        float(rows[0]),
        float(cols[-1] - cols[0] + 1),
        float(rows[-1] - rows[0] + 1),
    ]


def _ignore_regions(
    source: Storage, sample: Sample, ids: dict[str, int], counts: dict[str, int]
) -> list[tuple[int, np.ndarray]]:
    """(category, mask) per class for the ignore pixels of the sample's semantic mask that no
    disputed object covers, each pixel given to the class of the nearest object pixel."""
    semantic = semantic_labels(source, sample, ids)
    ignored = semantic == ignore_value(semantic)
    for instance in sample.instances:
        if instance.disputed:
            ignored &= ~instance.mask()
    if not ignored.any():
        return []
    nearest = _nearest_class(sample, semantic, ids)
    if nearest is None:
        counts["ignore_unattributed"] += int(ignored.sum())
        return []
    return [
        (int(category), ignored & (nearest == category)) for category in np.unique(nearest[ignored])
    ]


def _nearest_class(sample: Sample, semantic: np.ndarray, ids: dict[str, int]) -> np.ndarray | None:
    """Per pixel, the class of the nearest object pixel (instances painted in order; without
    instances, the labelled pixels of ``semantic``); None when the sample has neither."""
    import cv2

    seeds = np.zeros(semantic.shape, np.int32)
    for instance in sample.instances:
        seeds[instance.mask()] = lookup(ids, instance.class_name, sample)
    if not seeds.any():
        labelled = (semantic > 0) & (semantic != ignore_value(semantic))
        seeds[labelled] = semantic[labelled]
    if not seeds.any():
        return None
    # DIST_LABEL_PIXEL gives every zero pixel of the input (here: every seed) its own label and
    # every pixel the label of its nearest zero pixel (OpenCV, distanceTransform with labels).
    _, nearest = cv2.distanceTransformWithLabels(
        (seeds == 0).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
    )
    seeded = seeds > 0
    table = np.zeros(int(nearest.max()) + 1, np.int32)
    table[nearest[seeded]] = seeds[seeded]
    return table[nearest]
