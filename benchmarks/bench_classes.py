"""Many classes: reading a manifest and validating a config at 1k, 10k and 100k classes.

LVIS has 1,203 classes; label maps are 16-bit past 254 classes and hold at most 65,534 (65,535
is ignore). Two costs that could grow with the class count are timed:

1. Reading a manifest (``read_manifest``: JSONL parse and record validation) of SAMPLES
   samples whose instances take class ids spread evenly over the run's classes. Past 65,534
   classes a record's class id is refused: the 100k row times how fast the first such record
   stops the read.
2. ``freemask config validate`` (``load_config``) of a config listing every class. A config of
   more than 65,534 classes is refused: the 100k row times that refusal.

The 65,534 row is the largest run there can be; ratios compare each figure with 1k classes.
"""

from __future__ import annotations

import gc
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from freemask.config import load_config
from freemask.errors import ConfigError, ManifestError
from freemask.records import MAX_CLASSES, Instance, read_manifest, sample_id
from freemask.storage import LocalStorage

CLASS_COUNTS = (1_000, 10_000, MAX_CLASSES, 100_000)
SAMPLES = 5_000
INSTANCES_PER_SAMPLE = 3
REPEATS = 3  # best of


def class_names(count: int) -> list[str]:
    return [f"class{index:06d}" for index in range(1, count + 1)]


def manifest_lines(count: int, size: int = 64) -> bytes:
    """SAMPLES records, class ids spread evenly over 1..count (written as JSON, not validated,
    so that ids past 65,534 can be written too)."""
    rng = np.random.default_rng(0)
    mask = np.zeros((size, size), bool)
    mask[8:40, 12:44] = True
    template = Instance.from_mask("x", 1, mask).model_dump()
    ids = np.linspace(1, count, SAMPLES * INSTANCES_PER_SAMPLE).round().astype(int)
    rng.shuffle(ids)
    lines = []
    for index in range(SAMPLES):
        identifier = sample_id("bench", "scene", index)
        chosen = ids[index * INSTANCES_PER_SAMPLE : (index + 1) * INSTANCES_PER_SAMPLE]
        instances = [
            {**template, "class_name": f"class{int(c):06d}", "class_id": int(c)} for c in chosen
        ]
        record = {
            "id": identifier,
            "image": f"images/{identifier}.png",
            "semantic_mask": f"masks/{identifier}.png",
            "width": size,
            "height": size,
            "instances": instances,
        }
        lines.append(json.dumps(record))
    return "".join(line + "\n" for line in lines).encode()


def best_of(action) -> tuple[float, Exception | None]:
    """The fastest of REPEATS runs of ``action()`` (seconds) and the error that refused it, if
    any. Nothing it returns is kept, and garbage is collected before each run, so that one
    measurement does not pay for the objects of another."""
    fastest, refusal = float("inf"), None
    for _ in range(REPEATS):
        gc.collect()
        start = time.perf_counter()
        try:
            action()
        except (ConfigError, ManifestError) as exc:
            refusal = exc
        fastest = min(fastest, time.perf_counter() - start)
    return fastest, refusal


def main() -> None:
    figures: dict[str, object] = {"samples": SAMPLES, "instances_per_sample": INSTANCES_PER_SAMPLE}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for count in CLASS_COUNTS:
            storage = LocalStorage(root / f"m{count}")
            storage.write_bytes("manifest.jsonl", manifest_lines(count))
            read_s, read_refusal = best_of(lambda storage=storage: read_manifest(storage))
            config = root / f"c{count}.yaml"
            document = {"name": "classes", "workdir": str(root), "classes": class_names(count)}
            config.write_text(yaml.safe_dump(document))
            validate_s, validate_refusal = best_of(lambda config=config: load_config(config))
            read_outcome = "refused" if read_refusal else "read"
            validate_outcome = "refused" if validate_refusal else "valid"
            rows.append((count, read_s, read_outcome, validate_s, validate_outcome))
            suffix = f"{count}_classes"
            figures[f"manifest_{read_outcome}_s_{suffix}"] = round(read_s, 4)
            figures[f"validate_{validate_outcome}_s_{suffix}"] = round(validate_s, 4)
            if validate_refusal:
                figures[f"validate_message_{suffix}"] = str(validate_refusal).splitlines()[0][-160:]
            if read_refusal:
                figures[f"manifest_message_{suffix}"] = str(read_refusal)[-160:]

    print(f"{SAMPLES} samples x {INSTANCES_PER_SAMPLE} instances; best of {REPEATS}")
    print(f"{'classes':>8} {'manifest read':>14} {'us/sample':>10} {'':<8} {'validate':>9} {'':<8}")
    for count, read_s, read_outcome, validate_s, validate_outcome in rows:
        print(
            f"{count:>8,} {read_s:>13.3f}s {1e6 * read_s / SAMPLES:>10.1f} {read_outcome:<8} "
            f"{validate_s:>8.3f}s {validate_outcome:<8}"
        )
    base_read, base_validate = rows[0][1], rows[0][3]
    for count, read_s, read_outcome, validate_s, validate_outcome in rows[1:]:
        if read_outcome == "read":
            figures[f"manifest_read_ratio_{count}_vs_1000_classes"] = round(read_s / base_read, 2)
        if validate_outcome == "valid":
            figures[f"validate_ratio_{count}_vs_1000_classes"] = round(
                validate_s / base_validate, 2
            )
    sys.stdout.write(json.dumps(figures) + "\n")


if __name__ == "__main__":
    main()
