"""The toy world's learned harmonizer: trained on free, exact (composite, target) pairs.

The toy renderer lights objects and background with one ``Light``, so a composite (objects
rendered under lights of their own, pasted on the background rendered under the scene's
light) and its exact target (the same objects under the scene's light) cost one render each
(``toy_composite``, the recipe of ``benchmarks/bench_harmonize_toyworld.py``). A
``freemask.harmonize.learned.LightNet`` learns from them to re-light one object at a time,
the others masked out, as the harmonize stage calls it:

    python -m freemask.toyworld.harmonizer --work build/toy-harmonizer

renders the training composites (seeds ``TRAIN_SEED`` + i, cached in the work folder), trains
in resumable chunks (``--chunk-steps``; the same command resumes from
``<work>/checkpoint.pt``, tensors only, read with ``weights_only=True``), scores held-out
composites (seeds ``HELD_OUT_SEED`` + i) against no harmonization, and ships
``freemask/toyworld/harmonizer`` (safetensors, config, a model card), built beside and swapped
in whole. Shipped as ``builtin:toy-harmonizer`` (``harmonize.method: learned``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from freemask.harmonize.learned import (
    LightNet,
    LightNetSettings,
    load_light_net,
    relight,
    save_light_net,
)
from freemask.storage import replace_folder
from freemask.toyworld.render import SCENES, random_light, random_objects, render

SIZE = 128
# Seeds of the training and held-out composites: far from the benchmark's (seed * 100_003 +
# index for seeds 0-2, below 300_000) and from each other, so no scored composite is trained on.
TRAIN_SEED = 7_000_000
HELD_OUT_SEED = 8_000_000
NETWORK = LightNetSettings(width=32, hidden=128, input_size=64)


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation: steps, objects per batch, peak learning rate, and the seed of the draws."""

    steps: int = 6000
    batch_size: int = 32
    learning_rate: float = 2e-3
    seed: int = 0


SETTINGS = TrainSettings()


def toy_harmonizer_path() -> Path:
    """The folder of the trained harmonizer shipped with the package."""
    return Path(__file__).parent / "harmonizer"


def toy_composite(
    seed: int, size: int = SIZE
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(composite, exact target, owners, classes) of the scene drawn from ``seed``: 1-2
    objects, each rendered under a random light of its own and pasted on the background
    rendered under the scene's light; the target renders them under the scene's light.
    ``owners`` holds, per pixel, the index of the object that owns it (-1: background);
    ``classes`` names each object's class, in that order."""
    rng = np.random.default_rng([seed, 5])
    scene = str(rng.choice(list(SCENES)))
    objects = random_objects(rng, int(rng.integers(1, 3)))
    scene_light = random_light(rng)
    target = render(scene, objects, size, seed, scene_light)
    pasted = render(scene, [], size, seed, scene_light).image.copy()
    assert target.owners is not None
    for index in range(len(objects)):  # each object drawn under a light of its own
        own = render(scene, objects, size, seed, random_light(rng))
        visible = target.owners == index
        pasted[visible] = own.image[visible]
    classes = [obj.name for obj in objects]
    return pasted, target.image, target.owners.astype(np.int8), classes


def toy_pairs(count: int, seed: int, cache: Path | None = None) -> dict[str, np.ndarray]:
    """``count`` composites from seeds ``seed`` + i: ``composites``, ``targets`` (N x S x S x 3
    uint8), ``owners`` (N x S x S int8); cached in ``cache`` (an .npz) when given."""
    if cache is not None and cache.exists():
        with np.load(cache) as data:
            return dict(data)
    rendered = [toy_composite(seed + index) for index in range(count)]
    pairs = {
        name: np.stack([scene[k] for scene in rendered])
        for k, name in enumerate(("composites", "targets", "owners"))
    }
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **pairs)
    return pairs


def object_index(owners: np.ndarray) -> np.ndarray:
    """[M, 2]: (composite, object) of every visible object of the pairs' ``owners``."""
    return np.array(
        [
            (n, k)
            for n, scene in enumerate(owners)
            for k in range(int(scene.max()) + 1)
            if (scene == k).any()
        ],
        np.int64,
    )


