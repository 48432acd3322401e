"""The toy world's pretrained-style labeller: a small Mask2Former trained on another domain.

Free-Mask judges its first round with a segmenter pretrained elsewhere. The toy world's stand-in
is trained on *shifted* renders (other textures, tints and a wider range of lights than the toy
model draws, any class in any scene), so it has never seen the data it judges:

    python -m freemask.toyworld.labeller --out freemask/toyworld/labeller

runs the product's own commands (``freemask toyworld scenes --domain D`` for each of
``--domains``, then ``freemask train`` on all of them) with ``configs/demo.yaml``'s classes and
segmenter, keeps the trained folder's final files and writes a model card, and replaces
``--out`` with them whole. Shipped as ``builtin:toy-labeller`` (``segment.labeller``).

Training resumes from its last checkpoint when the same command is run again, so a long run can
be made of background chunks (``freemask train`` keeps ``checkpoints/``).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

from freemask.cli import main as freemask
from freemask.cli.main import runtime_overrides
from freemask.config import load_config
from freemask.records import read_manifest, write_manifest
from freemask.storage import LocalStorage, replace_folder

SHIPPED = ("config.json", "model.safetensors", "labels.json")


def toy_labeller_path() -> Path:
    """The folder of the trained labeller shipped with the package."""
    return Path(__file__).parent / "labeller"


def hardware() -> str:
    """Where training ran: the GPU that ``segment.device: auto`` picks, else the CPU threads."""
    if torch.cuda.is_available():
        return f"one {torch.cuda.get_device_name(0)} GPU"
    machine = platform.processor() or platform.machine()
    return f"{torch.get_num_threads()} CPU thread(s) ({machine})"


def model_card(
    command: str,
    runs: list[list[str]],
    labels: list[str],
    scenes: int,
    seconds: float,
    model_id: str,
) -> str:
    """The shipped folder's MODEL_CARD.md: what was trained on what, by which ``freemask`` runs."""
    *renders, train = (f"`freemask {' '.join(run)}`" for run in runs)
    return f"""# freemask toy-world labeller

A small Mask2Former (`{model_id}`, trained from scratch) that segments the toy
world's labels ({", ".join(labels)}). It was trained on {scenes} renders per domain
({len(renders)} domain(s): `toy` is the world's own textures, `shifted` other textures and tints
and a wider range of lights; any class in any scene at any size, 1-3 objects), with seeds of its
own, never on what the toy model draws nor on a benchmark's scenes: the independent judge of the
active loop's first round (`segment.labeller: builtin:toy-labeller`).

- Command: `python -m freemask.toyworld.labeller {command}`, i.e.
  {", ".join(renders)}, then {train} on their union
- Time: {seconds:.0f} s on {hardware()}, torch {torch.__version__}
- Weights: safetensors only. Licence: Apache-2.0, as the project.
"""


def trained_model_id(config: str, overrides: list[str]) -> str:
    """The ``segment.model_id`` the training run started from: the config's, with the
    ``--set`` overrides applied as the CLI applies them."""
    with runtime_overrides([token for pair in overrides for token in ("--set", pair)]):
        return load_config(config).segment.model_id


def union_of_renders(union: Path, folders: list[Path]) -> None:
    """One training folder whose manifest lists every scene of ``folders``: their files are
    hard-linked (copied across file systems), and the manifest is written last."""
    samples = []
    for folder in folders:
        for sample in read_manifest(LocalStorage(folder)):
            for name in (sample.image, sample.semantic_mask):
                target = union / name
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        target.hardlink_to(folder / name)
                    except OSError:
                        shutil.copyfile(folder / name, target)
            samples.append(sample)
    write_manifest(LocalStorage(union), samples)


def main(argv: list[str] | None = None) -> int:
    """Render the shifted domain, train on it, ship the result; exit status as the CLI's."""
    parser = argparse.ArgumentParser(
        prog="python -m freemask.toyworld.labeller", description=__doc__
    )
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--out", default=str(toy_labeller_path()))
    parser.add_argument("--work", default="build/toy-labeller")
    parser.add_argument("--scenes", type=int, default=4000)
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--domains",
        default="shifted",
        help="comma-separated render domains (toy, shifted), --scenes of each",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a training setting over the config's (e.g. segment.image_size=128); repeatable",
    )
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    work, out = Path(args.work), Path(args.out)
    started = time.perf_counter()
    # 1. Render each domain, then train on their union, with the product's own commands.
    data, trained = work / "scenes", work / "model"
    domains = args.domains.split(",")
    folders = [work / f"scenes-{domain}" for domain in domains]
    renders = []
    for index, (domain, folder) in enumerate(zip(domains, folders, strict=True)):
        # Each domain its own layouts: seeds 7000 apart, clear of every benchmark's.
        seed = args.seed + 7000 * index
        render = ["toyworld", "scenes", "-c", args.config, "--out", str(folder)]
        render += ["--count", str(args.scenes), "--objects", "1,3", "--anywhere"]
        renders.append([*render, "--domain", domain, "--seed", str(seed)])
    train = ["--set", f"segment.train_steps={args.steps}", "--set", "segment.checkpoint_every=500"]
    for override in args.overrides:
        train += ["--set", override]
    train += ["train", "-c", args.config, "--in", str(data), "--out", str(trained)]
    for render in renders:
        status = freemask(render)
        if status:
            return status
    union_of_renders(data, folders)
    status = freemask(train)
    if status:
        return status
    seconds = time.perf_counter() - started

    # 2. Ship: the whole folder is built beside ``out`` before it replaces ``out``, so a killed
    # run never leaves new weights under an old card or config.
    def write_labeller(folder: Path) -> None:
        folder.mkdir()
        for name in SHIPPED:
            shutil.copyfile(trained / name, folder / name)
        id2label = json.loads((folder / "config.json").read_text())["id2label"]
        labels = [id2label[key] for key in sorted(id2label, key=int)]
        model_id = trained_model_id(args.config, args.overrides)
        card = model_card(" ".join(argv), [*renders, train], labels, args.scenes, seconds, model_id)
        (folder / "MODEL_CARD.md").write_text(card)

    out.parent.mkdir(parents=True, exist_ok=True)
    replace_folder(out, write_labeller)
    print(f"saved the toy labeller to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
