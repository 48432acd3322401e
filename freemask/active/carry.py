"""A growing dataset (``versions.mode: grow``): the samples the version ``LATEST`` names kept,
carried into this version's active loop beside its own new draws, with their provenance.

Each carried sample's files are copied under this version's ``active/`` (a version stays whole
when retention deletes the one it came from); its ``drawn_in`` and ``kept_in`` go with it. The
loop then judges the union: a carried sample is kept again only if this version's rounds keep
it, and ``finish`` adds this version to the ``kept_in`` of every sample it keeps. The previous
version's best segmenter comes along too, and judges round 1 when it scores higher on the
validation set than this version's own first judge.
"""

from __future__ import annotations

import json

from freemask.config import RunConfig
from freemask.records import Sample, read_manifest
from freemask.segment.train import MODEL_MARKER
from freemask.storage import Storage
from freemask.versions import best_round, previous_dataset

CARRIED_JUDGE = "carried_judge"  # the previous version's best segmenter, a judge candidate


def carried_samples(config: RunConfig, out: Storage) -> list[Sample]:
    """The samples to carry into this version's pool (none unless growing and a previous
    version is complete), their files copied under ``out``."""
    previous = previous_dataset(config) if config.versions.mode == "grow" else None
    if previous is None:
        return []
    _, source = previous
    samples = read_manifest(source)
    for sample in samples:
        for path in sample.files():
            if not out.exists(path):
                out.write_bytes(path, source.read_bytes(path))
    return samples


def with_provenance(samples: list[Sample], version: str) -> list[Sample]:
    """``samples`` with ``drawn_in`` set to ``version`` where no earlier version drew them."""
    return [
        sample if sample.drawn_in else sample.model_copy(update={"drawn_in": version})
        for sample in samples
    ]


def kept_by(samples: list[Sample], version: str) -> list[Sample]:
    """``samples`` with ``version`` added to their ``kept_in``."""
    return [
        sample.model_copy(update={"kept_in": [*sample.kept_in, version]})
        if version not in sample.kept_in
        else sample
        for sample in samples
    ]


def carry_judge(config: RunConfig, out: Storage) -> bool:
    """Copy the segmenter of the best round of the version ``LATEST`` names under
    ``out/CARRIED_JUDGE`` (its weights last), a candidate judge of round 1 in a growing
    dataset; False when there is none to carry."""
    previous = previous_dataset(config) if config.versions.mode == "grow" else None
    best = previous and best_round(previous[1])
    if not best:
        return False
    version, dataset = previous
    model = dataset.child(f"rounds/{best['round']:02d}/model")
    if not model.exists(MODEL_MARKER):
        return False
    target = out.child(CARRIED_JUDGE)
    names = sorted(model.list(), key=lambda name: name == MODEL_MARKER)  # the marker last
    for name in names:
        target.write_bytes(name, model.read_bytes(name))
    origin = {"version": version, "round": best["round"]}
    out.write_bytes(f"{CARRIED_JUDGE}/from.json", json.dumps(origin).encode())
    return True
