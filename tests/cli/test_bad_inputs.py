"""The bad-input corpus: every row runs the real CLI in-process and must end in its exit code with
a message naming the problem, no traceback, and (where marked) no file changed. A bad sample that
a stage can leave out (a mask of the wrong size for refine) is rejected with its reason in
``rejected.jsonl`` and the stage ends 0."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import CLASSES, write_dataset
from PIL import Image

from freemask.cli import main
from freemask.records import read_manifest
from freemask.storage import LocalStorage

BASE = {
    "name": "corpus",
    "classes": CLASSES,
    "segment": {"model_id": "builtin:tiny-mask2former", "image_size": 64, "train_steps": 1},
}


@dataclass(frozen=True)
class Case:
    """One row: what to build under a temporary folder, the argv, and what must come out."""

    name: str
    build: Callable[[Path], None]
    argv: list[str]  # "{tmp}" is replaced by the temporary folder
    code: int
    words: tuple[str, ...]  # each must appear in the output (case-insensitive)
    unchanged: bool = True  # no file under the folder may change
    rejected: str = ""  # words out/rejected.jsonl must hold (a sample left out, exit 0)


def nothing(tmp: Path) -> None:
    """Build nothing."""


def config_text(text: str) -> Callable[[Path], None]:
    """A run.yaml with ``text`` exactly."""

    def build(tmp: Path) -> None:
        (tmp / "run.yaml").write_text(text)

    return build


def config_with(**sections: object) -> Callable[[Path], None]:
    """The base run.yaml (workdir in the folder) with ``sections`` merged in at the top level."""

    def build(tmp: Path) -> None:
        data = {**BASE, "workdir": str(tmp / "work")}
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        (tmp / "run.yaml").write_text(yaml.safe_dump(data))

    return build


def config_bytes(data: bytes) -> Callable[[Path], None]:
    def build(tmp: Path) -> None:
        (tmp / "run.yaml").write_bytes(data)

    return build


def dataset(change: Callable[[Path], None] | None = None, success: bool = True):
    """A valid two-sample prefix at ``data/`` (and run.yaml), then ``change`` applied to it."""

    def build(tmp: Path) -> None:
        config_with()(tmp)
        write_dataset(LocalStorage(tmp / "data"), 2)
        if not success:
            (tmp / "data" / "_SUCCESS").unlink()
        if change:
            change(tmp / "data")

    return build


def manifest_lines(edit: Callable[[list[dict]], list]) -> Callable[[Path], None]:
    """Rewrite data/manifest.jsonl from ``edit(records)`` (dicts, or raw strings as lines)."""

    def change(data: Path) -> None:
        records = [json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines()]
        lines = [r if isinstance(r, str) else json.dumps(r) for r in edit(records)]
        (data / "manifest.jsonl").write_text("".join(line + "\n" for line in lines))

    return change


def record(field: str, value: object, index: int = 0) -> Callable[[list[dict]], list]:
    def edit(records: list[dict]) -> list:
        records[index][field] = value
        return records

    return edit


def instance(field: str, value: object) -> Callable[[list[dict]], list]:
    def edit(records: list[dict]) -> list:
        records[0]["instances"][0][field] = value
        return records

    return edit


def rle(field: str, value: object) -> Callable[[list[dict]], list]:
    def edit(records: list[dict]) -> list:
        records[0]["instances"][0]["rle"][field] = value
        return records

    return edit


def replace_file(which: str, data: bytes | Callable[[], bytes]) -> Callable[[Path], None]:
    """Overwrite the first sample's ``which`` file ('image' or 'semantic_mask')."""

    def change(folder: Path) -> None:
        sample = read_manifest(LocalStorage(folder))[0]
        (folder / getattr(sample, which)).write_bytes(data() if callable(data) else data)

    return change


def png(shape: tuple[int, ...]) -> Callable[[], bytes]:
    def make() -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(np.zeros(shape, dtype=np.uint8)).save(buffer, format="PNG")
        return buffer.getvalue()

    return make


def bomb() -> bytes:
    """A 15000x15000 PNG: a few kilobytes that would decode to 225 megapixels."""
    buffer = io.BytesIO()
    Image.new("1", (15000, 15000)).save(buffer, format="PNG")
    return buffer.getvalue()


