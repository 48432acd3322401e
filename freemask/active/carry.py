"""A growing dataset (``versions.mode: grow``): the samples the version ``LATEST`` names kept,
carried into this version's active loop beside its own new draws, with their provenance.

Each carried sample's files are copied under this version's ``active/`` (a version stays whole
when retention deletes the one it came from); its ``drawn_in`` and ``kept_in`` go with it. The
loop then judges the union: a carried sample is kept again only if this version's rounds keep
it, and ``finish`` adds this version to the ``kept_in`` of every sample it keeps.
"""

from __future__ import annotations

from freemask.config import RunConfig
from freemask.records import Sample, read_manifest
from freemask.storage import Storage, open_storage
from freemask.versions import read_latest, top_workdir, version_storage

FINAL = "active"


def carried_samples(config: RunConfig, out: Storage) -> list[Sample]:
    """The samples to carry into this version's pool (none unless growing and a previous
    version is complete), their files copied under ``out``."""
    top = top_workdir(config)
    if config.versions.mode != "grow" or top is None:
        return []
    workdir = open_storage(top)
    latest = read_latest(workdir)
    if latest is None or latest["version"] == config.kubeflow.dataset_version:
        return []
    source = version_storage(workdir, latest["version"]).child(FINAL)
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