def batch_tensors(pairs: dict[str, np.ndarray], picks: np.ndarray, flips: np.ndarray):
    """(composites, targets in [0, 1], object masks, other objects' masks) [B, C, S, S] of the
    picked (composite, object) rows, mirrored left-right where ``flips`` says."""
    rows = picks[:, 0]
    composites = torch.from_numpy(pairs["composites"][rows]).permute(0, 3, 1, 2).float() / 255
    targets = torch.from_numpy(pairs["targets"][rows]).permute(0, 3, 1, 2).float() / 255
    owners = torch.from_numpy(pairs["owners"][rows]).long()[:, None]
    chosen = torch.from_numpy(picks[:, 1])[:, None, None, None]
    masks = (owners == chosen).float()
    others = ((owners >= 0) & (owners != chosen)).float()
    flip = torch.from_numpy(flips)[:, None, None, None]
    tensors = [torch.where(flip, t.flip(-1), t) for t in (composites, targets, masks, others)]
    return tuple(tensors)


def foreground_mse(image: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B]: each object's mean squared error over its pixels (0-1 scale)."""
    squared = ((image - target) ** 2 * mask).sum((1, 2, 3))
    return squared / (3 * mask.sum((1, 2, 3))).clamp_min(1)


def train_light_net(
    pairs: dict[str, np.ndarray],
    settings: TrainSettings = SETTINGS,
    network: LightNetSettings = NETWORK,
    *,
    checkpoint: Path | None = None,
    until_step: int | None = None,
) -> LightNet:
    """A ``LightNet`` trained on the pairs' objects to minimise their foreground MSE, seeded.

    With ``checkpoint`` (a file), training resumes from it when it exists and saves its state
    there (tensors only) when it stops, so chunks of ``until_step`` steps train the very model
    one uninterrupted run trains (same draws, same schedule)."""
    torch.manual_seed(settings.seed)
    generator = np.random.default_rng(settings.seed)
    model = LightNet.from_settings(network)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, settings.learning_rate, total_steps=settings.steps, pct_start=0.05
    )
    start = 0
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        generator.bit_generator.state = json.loads(state["generator"])
        start = int(state["step"])
    stop = settings.steps if until_step is None else min(until_step, settings.steps)
    objects = object_index(pairs["owners"])
    model.train()
    for _ in range(start, stop):
        picks = objects[generator.integers(len(objects), size=settings.batch_size)]
        flips = generator.random(settings.batch_size) < 0.5
        composites, targets, masks, others = batch_tensors(pairs, picks, flips)
        relit = relight(composites, masks, model(composites, masks, others))
        loss = foreground_mse(relit, targets, masks).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    if checkpoint is not None:
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "generator": json.dumps(generator.bit_generator.state),
            "step": stop,
        }
        torch.save(state, checkpoint)
    return model.eval()


def checkpoint_step(checkpoint: Path) -> int:
    """The number of steps a ``train_light_net`` checkpoint holds (0 when there is none)."""
    if not checkpoint.exists():
        return 0
    return int(torch.load(checkpoint, map_location="cpu", weights_only=True)["step"])


