"""Manifest commit cost: per-sample append (what stages use) vs rewriting the manifest per sample.

Stages commit each sample as soon as it is written so that a killed run loses nothing. The naive
way to do that atomically rewrites the whole manifest per sample (quadratic); freemask appends
whole lines under a lock. Both are timed here on the same records, in one run.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from freemask.records import (
    Instance,
    Sample,
    append_manifest,
    read_manifest,
    sample_id,
    write_manifest,
)
from freemask.storage import LocalStorage

SAMPLES = 1500


def make_samples(count: int) -> list[Sample]:
    rng = np.random.default_rng(0)
    samples = []
    for index in range(count):
        mask = np.zeros((512, 512), dtype=bool)
        top, left = rng.integers(0, 256, 2)
        mask[top : top + 200, left : left + 180] = rng.random((200, 180)) > 0.05
        identifier = sample_id("bench", "cat", index)
        samples.append(
            Sample(
                id=identifier,
                image=f"images/{identifier}.png",
                semantic_mask=f"masks/{identifier}.png",
                width=512,
                height=512,
                instances=[Instance.from_mask("cat", 1, mask)],
                prompt="a photo of a cat",
                seed=index,
            )
        )
    return samples


def time_appends(storage: LocalStorage, samples: list[Sample]) -> float:
    start = time.perf_counter()
    for sample in samples:
        append_manifest(storage, [sample], "append.jsonl")
    return time.perf_counter() - start


def time_rewrites(storage: LocalStorage, samples: list[Sample]) -> float:
    start = time.perf_counter()
    for count in range(1, len(samples) + 1):
        write_manifest(storage, samples[:count], "rewrite.jsonl")
    return time.perf_counter() - start


def main() -> None:
    samples = make_samples(SAMPLES)
    with tempfile.TemporaryDirectory() as folder:
        storage = LocalStorage(Path(folder))
        append_seconds = time_appends(storage, samples)
        rewrite_seconds = time_rewrites(storage, samples)
        start = time.perf_counter()
        loaded = read_manifest(storage, "append.jsonl")
        read_seconds = time.perf_counter() - start
        manifest_bytes = storage.local_path("append.jsonl").stat().st_size
    assert [sample.id for sample in loaded] == [sample.id for sample in samples]
    rows = [
        ("commit per sample: append (freemask)", append_seconds),
        ("commit per sample: rewrite manifest (baseline)", rewrite_seconds),
        ("read whole manifest", read_seconds),
    ]
    print(f"{SAMPLES} samples, manifest {manifest_bytes / 1e6:.1f} MB")
    print(f"{'operation':<50} {'seconds':>9} {'ms/sample':>10}")
    for name, seconds in rows:
        print(f"{name:<50} {seconds:>9.3f} {1000 * seconds / SAMPLES:>10.3f}")
    figures = {
        "samples": SAMPLES,
        "manifest_mb": round(manifest_bytes / 1e6, 2),
        "append_commit_ms_per_sample": round(1000 * append_seconds / SAMPLES, 3),
        "rewrite_commit_ms_per_sample": round(1000 * rewrite_seconds / SAMPLES, 3),
        "read_ms_per_sample": round(1000 * read_seconds / SAMPLES, 4),
        "speedup_ratio_append_vs_rewrite": round(rewrite_seconds / append_seconds, 1),
    }
    sys.stdout.write(json.dumps(figures) + "\n")


if __name__ == "__main__":
    main()
