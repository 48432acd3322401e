"""Compose throughput: 512-px scenes with 3 objects each on the CPU, heuristic placer.

Runs the compose stage itself (reading objects and backgrounds, placing, pasting, resolving
occlusion, encoding PNGs and RLE, committing records) on synthetic inputs, and times one
placement by each placer on the same background and object: the heuristic placer against the
FOPA network (random weights; the published ones cost the same) at its 16 scales.
"""

from __future__ import annotations

import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from freemask.compose import Cutout, HeuristicPlacer, PlacementPrior, run_backgrounds, run_compose
from freemask.compose.fopa import FopaNet, FopaPlacer
from freemask.config import RunConfig
from freemask.records import Instance, Sample, sample_id, write_manifest
from freemask.relate import run_relate
from freemask.storage import LocalStorage, encode_image

SCENES = 40
SIZE = 512
CLASSES = ["cat", "dog", "bicycle"]


def write_inputs(root: Path) -> RunConfig:
    """Objects (256-px textured blobs with soft edges), tagged 512-px backgrounds, relations."""
    rng = np.random.default_rng(0)
    objects = LocalStorage(root / "generate")
    rows, cols = np.ogrid[:256, :256]
    samples = []
    for class_id, name in enumerate(CLASSES, start=1):
        for index in range(10):
            distance = np.hypot((rows - 128) / (60 + 4 * index), (cols - 128) / 90)
            soft = np.clip((1.2 - distance) / 0.4, 0, 1)
            label = np.where(soft > 0.6, class_id, np.where(soft > 0.3, 255, 0)).astype(np.uint8)
            image = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)
            identifier = sample_id("bench", name, index)
            sample = Sample(
                id=identifier,
                image=f"images/{identifier}.png",
                semantic_mask=f"masks/{identifier}.png",
                soft_mask=f"soft_masks/{identifier}.npy",
                width=256,
                height=256,
                instances=[Instance.from_mask(name, class_id, label == class_id)],
            )
            buffer = io.BytesIO()
            np.save(buffer, soft.astype(np.float16), allow_pickle=False)
            objects.write_bytes(sample.image, encode_image(image, sample.image))
            objects.write_bytes(sample.semantic_mask, encode_image(label, sample.semantic_mask))
            objects.write_bytes(sample.soft_mask, buffer.getvalue())
            samples.append(sample)
    write_manifest(objects, samples)
    user = LocalStorage(root / "user-backgrounds")
    for scene in ("street", "park", "living room"):
        for index in range(3):
            image = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
            user.write_bytes(f"{scene}/{index}.png", encode_image(image, f"{scene}/{index}.png"))
    config = RunConfig.model_validate(
        {
            "name": "bench-compose",
            "workdir": str(root),
            "classes": CLASSES,
            "compose": {
                "images": SCENES,
                "objects_per_image": [3, 3],
                "backgrounds": str(root / "user-backgrounds"),
            },
        }
    )
    run_relate(config, None, str(root / "relate"))
    run_backgrounds(config, str(root / "relate"), str(root / "backgrounds"))
    return config


def time_placements(background: np.ndarray, cutout: Cutout) -> tuple[float, float]:
    """Median seconds of one heuristic placement and of one FOPA placement (16 scales)."""
    prior = PlacementPrior(0.3, "ground")
    heuristic = HeuristicPlacer()
    heuristic_times = []
    for seed in range(9):
        start = time.perf_counter()
        heuristic.place(background, cutout, prior, [], np.random.default_rng(seed))
        heuristic_times.append(time.perf_counter() - start)
    torch.manual_seed(0)
    fopa = FopaPlacer(FopaNet().eval())
    start = time.perf_counter()
    fopa.place(background, cutout, prior, [], np.random.default_rng(0))
    return statistics.median(heuristic_times), time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        config = write_inputs(root)
        start = time.perf_counter()
        result = run_compose(config, str(root / "generate"), str(root / "compose"))
        seconds = time.perf_counter() - start
    rng = np.random.default_rng(1)
    background = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    ones = np.ones((200, 120), np.float32)
    cutout = Cutout(background[:200, :120].copy(), ones, ones.astype(np.uint8))
    heuristic_s, fopa_s = time_placements(background, cutout)
    rate = result.written / seconds
    print(
        f"compose: {result.written} scenes of {SIZE} px with 3 objects, torch threads {torch.get_num_threads()}"
    )
    print(f"{'measure':<44} {'value':>10}")
    print(f"{'scenes per second (whole stage, heuristic)':<44} {rate:>10.2f}")
    print(f"{'ms per scene':<44} {1000 * seconds / result.written:>10.1f}")
    print(f"{'heuristic placement, ms per object':<44} {1000 * heuristic_s:>10.2f}")
    print(f"{'FOPA placement (16 scales, CPU), s per object':<44} {fopa_s:>10.2f}")
    figures = {
        "scenes": result.written,
        "scenes_per_second": round(rate, 3),
        "ms_per_scene": round(1000 * seconds / result.written, 2),
        "heuristic_placement_ms": round(1000 * heuristic_s, 3),
        "fopa_placement_cpu_s": round(fopa_s, 3),
        "fopa_vs_heuristic_placement_time_ratio": round(fopa_s / heuristic_s, 1),
    }
    sys.stdout.write(json.dumps(figures) + "\n")


if __name__ == "__main__":
    main()