def with_soft_mask(data: bytes) -> Callable[[Path], None]:
    """Give the first sample a soft mask file holding ``data``."""

    def change(folder: Path) -> None:
        records = [
            json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()
        ]
        records[0]["soft_mask"] = "soft/x.npy"
        (folder / "soft").mkdir()
        (folder / "soft/x.npy").write_bytes(data)
        (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    return change


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def symlinked_image(folder: Path) -> None:
    """The first sample's image is a link to a file outside the prefix."""
    outside = folder.parent / "secret.png"
    outside.write_bytes(png((48, 64, 3))())
    sample = read_manifest(LocalStorage(folder))[0]
    (folder / sample.image).unlink()
    (folder / sample.image).symlink_to(outside)


def model_folder(files: dict[str, bytes]) -> Callable[[Path], None]:
    def build(tmp: Path) -> None:
        dataset()(tmp)
        for name, data in files.items():
            (tmp / "model" / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / "model" / name).write_bytes(data)

    return build


def tiny_weights() -> bytes:
    """Weights that fit the segmenter ``train`` builds for the corpus config."""
    from safetensors.torch import save

    from freemask.segment import build_tiny_mask2former, run_labels

    model = build_tiny_mask2former(run_labels(CLASSES))
    return save({key: value.contiguous() for key, value in model.state_dict().items()})


def refused_state() -> bytes:
    """A state.pt holding an object that ``torch.load(weights_only=True)`` refuses."""
    import datetime

    import torch

    buffer = io.BytesIO()
    torch.save({"step": 1, "optimizer": datetime.date(2020, 1, 1), "schedule": {}}, buffer)
    return buffer.getvalue()


def checkpoint_with_refused_state(tmp: Path) -> None:
    model_folder(
        {
            LATEST: b'{"folder": "c"}',
            "c/model.safetensors": tiny_weights(),
            "c/state.pt": refused_state(),
        }
    )(tmp)


def credentials(text: str) -> Callable[[Path], None]:
    """A GOOGLE_APPLICATION_CREDENTIALS file holding ``text`` (the test points the variable at it)."""

    def build(tmp: Path) -> None:
        (tmp / "no-credentials.json").write_text(text)

    return build


def shard_parts(folder: Path) -> None:
    (folder / "parts").mkdir()
    (folder / "parts/_SUCCESS-00000-of-00002").write_text("{}")


def torn_line(folder: Path) -> None:
    """An interrupted append: a last line without its newline."""
    with open(folder / "manifest.jsonl", "a") as stream:
        stream.write('{"id": "x')


V = ["config", "validate", "{tmp}/run.yaml"]
MV = ["manifest", "validate", "--in", "{tmp}/data"]
MVC = [*MV, "-c", "{tmp}/run.yaml"]
EXPORT = ["export", "-c", "{tmp}/run.yaml", "--in", "{tmp}/data", "--out", "{tmp}/out"]
REFINE = ["refine", "-c", "{tmp}/run.yaml", "--in", "{tmp}/data", "--out", "{tmp}/out"]
HARMONIZE = ["harmonize", "-c", "{tmp}/run.yaml", "--in", "{tmp}/data", "--out", "{tmp}/out"]
TRAIN = ["train", "-c", "{tmp}/run.yaml", "--in", "{tmp}/data", "--out", "{tmp}/model"]
EVALUATE = ["evaluate", "-c", "{tmp}/run.yaml", "--model", "{tmp}/model", "--in", "{tmp}/data"]
LATEST = "checkpoints/latest.json"

# Config values that must be refused: (section, field, value, words the message must contain).
BAD_VALUES = [
    ("generate", "images_per_class", True, "valid integer"),
    ("generate", "images_per_class", 0, ">= 1"),
    ("generate", "images_per_class", -3, ">= 1"),
    ("generate", "images_per_class", 10**12, "<= 1000000"),
    ("generate", "images_per_class", "1e12", "valid integer"),
    ("generate", "images_per_class", 2.5, "valid integer"),
    ("generate", "images_per_class", "four", "valid integer"),
    ("generate", "images_per_class", None, "valid integer"),
    ("generate", "images_per_class", [1], "valid integer"),
    ("generate", "batch_size", 0, ">= 1"),
    ("generate", "batch_size", False, "valid integer"),
    ("generate", "num_inference_steps", 10**9, "<= 10000000"),
    ("generate", "height", 65536, "<= 4096"),
    ("generate", "height", 100, "multiple of 8"),
    ("generate", "height", 32, ">= 64"),
    ("generate", "width", 1e5, "valid integer"),
    ("generate", "guidance_scale", 0.5, ">= 1"),
    ("generate", "guidance_scale", "high", "valid number"),
    ("generate", "dtype", "float8", "float32"),
    ("generate", "scheduler", "lms", "dpm++"),
    ("generate", "prompt_templates", [], "at least 1"),
    ("generate", "prompt_templates", ["a photo"], "no {name}"),
    ("generate", "prompt_templates", ["a {name} {colour}"], "unknown placeholder"),
    ("generate", "timestep_window", [0.8, 0.2], "low < high"),
    ("generate", "timestep_window", [0.0, 2.0], "<= 1"),
    ("generate", "ignore_band", [0.7, 0.2], "low <= high"),
    ("generate", "threshold", "mean", "otsu"),
    ("generate", "fixed_threshold", 1.5, "<= 1"),
    ("generate", "max_border_sides", 5, "<= 4"),
    ("generate", "max_border_sides", True, "valid integer"),
    ("generate", "strength", 0, "> 0"),
    ("generate", "self_attention_power", 100, "<= 16"),
    ("generate", "colour", "red", "unknown key"),
    ("generate", "synonyms", {"cat": [""]}, "at least 1"),
    ("relate", "similarity_threshold", 2, "<= 1"),
    ("relate", "thesarus", "x.yaml", "unknown key"),
    ("compose", "images", 10**11, "<= 1000000"),
    ("compose", "images", True, "valid integer"),
    ("compose", "objects_per_image", [4, 2], "min <= max"),
    ("compose", "objects_per_image", [0, 2], ">= 1"),
    ("compose", "placer", "fopa", "fopa_weights"),
    ("compose", "placer", "random", "heuristic"),
    ("compose", "band_width", 0.9, "<= 0.5"),
    ("compose", "backgrounds_per_scene", 10**8, "<= 10000000"),
    ("refine", "method", "crf", "affinity"),
    ("refine", "background_threshold", 0.9, "below foreground_threshold"),
    ("refine", "logt", 13, "<= 12"),
    ("refine", "learning_rate", 1.5, "< 1"),
    ("harmonize", "method", "pctnet", "needs weights"),
    ("harmonize", "feather_sigma", 11, "<= 10"),
    ("segment", "image_size", 96 + 16, "multiple of 32"),
    ("segment", "image_size", 32, ">= 64"),
    ("segment", "image_size", 65536, "<= 4096"),
    ("segment", "train_steps", 0, ">= 1"),
    ("segment", "train_steps", True, "valid integer"),
    ("active", "max_rounds", 0, ">= 1"),
    ("active", "max_rounds", 11, "<= 10"),
    ("active", "keep_rule", "all", "any_class"),
    ("active", "iou_threshold", -0.1, ">= 0"),
    ("active", "keep_percentile", 100, "< 100"),
    ("kubeflow", "retries", 11, "<= 10"),
    ("kubeflow", "dataset_version", "a/b", "pattern"),
    ("tracking", "uri", ["x"], "valid string"),
    ("tracking", "ui_url", "mlflow.example.com", "pattern"),
]

CASES: list[Case] = [
    Case(
        f"config-{section}.{field}={value!r}"[:80],
        config_with(**{section: {field: value}}),
        V,
        2,
        (field, words),
    )
    for section, field, value, words in BAD_VALUES
]
CASES += [
    Case("config-missing", nothing, V, 2, ("run.yaml", "not found")),
    Case("config-empty", config_text(""), V, 2, ("classes", "required")),
    Case("config-list", config_text("- a\n- b\n"), V, 2, ("expected a mapping",)),
    Case("config-scalar", config_text("hello\n"), V, 2, ("expected a mapping",)),
    Case("config-bad-yaml", config_text("classes: [cat\n"), V, 2, ("not valid YAML",)),
    Case("config-tab", config_text("classes:\n\t- cat\n"), V, 2, ("not valid YAML",)),
    Case("config-non-utf8", config_bytes(b"classes: [caf\xe9]\n"), V, 2, ("not UTF-8",)),
    Case("config-binary", config_bytes(b"\x00\xff\xfe\x00"), V, 2, ("not UTF-8",)),
    Case(
        "config-duplicate-section",
        config_text("classes: [cat]\ngenerate: {images_per_class: 2}\ngenerate: {height: 64}\n"),
        V,
        2,
        ("run.yaml:3", "generate", "repeated key"),
    ),
    Case(
        "config-duplicate-field",
        config_text("classes: [cat]\ngenerate:\n  height: 64\n  height: 128\n"),
        V,
        2,
        ("run.yaml:4", "generate.height", "repeated key"),
    ),
    Case("config-no-classes", config_text("classes: []\n"), V, 2, ("classes", "at least 1")),
    Case("config-repeated-class", config_text("classes: [a, a]\n"), V, 2, ("repeated: a",)),
    Case("config-empty-class", config_text("classes: ['']\n"), V, 2, ("classes.0",)),
    Case("config-bad-name", config_text("name: 'a b'\nclasses: [a]\n"), V, 2, ("name",)),
    Case("config-negative-seed", config_text("seed: -1\nclasses: [a]\n"), V, 2, ("seed",)),
    Case("config-huge-seed", config_text("seed: 99999999999\nclasses: [a]\n"), V, 2, ("seed",)),
    Case("config-unknown-section", config_text("classes: [a]\ngenrate: {}\n"), V, 2, ("genrate",)),
    Case("config-section-scalar", config_text("classes: [a]\ngenerate: 3\n"), V, 2, ("generate",)),
    Case("config-is-directory", lambda tmp: (tmp / "run.yaml").mkdir(), V, 2, ("not found",)),
    # Manifests.
    Case("manifest-missing", nothing, MV, 2, ("manifest.jsonl", "not found")),
    Case(
        "in-is-a-file",
        config_with(),
        ["manifest", "validate", "--in", "{tmp}/run.yaml"],
        2,
        ("not found",),
    ),
    Case(
        "manifest-torn-last-line",
        dataset(torn_line),
        MV,
        2,
        ("torn",),
    ),
    Case(
        "manifest-bad-json-line",
        dataset(manifest_lines(lambda r: ["{nope", *r])),
        MV,
        2,
        (":1:", "not valid JSON"),
    ),
    Case("manifest-not-object", dataset(manifest_lines(lambda r: ["[1, 2]", *r])), MV, 2, (":1:",)),
    Case(
        "manifest-non-utf8",
        dataset(lambda d: (d / "manifest.jsonl").write_bytes(b"\xff\xfe")),
        MV,
        2,
        ("not UTF-8",),
    ),
    Case(
        "manifest-same-id-different-record",
        dataset(manifest_lines(lambda r: [*r, {**r[0], "seed": 77}])),
        MV,
        2,
        ("already on line 1", "different record"),
    ),
    Case("manifest-bad-id", dataset(manifest_lines(record("id", "../x"))), MV, 2, ("id",)),
    Case(
        "manifest-absolute-image",
        dataset(manifest_lines(record("image", "/etc/passwd"))),
        MV,
        2,
        ("absolute",),
    ),
    Case(
        "manifest-dotdot-image",
        dataset(manifest_lines(record("image", "../x.png"))),
        MV,
        2,
        ("'..'",),
    ),
    Case(
        "manifest-uri-image",
        dataset(manifest_lines(record("image", "gs://b/x.png"))),
        MV,
        2,
        ("URI",),
    ),
    Case("manifest-width-zero", dataset(manifest_lines(record("width", 0))), MV, 2, ("width",)),
    Case(
        "manifest-height-huge", dataset(manifest_lines(record("height", 10**9))), MV, 2, ("height",)
    ),
    Case(
        "manifest-unknown-field",
        dataset(manifest_lines(record("colour", "red"))),
        MV,
        2,
        ("colour",),
    ),
    Case(
        "manifest-missing-image-field",
        dataset(manifest_lines(lambda r: [{k: v for k, v in r[0].items() if k != "image"}])),
        MV,
        2,
        ("image", "required"),
    ),
    Case(
        "manifest-round-negative", dataset(manifest_lines(record("round", -1))), MV, 2, ("round",)
    ),
    Case(
        "manifest-class-id-zero",
        dataset(manifest_lines(instance("class_id", 0))),
        MV,
        2,
        ("class_id",),
    ),
    Case(
        "manifest-class-id-255",
        dataset(manifest_lines(instance("class_id", 255))),
        MV,
        2,
        ("class_id",),
    ),
    Case(
        "manifest-class-id-beyond-config",
        dataset(manifest_lines(instance("class_id", 9))),
        MVC,
        2,
        ("exceeds the 3 configured classes",),
    ),
    Case(
        "manifest-class-name-vs-id",
        dataset(manifest_lines(instance("class_name", "dog"))),
        MVC,
        2,
        ("which the config names",),
    ),
    Case(
        "manifest-bbox-short", dataset(manifest_lines(instance("bbox", [1, 2]))), MV, 2, ("bbox",)
    ),
    Case(
        "manifest-rle-undecodable",
        dataset(manifest_lines(rle("counts", "zz~~"))),
        MV,
        2,
        ("RLE does not decode",),
    ),
    Case(
        "manifest-rle-short",
        dataset(manifest_lines(rle("counts", "0"))),
        MV,
        2,
        ("RLE does not decode", "runs cover"),
    ),
    Case(
        "manifest-rle-wrong-size",
        dataset(manifest_lines(rle("size", [20, 20]))),
        MV,
        2,
        ("mask is 20x20",),
    ),
    Case(
        "manifest-rle-negative-size",
        dataset(manifest_lines(rle("size", [-1, 20]))),
        MV,
        2,
        ("size",),
    ),
    Case(
        "manifest-rle-counts-list",
        dataset(manifest_lines(rle("counts", [1, 2]))),
        MV,
        2,
        ("counts",),
    ),
    Case(
        "manifest-missing-file",
        dataset(lambda d: (d / read_manifest(LocalStorage(d))[0].image).unlink()),
        MV,
        2,
        ("does not exist",),
    ),
    Case(
        "manifest-mask-wrong-size",
        dataset(replace_file("semantic_mask", png((10, 10)))),
        MV,
        2,
        ("is 10x10, expected 48x64",),
    ),
    Case(
        "manifest-image-not-image",
        dataset(replace_file("image", b"not a png")),
        MV,
        2,
        ("not a readable image",),
    ),
    Case(
        "manifest-image-bomb",
        dataset(replace_file("image", bomb)),
        MV,
        2,
        ("not a readable image",),
    ),
    Case(
        "manifest-mask-zero-bytes",
        dataset(replace_file("semantic_mask", b"")),
        MV,
        2,
        ("not a readable image",),
    ),
    # Export.
    Case("export-unfinished", dataset(success=False), EXPORT, 2, ("unfinished", "_SUCCESS")),
    Case(
        "export-rle-undecodable",
        dataset(manifest_lines(rle("counts", "zz~~"))),
        EXPORT,
        2,
        ("RLE does not decode",),
    ),
    Case(
        "export-unknown-class",
        dataset(manifest_lines(instance("class_name", "cow"))),
        EXPORT,
        2,
        ("'cow'", "not among the configured classes"),
    ),
    Case("export-bad-format", dataset(), [*EXPORT, "--format", "yolo"], 2, ("yolo",)),
    Case(
        "export-symlink-escape",
        dataset(symlinked_image),
        EXPORT,
        2,
        ("outside", "symbolic link"),
        unchanged=False,
    ),
    Case(
        "export-bomb",
        dataset(replace_file("image", bomb)),
        [*EXPORT, "--format", "voc"],
        2,
        ("larger than",),
        unchanged=False,
    ),
    Case(
        "export-missing-config",
        dataset(),
        ["export", "-c", "{tmp}/no.yaml", "--in", "{tmp}/data", "--out", "{tmp}/out"],
        2,
        ("no.yaml", "not found"),
    ),
    # Stages reading prefixes.
    Case("refine-unfinished-input", dataset(success=False), REFINE, 2, ("unfinished", "_SUCCESS")),
    Case(
        "refine-sharded-unjoined",
        dataset(shard_parts, success=False),
        REFINE,
        2,
        ("1 shard(s) finished", "join"),
    ),
    Case("refine-missing-input", config_with(), REFINE, 2, ("unfinished",)),
    Case(
        "refine-input-is-file",
        config_with(),
        ["refine", "-c", "{tmp}/run.yaml", "--in", "{tmp}/run.yaml", "--out", "{tmp}/out"],
        2,
        ("unfinished",),
    ),
    Case(
        "refine-empty-input",
        dataset(lambda d: (d / "manifest.jsonl").write_text("")),
        REFINE,
        2,
        ("no samples",),
    ),
    Case(
        "refine-zero-byte-npy",
        dataset(with_soft_mask(b"")),
        REFINE,
        2,
        ("not a readable .npy", "x.npy"),
        unchanged=False,
    ),
    Case(
        "refine-object-npy",
        dataset(with_soft_mask(npy(np.array([{}], dtype=object)))),
        REFINE,
        2,
        ("not a readable .npy",),
        unchanged=False,
    ),
    Case(
        "refine-mask-wrong-size",
        dataset(replace_file("semantic_mask", png((10, 10)))),
        REFINE,
        0,
        ("rejected",),
        unchanged=False,
        rejected="shape (10, 10) does not match the 48x64 image",
    ),
    Case(
        "refine-mask-rgb",
        dataset(replace_file("semantic_mask", png((48, 64, 3)))),
        REFINE,
        0,
        ("rejected",),
        unchanged=False,
        rejected="shape (48, 64, 3) does not match the 48x64 image",
    ),
    Case(
        "refine-image-bomb",
        dataset(replace_file("image", bomb)),
        REFINE,
        2,
        ("larger than", "decompression bomb"),
        unchanged=False,
    ),
    Case(
        "refine-image-garbage",
        dataset(replace_file("image", b"\x89PNG garbage")),
        REFINE,
        2,
        ("not a readable image",),
        unchanged=False,
    ),
    Case(
        "refine-bad-manifest",
        dataset(manifest_lines(lambda r: ["{", *r])),
        REFINE,
        2,
        ("manifest.jsonl:1",),
    ),
    Case("harmonize-unfinished-input", dataset(success=False), HARMONIZE, 2, ("unfinished",)),
    Case(
        "harmonize-empty-input",
        dataset(lambda d: (d / "manifest.jsonl").write_text("")),
        HARMONIZE,
        2,
        ("no samples",),
    ),
    Case(
        "compose-unfinished-input",
        dataset(success=False),
        ["compose", "-c", "{tmp}/run.yaml", "--in", "{tmp}/data", "--out", "{tmp}/out"],
        2,
        ("unfinished",),
    ),
    Case(
        "backgrounds-unfinished-relate",
        config_with(),
        ["backgrounds", "-c", "{tmp}/run.yaml", "--in", "{tmp}/nothing", "--out", "{tmp}/out"],
        2,
        ("unfinished",),
    ),
    Case(
        "stage-settings-json-broken",
        dataset(
            lambda d: (d.parent / "out").mkdir() or (d.parent / "out/stage.json").write_text("[")
        ),
        REFINE,
        2,
        ("stage.json", "not valid JSON"),
    ),
    Case(
        "stage-settings-other-hash",
        dataset(
            lambda d: (
                (d.parent / "out").mkdir()
                or (d.parent / "out/stage.json").write_text('{"settings_hash": "x"}')
            )
        ),
        REFINE,
        2,
        ("other settings",),
    ),
    Case(
        "relate-missing-thesaurus",
        config_with(relate={"thesaurus": "nowhere.yaml"}),
        ["relate", "-c", "{tmp}/run.yaml", "--out", "{tmp}/out"],
        2,
        ("nowhere.yaml",),
    ),
    Case(
        "relate-thesaurus-non-utf8",
        lambda tmp: (
            config_with(relate={"thesaurus": "t.yaml"})(tmp)
            or (tmp / "t.yaml").write_bytes(b"\xff\xfe\x00")
        ),
        ["relate", "-c", "{tmp}/run.yaml", "--out", "{tmp}/out"],
        2,
        ("t.yaml", "UTF-8"),
    ),
    Case(
        "relate-thesaurus-not-yaml",
        lambda tmp: (
            config_with(relate={"thesaurus": "t.yaml"})(tmp)
            or (tmp / "t.yaml").write_text("a: [\n")
        ),
        ["relate", "-c", "{tmp}/run.yaml", "--out", "{tmp}/out"],
        2,
        ("t.yaml", "YAML"),
    ),
    # Shards and join.
    Case("shard-garbage", dataset(), [*REFINE, "--shard", "x"], 2, ("--shard", "i/n")),
    Case("shard-out-of-range", dataset(), [*REFINE, "--shard", "4/4"], 2, ("0 <= i < n",)),
    Case("shard-zero-count", dataset(), [*REFINE, "--shard", "0/0"], 2, ("n >= 1",)),
    Case(
        "join-unfinished",
        dataset(),
        ["join", "--in", "{tmp}/data", "--stage", "refine", "--shards", "2"],
        2,
        ("have not finished",),
    ),
    # Models and checkpoints.
    Case(
        "train-latest-without-folder",
        model_folder({LATEST: b'{"step": 1}'}),
        TRAIN,
        2,
        ("latest.json", "folder"),
    ),
    Case(
        "train-latest-not-json",
        model_folder({LATEST: b"{"}),
        TRAIN,
        2,
        ("latest.json", "not valid JSON"),
    ),
    Case(
        "train-latest-list", model_folder({LATEST: b"[]"}), TRAIN, 2, ("latest.json", "JSON object")
    ),
    Case(
        "train-checkpoint-missing",
        model_folder({LATEST: b'{"folder": "checkpoints/x"}'}),
        TRAIN,
        2,
        ("checkpoints/x/model.safetensors", "not found"),
    ),
    Case(
        "train-checkpoint-not-safetensors",
        model_folder({LATEST: b'{"folder": "c"}', "c/model.safetensors": b"pickle"}),
        TRAIN,
        2,
        ("not readable safetensors",),
    ),
    Case(
        "train-checkpoint-refused-by-weights-only",
        checkpoint_with_refused_state,
        TRAIN,
        2,
        ("state.pt", "refused by torch.load(weights_only=True)"),
    ),
    Case("evaluate-no-model", dataset(), EVALUATE, 2, ("no trained model",)),
    Case(
        "evaluate-config-missing",
        model_folder({"model.safetensors": b"x"}),
        EVALUATE,
        2,
        ("config.json", "not found"),
    ),
    Case(
        "evaluate-config-not-json",
        model_folder({"model.safetensors": b"x", "config.json": b"\xff"}),
        EVALUATE,
        2,
        ("config.json", "UTF-8"),
    ),
    # Remote storage without credentials, and URIs.
    Case(
        "gcs-no-credentials",
        nothing,
        ["manifest", "validate", "--in", "gs://no-bucket/x"],
        2,
        ("credentials",),
    ),
    Case(
        "gcs-credentials-not-json",
        credentials("{"),
        ["manifest", "validate", "--in", "gs://no-bucket/x"],
        2,
        ("credentials",),
    ),
    Case(
        "gcs-credentials-incomplete",
        credentials('{"type": "authorized_user"}'),
        ["manifest", "validate", "--in", "gs://no-bucket/x"],
        2,
        ("credentials",),
    ),
    Case(
        "unsupported-scheme",
        nothing,
        ["manifest", "validate", "--in", "s3://b/x"],
        2,
        ("unsupported URI scheme",),
    ),
    # Command-line usage.
    Case("unknown-command", nothing, ["frobnicate"], 2, ("frobnicate",)),
    Case("missing-option", nothing, ["manifest", "validate"], 2, ("--in",)),
    Case(
        "set-without-equals",
        nothing,
        ["--set", "generate.height", "config", "validate", "x"],
        2,
        ("--set", "section.field=value"),
    ),
    Case(
        "env-override-bad",
        config_with(),
        ["--set", "generate.height=abc", *V],
        2,
        ("FREEMASK__GENERATE__HEIGHT", "valid integer"),
    ),
    Case(
        "env-override-bool",
        config_with(),
        ["--set", "compose.images=true", *V],
        2,
        ("FREEMASK__COMPOSE__IMAGES", "valid integer"),
    ),
]


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (links not followed) with a hash of its bytes."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def test_the_corpus_is_large_and_names_are_unique() -> None:
    assert len(CASES) >= 120
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_refused_in_one_line(case: Case, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-credentials.json"))
    monkeypatch.chdir(tmp_path)
    case.build(tmp_path)
    before = snapshot(tmp_path)
    code = main([part.replace("{tmp}", str(tmp_path)) for part in case.argv])
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert "Traceback" not in output and "internal error" not in output, output
    assert code == case.code, output
    for word in case.words:
        assert word.lower() in output.lower(), f"{word!r} not in {output!r}"
    if case.unchanged:
        assert snapshot(tmp_path) == before
    if case.rejected:
        assert case.rejected in (tmp_path / "out/rejected.jsonl").read_text()
    assert os.environ.get("FREEMASK__GENERATE__HEIGHT") is None  # --set is undone