@torch.no_grad()
def held_out_fmse(model: LightNet, pairs: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean per-object fMSE (0-255 scale, uint8 outputs) of the composites and of the model's
    re-lit objects against the exact targets, each object alone (the others masked out)."""
    objects = object_index(pairs["owners"])
    none, learned = [], []
    for start in range(0, len(objects), 64):
        picks = objects[start : start + 64]
        composites, targets, masks, others = batch_tensors(pairs, picks, np.zeros(len(picks), bool))
        relit = relight(composites, masks, model(composites, masks, others))
        relit = (relit * 255).round() / 255
        none.append(foreground_mse(composites, targets, masks))
        learned.append(foreground_mse(relit, targets, masks))
    return {
        "none_fmse": round(float(torch.cat(none).mean()) * 255**2, 1),
        "learned_fmse": round(float(torch.cat(learned).mean()) * 255**2, 1),
        "objects": len(objects),
    }


def hardware() -> str:
    """Where training ran: CPU threads, machine and torch version."""
    machine = platform.machine() or platform.processor()
    return f"{torch.get_num_threads()} CPU thread(s) ({machine}), torch {torch.__version__}"


def model_card(command: str, scenes: int, held_out: int, seconds: float, scores: dict) -> str:
    """The shipped folder's MODEL_CARD.md."""
    parameters = sum(p.numel() for p in LightNet.from_settings(NETWORK).parameters())
    ratio = scores["learned_fmse"] / scores["none_fmse"]
    return f"""# freemask toy-world learned harmonizer (builtin:toy-harmonizer)

Re-lights a pasted toy object to its scene's light: `freemask.harmonize.learned.LightNet`
({parameters:,} parameters, `{json.dumps(asdict(NETWORK))}`) predicts per colour channel a
log-gain plane over the image, applied to the object's pixels only. Trained on {scenes}
toy composites (`freemask.toyworld.harmonizer.toy_composite`: 1-2 objects at {SIZE} px, each
rendered under a random light of its own and pasted on the background rendered under the
scene's light; the target renders them under the scene's light), seeds {TRAIN_SEED:,} +
i. The benchmark's composites (`benchmarks/bench_harmonize_toyworld.py`, seeds below 300,000)
are never trained on.

- Command: `python -m freemask.toyworld.harmonizer {command}`
- Settings: `{json.dumps(asdict(SETTINGS))}` (AdamW, one-cycle schedule, per-object foreground
  MSE, left-right flips)
- Time: {seconds:.0f} s of training on {hardware()}
- Held-out ({held_out} composites, {scores["objects"]} objects, seeds {HELD_OUT_SEED:,} + i): fMSE
  {scores["learned_fmse"]:.1f} against {scores["none_fmse"]:.1f} for no harmonization (ratio
  {ratio:.3f})
- Scope: the toy world's lights only; photographs keep `pctnet` or `color_transfer`.
- Weights: safetensors only. Licence: Apache-2.0, as the project.
"""


def main(argv: list[str] | None = None) -> int:
    """Render, train a chunk (or all of it), score and ship when training is done."""
    parser = argparse.ArgumentParser(
        prog="python -m freemask.toyworld.harmonizer", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--work", type=Path, default=Path("build/toy-harmonizer"))
    parser.add_argument("--out", type=Path, default=toy_harmonizer_path())
    parser.add_argument("--scenes", type=int, default=8000, help="training composites")
    parser.add_argument("--held-out", type=int, default=400, help="held-out composites")
    parser.add_argument("--chunk-steps", type=int, default=500, help="steps between checkpoints")
    parser.add_argument(
        "--stop-after", type=int, default=None, help="stop at this step (resume later)"
    )
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    checkpoint, timing = work / "checkpoint.pt", work / "seconds.json"

    # 1. The training composites (cached).
    pairs = toy_pairs(args.scenes, TRAIN_SEED, work / f"pairs-{TRAIN_SEED}-{args.scenes}.npz")

    # 2. Train in chunks; each ends with a checkpoint, so a killed run loses one chunk at most.
    stop = min(args.stop_after or SETTINGS.steps, SETTINGS.steps)
    seconds = json.loads(timing.read_text())["seconds"] if timing.exists() else 0.0
    model = None
    while (step := checkpoint_step(checkpoint)) < stop or model is None:
        started = time.perf_counter()
        until = min(step + args.chunk_steps, stop)
        model = train_light_net(pairs, SETTINGS, NETWORK, checkpoint=checkpoint, until_step=until)
        seconds += time.perf_counter() - started
        timing.write_text(json.dumps({"seconds": seconds}))
        print(f"harmonizer: step {until}/{SETTINGS.steps}, {seconds:.0f} s", flush=True)
    if stop < SETTINGS.steps:
        print(f"harmonizer: stopped at step {stop}; the same command without --stop-after resumes")
        return 0

    # 3. Score on held-out composites, then ship the folder whole.
    held_out = toy_pairs(args.held_out, HELD_OUT_SEED)
    scores = held_out_fmse(model, held_out)
    print(json.dumps(scores))

    def write_harmonizer(folder: Path) -> None:
        folder.mkdir()
        save_light_net(model, NETWORK, folder)
        card = model_card(" ".join(argv), args.scenes, args.held_out, seconds, scores)
        (folder / "MODEL_CARD.md").write_text(card)
        load_light_net(folder)  # what ships must load

    args.out.parent.mkdir(parents=True, exist_ok=True)
    replace_folder(args.out, write_harmonizer)
    print(f"saved the harmonizer to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
