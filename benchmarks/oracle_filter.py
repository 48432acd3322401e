"""What a judge that knew the truth would buy downstream: row (c) filtered by true quality.

The active loop can only help by discarding scenes. Here the filter is the best one there is: on
each seed's row (c) pool of ``bench_method.py`` (objects drawn from text, refined, composed; truth
from the calibrated proxy), the worst ``--fractions`` of the scenes by their true label IoU are
discarded, the probe segmenter is trained on the rest exactly as bench_method trains a row, and
it is scored on the 500 held-out rendered scenes with exact labels. Fraction 0 is row (c) itself
(read from the seed's ``rows.json`` when bench_method scored it there). Reported per fraction:
the kept scenes' true IoU and the downstream mIoU, per seed and paired against row (c), mean +- sd.

Usage, after bench_method has run row (c): ``python benchmarks/oracle_filter.py --work
build/bench_method [--seeds 0 1 2] [--fractions 0.1 0.2]``. Resumable: each trained row is kept
in ``<work>/oracle_filter.json``. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from bench_method import PROBE, method_config, score_row

from freemask.quality import label_iou
from freemask.records import read_manifest
from freemask.storage import LocalStorage, read_image
from freemask.toyworld.probe_segmenter import load_pairs


def true_ious(store: LocalStorage, labels: int) -> list[float]:
    """Each scene's label IoU against its truth, in manifest order."""
    return [
        label_iou(read_image(store, s.semantic_mask), read_image(store, s.truth_mask), labels)
        for s in read_manifest(store)
    ]


def filtered_row(work: Path, seed: int, fraction: float, test) -> dict:
    """Row (c) of ``seed`` less its worst ``fraction`` of scenes by true IoU, scored downstream."""
    config = method_config(work / f"seed{seed}", seed, False, "text")
    store = LocalStorage(work / f"seed{seed}" / "run" / "compose")
    samples = read_manifest(store)
    true = true_ious(store, len(config.classes) + 1)
    dropped = set(np.argsort(true)[: round(fraction * len(samples))].tolist())
    kept = [i for i in range(len(samples)) if i not in dropped]
    row = {"kept": len(kept), "kept_true_iou": float(np.mean([true[i] for i in kept]))}
    scored = work / f"seed{seed}" / "rows.json"
    row_c = json.loads(scored.read_text()).get("c") if scored.exists() else None
    if not dropped and row_c:
        return {**row, "downstream_miou": row_c["downstream_miou"]}
    started = time.perf_counter()
    result = score_row(config, store, [samples[i] for i in kept], test, PROBE, "cpu")
    seconds = round(time.perf_counter() - started)
    return {**row, "downstream_miou": result["downstream_miou"], "seconds": seconds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("build/bench_method"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.2])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cache = args.work / "oracle_filter.json"
    results = json.loads(cache.read_text()) if cache.exists() else {}
    store = LocalStorage(args.work / "test")
    test = load_pairs(store, sorted(read_manifest(store), key=lambda s: s.id))
    for seed in args.seeds:
        for fraction in [0.0, *args.fractions]:
            key = f"{seed}:{fraction:g}"
            if key not in results:
                results[key] = filtered_row(args.work, seed, fraction, test)
                cache.write_text(json.dumps(results, indent=1))
    print(
        f"row (c) less its worst scenes by true IoU (truth: proxy), probe trained as bench_method "
        f"trains a row, 500 held-out scenes, seeds {args.seeds} (mean +- sd; per seed)"
    )
    for fraction in [0.0, *args.fractions]:
        rows = [results[f"{seed}:{fraction:g}"] for seed in args.seeds]
        base = [results[f"{seed}:0"]["downstream_miou"] for seed in args.seeds]
        miou = np.array([row["downstream_miou"] for row in rows])
        kept_iou = np.array([row["kept_true_iou"] for row in rows])
        paired = miou - np.array(base)
        print(
            f"  discard {fraction:>4.0%}: kept true IoU {kept_iou.mean():.3f}, downstream "
            f"{miou.mean():.3f} +- {miou.std():.3f} ({' / '.join(f'{v:.3f}' for v in miou)}), "
            f"paired {paired.mean():+.3f} +- {paired.std():.3f}"
            f" ({' / '.join(f'{v:+.3f}' for v in paired)})"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
