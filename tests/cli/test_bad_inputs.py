"""The bad-input corpus: every row runs the real CLI in-process and must end in its exit code with
a message naming the problem, no traceback, and (where marked) no file changed. A bad sample that
a stage can leave out (a mask of the wrong size for refine) is rejected with its reason in
``rejected.jsonl`` and the stage ends 0."""

from __future__ import annotations

import fcntl
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
from freemask.records import MAX_RECORD_CHARS, read_manifest
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
    ("active", "max_rounds", -1, ">= 0"),
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
        "manifest-class-id-65535",
        dataset(manifest_lines(instance("class_id", 65535))),
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


# Loop settings, degenerate results and busy work directories.
HELD_LOCKS: list[int] = []  # descriptors kept open: a lock another run holds


def finished_loop(change: dict) -> Callable[[Path], None]:
    """A finished one-round loop at active/ on the two-sample prefix, then run.yaml changed."""

    def build(tmp: Path) -> None:
        dataset()(tmp)
        config_with(active={"max_rounds": 1, "iou_threshold": 0.0})(tmp)
        argv = ["active", "-c", str(tmp / "run.yaml"), "--in", str(tmp / "data")]
        argv += ["--out", str(tmp / "active")]
        assert main(argv) == 0
        config_with(active={"max_rounds": 1, "iou_threshold": 0.0, **change})(tmp)

    return build


