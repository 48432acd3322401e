"""What both readers share: a source sample, record ids, instances, the class labels."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from freemask.records import Instance

BACKGROUND, IGNORE = "background", "ignore"  # what a source class may be mapped to besides a class


@dataclass
class Source:
    """One sample of the source: where its image lies, and what makes its labels."""

    id: str
    image: str
    labels: dict  # VOC: {"class": path, "object": path or None}; COCO: image entry, annotations


def sample_id(stem: str, taken: set[str]) -> str:
    """A record id from a file name: characters ids may not hold become '_'; unique."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", stem).lstrip("._-") or "image"
    identifier, number = base, 1
    while identifier in taken:
        number += 1
        identifier = f"{base}-{number}"
    taken.add(identifier)
    return identifier


def instance_of(mask: np.ndarray, label: int | None, classes: list[str]) -> Instance | None:
    """An instance of run class ``label`` (None for background, ignore or an empty mask)."""
    if not label or not mask.any():
        return None
    return Instance.from_mask(classes[label - 1], label, mask)
