"""Segmenter speed on the CPU: tiny Mask2Former training steps per second and inference images
per second at 64 and 128 px, against the model's own forward pass without loss (the floor a
training step cannot beat)."""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from freemask.config import SegmentConfig
from freemask.records import Instance, Sample, write_manifest
from freemask.segment import TINY_MASK2FORMER_ID, load_segmenter, predict, train_segmenter
from freemask.segment.model import preprocess
from freemask.storage import LocalStorage, encode_image

CLASSES = ["box", "ball"]
STEPS = 30
BATCH = 4


def write_set(root: Path, size: int, count: int = 16) -> tuple[LocalStorage, list[Sample]]:
    storage = LocalStorage(root)
    rng = np.random.default_rng(0)
    samples = []
    for index in range(count):
        image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        semantic = np.zeros((size, size), np.uint8)
        semantic[size // 4 : size // 2, size // 4 : size // 2] = 1
        semantic[size // 2 :, size // 2 :] = 2
        identifier = f"bench-{index}"
        sample = Sample(
            id=identifier,
            image=f"images/{identifier}.png",
            semantic_mask=f"masks/{identifier}.png",
            width=size,
            height=size,
            instances=[Instance.from_mask("box", 1, semantic == 1)],
        )
        storage.write_bytes(sample.image, encode_image(image, sample.image))
        storage.write_bytes(sample.semantic_mask, encode_image(semantic, sample.semantic_mask))
        samples.append(sample)
    write_manifest(storage, samples)
    return storage, samples


def measure(size: int) -> dict[str, float]:
    settings = SegmentConfig(
        model_id=TINY_MASK2FORMER_ID,
        image_size=size,
        batch_size=BATCH,
        train_steps=STEPS,
        checkpoint_every=10_000,
    )
    with tempfile.TemporaryDirectory() as folder:
        storage, samples = write_set(Path(folder) / "data", size)
        segmenter = load_segmenter(settings, CLASSES, trainable=True)
        start = time.perf_counter()
        train_segmenter(segmenter, samples, storage, LocalStorage(Path(folder) / "model"), settings)
        train_s = time.perf_counter() - start
        images = [
            np.random.default_rng(i).integers(0, 255, (size, size, 3), dtype=np.uint8)
            for i in range(BATCH)
        ]
        predict(segmenter, images)
        infer, forward = [], []
        for _ in range(7):
            start = time.perf_counter()
            predict(segmenter, images)
            infer.append(time.perf_counter() - start)
            with torch.no_grad():
                start = time.perf_counter()
                segmenter.model(pixel_values=preprocess(images, size))
                forward.append(time.perf_counter() - start)
    return {
        "train_steps_per_s": STEPS / train_s,
        "inference_images_per_s": BATCH / statistics.median(infer),
        "forward_images_per_s": BATCH / statistics.median(forward),
    }


def main() -> None:
    print(f"tiny Mask2Former on the CPU, batch {BATCH}, torch threads {torch.get_num_threads()}")
    print(f"{'px':>4} {'train steps/s':>14} {'infer img/s':>12} {'forward img/s':>14}")
    figures: dict[str, float] = {"batch": BATCH, "train_steps": STEPS}
    for size in (64, 128):
        result = measure(size)
        print(
            f"{size:>4} {result['train_steps_per_s']:>14.2f} {result['inference_images_per_s']:>12.1f} "
            f"{result['forward_images_per_s']:>14.1f}"
        )
        figures[f"train_steps_per_s_{size}px"] = round(result["train_steps_per_s"], 3)
        figures[f"inference_images_per_s_{size}px"] = round(result["inference_images_per_s"], 2)
        figures[f"inference_vs_forward_time_ratio_{size}px"] = round(
            result["forward_images_per_s"] / result["inference_images_per_s"], 3
        )
    sys.stdout.write(json.dumps(figures) + "\n")


if __name__ == "__main__":
    main()