def workdir_held(tmp: Path) -> None:
    """run.yaml, and its work directory held by another run (its lock taken and kept)."""
    config_with()(tmp)
    (tmp / "work").mkdir()
    handle = os.open(tmp / "work" / ".freemask-run.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(handle, fcntl.LOCK_EX)
    os.pwrite(handle, b"4242", 0)
    HELD_LOCKS.append(handle)


ACTIVE = ["active", "-c", "{tmp}/run.yaml", "--in", "{tmp}/data", "--out", "{tmp}/active"]
CASES += [
    Case(
        f"loop-changed-{field}",
        finished_loop({field: value}),
        ACTIVE,
        2,
        (f"active.{field}", "--refresh"),
    )
    for field, value in (("keep_rule", "percentile"), ("iou_threshold", 0.4), ("max_rounds", 2))
]
CASES += [
    Case("run-workdir-busy", workdir_held, ["run", "-c", "{tmp}/run.yaml"], 2, ("pid 4242",)),
    Case(
        "manifest-record-past-the-bound",
        dataset(manifest_lines(record("prompt", "x" * (MAX_RECORD_CHARS + 1)))),
        MV,
        2,
        ("more than the 67108864 one sample may take",),
    ),
    Case(
        "manifest-megabyte-value-in-one-short-line",
        dataset(manifest_lines(record("width", "9" * 2**20))),
        MV,
        2,
        ("width", "characters)"),
    ),
    Case(
        "export-empty-dataset",
        dataset(manifest_lines(lambda records: [])),
        EXPORT,
        2,
        ("holds no samples",),
    ),
]
# Config bounds (YAML size, nesting, aliases expanded; class count; long values) and credentials.
CASES += [
    Case(
        f"config-alias-bomb-{where}",
        config_text(
            ("classes: [cat]\n" if where == "unknown-key" else "")
            + "bombs:\n"
            + "".join(
                f"  a{k}: &a{k} ["
                + ", ".join(["x"] * 10 if k == 0 else [f"*a{k - 1}"] * 10)
                + "]\n"
                for k in range(7)
            )
            + ("classes: *a6\n" if where == "classes" else "")
        ),
        V,
        2,
        ("more than 1000000 YAML nodes once aliases are expanded",),
    )
    for where in ("unknown-key", "classes")
]
CASES += [
    Case(
        "config-alias-bomb-set",
        config_with(),
        [
            "--set",
            "classes={"
            + ", ".join(
                f"a{k}: &a{k} [" + ", ".join(["x"] * 10 if k == 0 else [f"*a{k - 1}"] * 10) + "]"
                for k in range(7)
            )
            + "}",
            *V,
        ],
        2,
        ("environment FREEMASK__CLASSES", "more than 1000000 YAML nodes"),
    ),
    Case("config-recursive-alias", config_text("classes: &a [cat, *a]\n"), V, 2, ("inside",)),
    Case(
        "config-nested-deep",
        config_text("classes: " + "[" * 100 + "]" * 100 + "\n"),
        V,
        2,
        ("nested more than 64 levels deep",),
    ),
    Case(
        "config-oversized",
        config_text("classes: [cat]\n" + "#" * 16 * 2**20 + "\n"),
        V,
        2,
        ("at most 16777216",),
    ),
    Case(
        "config-too-many-classes",
        config_with(classes=[f"c{index}" for index in range(65535)]),
        V,
        2,
        ("65535 classes; at most 65534",),
    ),
    Case(
        "config-huge-value",
        config_with(seed="x" * 1_000_000),
        V,
        2,
        ("seed: got 'xxxx", "(1000000 characters)"),
    ),
    Case(
        "config-huge-integer",
        config_text("classes: [cat]\nseed: " + "1" * 5000 + "\n"),
        V,
        2,
        ("not a valid YAML value",),
    ),
    Case(
        "config-bad-date",
        config_text("classes: [cat]\ndraw: 2024-13-01\n"),
        V,
        2,
        ("month must be in 1..12",),
    ),
    Case(
        "set-credentials",
        config_with(),
        ["--set", "tracking.uri=http://u:p@mlflow.invalid", *V],
        2,
        ("http://***@mlflow.invalid", "do not belong on a command line"),
    ),
    Case(
        "config-ui-url-credentials",
        config_with(tracking={"ui_url": "https://u:p@mlflow.invalid"}),
        V,
        2,
        ("ui_url", "without user:password"),
    ),
]


# More than 254 classes: 16-bit masks (65535 = ignore), class ids up to 65534.
MANY_CLASSES = [*CLASSES, *(f"thing{index:03d}" for index in range(4, 301))]


def many_class_dataset(change: Callable[[Path], None]) -> Callable[[Path], None]:
    """The two-sample prefix, then ``change``, in a run of 300 classes (16-bit masks)."""

    def build(tmp: Path) -> None:
        dataset(change)(tmp)
        config_with(classes=MANY_CLASSES)(tmp)

    return build


def png16(value: int) -> Callable[[], bytes]:
    """A 16-bit label PNG of the corpus samples' size, every pixel ``value``."""
    from freemask.storage import encode_image

    return lambda: encode_image(np.full((48, 64), value, np.uint16), "mask.png")


CASES += [
    Case(
        "manifest-class-id-beyond-a-16-bit-run",
        many_class_dataset(manifest_lines(instance("class_id", 301))),
        MVC,
        2,
        ("class_id 301 exceeds the 300 configured classes",),
    ),
    Case(
        "export-16-bit-mask-class-beyond-the-run",
        many_class_dataset(replace_file("semantic_mask", png16(400))),
        [*EXPORT, "--format", "voc"],
        2,
        ("class index 400", "only 300 classes"),
    ),
]


# Records checked against their prefix (export, harmonize) and pickle-only checkpoints.
def declares_16384(data: Path) -> None:
    """The first sample declares 16384x16384 with 254 full-size masks; its image is 48x64."""
    from pycocotools import mask as mask_util

    side = 16384
    full = mask_util.frPyObjects({"size": [side, side], "counts": [0, side * side]}, side, side)
    mask = {"size": [side, side], "counts": full["counts"].decode("ascii")}
    instance = {"class_name": "cat", "class_id": 1, "bbox": [0, 0, side, side], "rle": mask}

    def edit(records: list[dict]) -> list:
        records[0].update(width=side, height=side, instances=[instance] * 254)
        return records

    manifest_lines(edit)(data)


def image_is_fifo(data: Path) -> None:
    """The first sample's image is a named pipe (reading it would wait for a writer)."""
    image = data / read_manifest(LocalStorage(data))[0].image
    image.unlink()
    os.mkfifo(image)


def image_is_temporary(data: Path) -> None:
    """The first sample names a temporary file of an unfinished write (a copy of its image)."""
    sample = read_manifest(LocalStorage(data))[0]
    temporary = "images/.freemask-tmp-1-copy.png"
    (data / temporary).write_bytes((data / sample.image).read_bytes())
    manifest_lines(record("image", temporary))(data)


def pickle_only_checkpoint(tmp: Path) -> None:
    """segment.model_id names a Mask2Former folder whose weights are only pytorch_model.bin."""
    import torch

    from freemask.segment import build_tiny_mask2former, run_labels

    dataset()(tmp)
    model = build_tiny_mask2former(run_labels(CLASSES))
    model.config.save_pretrained(tmp / "ckpt")
    torch.save(model.state_dict(), tmp / "ckpt" / "pytorch_model.bin")
    config_with(segment={"model_id": str(tmp / "ckpt")})(tmp)


CASES += [
    Case(
        "export-declared-16384-on-48x64-image",
        dataset(declares_16384),
        EXPORT,
        2,
        ("header's 48x64", "16384x16384"),
    ),
    Case(
        "export-nul-in-path",
        dataset(manifest_lines(record("image", "images/a\x00b.png"))),
        EXPORT,
        2,
        ("image", "control character"),
    ),
    Case(
        "export-300-char-id",
        dataset(manifest_lines(record("id", "a" * 300, index=1))),
        EXPORT,
        2,
        ("id is 300 bytes long",),
    ),
    Case(
        "export-300-char-file-name",
        dataset(manifest_lines(record("image", "images/" + "b" * 300 + ".png"))),
        EXPORT,
        2,
        ("304-byte name", "255"),
    ),
    Case("export-fifo-image", dataset(image_is_fifo), EXPORT, 2, ("FIFO", "not a regular file")),
    Case(
        "export-temporary-file",
        dataset(image_is_temporary),
        EXPORT,
        2,
        (".freemask-tmp-", "temporary file"),
    ),
    Case(
        "harmonize-rle-wrong-size",
        dataset(manifest_lines(rle("size", [20, 20]))),
        HARMONIZE,
        0,
        ("1 rejected",),
        unchanged=False,
        rejected="instances[0].rle.size 20x20 does not match the sample's 48x64",
    ),
    Case(
        "harmonize-class-id-beyond-config",
        dataset(manifest_lines(instance("class_id", 9))),
        HARMONIZE,
        0,
        ("1 rejected",),
        unchanged=False,
        rejected="instances[0].class_id 9 exceeds the 3 configured classes",
    ),
    Case(
        "train-pickle-only-checkpoint",
        pickle_only_checkpoint,
        TRAIN,
        2,
        ("ckpt", "pytorch_model.bin", "convert the checkpoint to safetensors"),
    ),
]


# Mistakes caught in seconds, before any stage (freemask.preflight), and the cron (croniter).
CASES += [
    *(
        Case(
            f"preflight-misspelt-class-{command}",
            config_with(
                classes=["ball", "rnig"],
                generate={"model_id": "builtin:toy-sd"},
                segment={"labeller": "builtin:toy-labeller"},
                relate={
                    "thesaurus": str(Path(__file__).parents[2] / "configs/demo_thesaurus.yaml")
                },
            ),
            argv,
            2,
            ("classes: 'rnig'", "knows no word 'rnig'", "no label 'rnig'", "did you mean 'ring'?"),
        )
        for command, argv in (("validate", V), ("run", ["run", "-c", "{tmp}/run.yaml"]))
    ),
    Case(
        "preflight-labeller-lacks-a-class",
        lambda tmp: (
            (tmp / "labeller").mkdir(),
            (tmp / "labeller/config.json").write_text(
                json.dumps({"id2label": {"0": "background", "1": "cat", "2": "dog"}})
            ),
            config_with(segment={"labeller": str(tmp / "labeller")})(tmp),
        ),
        V,
        2,
        ("classes: 'traffic light'", "has no label 'traffic light'", "segment.label_map"),
    ),
    Case(
        "preflight-misspelt-key",
        config_with(generate={"images_per_clas": 4}),
        V,
        2,
        ("generate.images_per_clas", "did you mean 'images_per_class'?"),
    ),
    Case(
        "preflight-tracking-refused-run",
        config_with(tracking={"uri": "http://127.0.0.1:9"}),
        ["run", "-c", "{tmp}/run.yaml"],
        2,
        ("tracking.uri http://127.0.0.1:9", "not reachable"),
    ),
    Case(
        "preflight-tracking-refused-compare",
        nothing,
        ["compare", "abc", "--tracking-uri", "http://127.0.0.1:9"],
        2,
        ("--tracking-uri http://127.0.0.1:9", "not reachable"),
    ),
    Case(
        "preflight-compare-without-a-store",
        nothing,
        ["compare", "abc"],
        2,
        ("which MLflow store?", "--tracking-uri", "--config"),
    ),
    Case(
        "preflight-compare-config-without-a-store",
        config_with(),
        ["compare", "abc", "-c", "{tmp}/run.yaml"],
        2,
        ("the store of workdir", "no MLflow store there"),
    ),
    Case(
        "preflight-gcs-workdir-without-credentials",
        config_with(workdir="gs://freemask-corpus-bucket/work"),
        V,
        2,
        ("workdir gs://freemask-corpus-bucket/work", "no usable Google Cloud credentials"),
    ),
    *(
        Case(
            f"cron-{cron.replace(' ', '_')}",
            config_with(),
            ["schedule", "--host", "http://kfp.invalid", "-c", "{tmp}/run.yaml", "--cron", cron],
            2,
            (f"--cron {cron!r}", words),
        )
        for cron, words in (
            ("99 3 * * *", "minute '99'"),
            ("0 3 * 13 *", "month '13'"),
            ("0 3 31 2 *", "never fires"),
            ("0 3 * * * * *", "expected five cron fields"),
        )
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
