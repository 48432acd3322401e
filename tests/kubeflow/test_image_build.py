"""images/build.py without Docker: the plan builds every family once, pushes, reads the digests
back and writes the digest lock that ``freemask compile --images-lock`` reads."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from freemask.cli import main as cli_main
from images import build
from pipelines.ir import executor_task, load_ir

IMAGES = json.loads(build.IMAGES_FILE.read_text())


class FakeDocker:
    """Records docker calls; ``inspect`` answers with a digest derived from the reference."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def digest(self, reference: str) -> str:
        return f"{abs(hash(reference)) % 16**8:08x}" * 8

    def __call__(self, args: Sequence[str]) -> str:
        self.calls.append(list(args))
        if args[0] == "inspect":
            reference = args[-1]
            repository = reference.rsplit(":", 1)[0]
            return json.dumps(
                [
                    f"mirror.example/x@sha256:{'0' * 64}",
                    f"{repository}@sha256:{self.digest(reference)}",
                ]
            )
        return ""


def test_the_plan_builds_every_family_once_in_dockerfile_order() -> None:
    order = build.targets()
    builds = build.plan(IMAGES, "reg.example/team", "1.2.3", order)
    assert [b.family for b in builds] == [t for t in order if t in IMAGES["families"]]
    assert len({b.family for b in builds}) == len(builds) == len(IMAGES["families"])
    assert builds[0].reference == f"reg.example/team/{IMAGES['families'][builds[0].family]}:1.2.3"
    assert [b.family for b in build.plan(IMAGES, "r", "t", order, ["cpu"])] == ["cpu"]
    with pytest.raises(ValueError, match="no Dockerfile target for gpu"):
        build.plan(IMAGES, "r", "t", order, ["gpu"])


def test_parse_digest_takes_the_pushed_repository() -> None:
    digest = "ab" * 32
    text = json.dumps([f"other/x@sha256:{'0' * 64}", f"reg.example/freemask-cpu@sha256:{digest}"])
    assert (
        build.parse_digest(text, "reg.example/freemask-cpu")
        == f"reg.example/freemask-cpu@sha256:{digest}"
    )
    with pytest.raises(ValueError, match="no pushed digest"):
        build.parse_digest("[]\n", "reg.example/freemask-cpu")


def test_push_writes_the_digest_lock_from_registry_and_tag_in_the_environment(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("FREEMASK_REGISTRY", "reg.example/team")
    monkeypatch.setenv("FREEMASK_TAG", "2.0.0")
    docker = FakeDocker()
    lock = tmp_path / "images.lock.json"
    assert build.main(["--push", "--lock", str(lock)], docker=docker) == 0
    builds = [call for call in docker.calls if call[0] == "build"]
    assert sorted(call[call.index("--target") + 1] for call in builds) == sorted(IMAGES["families"])
    pushes = [call[1] for call in docker.calls if call[0] == "push"]
    assert pushes == [call[call.index("-t") + 1] for call in builds]
    written = json.loads(lock.read_text())
    assert (written["registry"], written["tag"]) == ("reg.example/team", "2.0.0")
    for family, name in IMAGES["families"].items():
        reference = f"reg.example/team/{name}:2.0.0"
        expected = f"reg.example/team/{name}@sha256:{docker.digest(reference)}"
        assert written["images"][family] == expected


def test_without_push_nothing_is_pushed_and_flags_beat_the_environment(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("FREEMASK_REGISTRY", "env.example")
    docker = FakeDocker()
    lock = tmp_path / "images.lock.json"
    assert build.main(["--registry", "flag.example", "--lock", str(lock), "cpu"], docker) == 0
    assert [call[0] for call in docker.calls] == ["build"]
    assert f"flag.example/{IMAGES['families']['cpu']}:{IMAGES['tag']}" in docker.calls[0]
    assert not lock.exists()


def test_pushing_one_family_keeps_the_others_digests(tmp_path) -> None:
    lock = tmp_path / "images.lock.json"
    assert build.main(["--push", "--registry", "r.example", "--lock", str(lock)], FakeDocker()) == 0
    before = json.loads(lock.read_text())["images"]
    docker = FakeDocker()
    docker.digest = lambda reference: "f" * 64  # type: ignore[method-assign]
    assert (
        build.main(["--push", "--registry", "r.example", "--lock", str(lock), "cpu"], docker) == 0
    )
    after = json.loads(lock.read_text())["images"]
    assert after["cpu"].endswith("f" * 64)
    assert {k: v for k, v in after.items() if k != "cpu"} == {
        k: v for k, v in before.items() if k != "cpu"
    }


def test_without_docker_it_exits_2_with_a_reason(monkeypatch, capsys) -> None:
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    assert build.main([]) == 2
    assert "needs a running Docker engine" in capsys.readouterr().err


def test_compile_with_the_written_lock_names_digests(tmp_path) -> None:
    """The whole path: build.py's lock, then ``freemask compile --images-lock``."""
    lock = tmp_path / "images.lock.json"
    docker = FakeDocker()
    assert build.main(["--push", "--registry", "reg.example", "--lock", str(lock)], docker) == 0
    config = tmp_path / "run.yaml"
    config.write_text("classes: [cat, dog]\n")
    out = tmp_path / "pipeline.yaml"
    code = cli_main(
        ["compile", "--config", str(config), "--out", str(out), "--images-lock", str(lock)]
    )
    assert code == 0
    pinned = json.loads(lock.read_text())["images"]
    spec, _ = load_ir(out)
    for executor in spec["deploymentSpec"]["executors"].values():
        family = IMAGES["tasks"][executor_task(executor)]
        assert executor["container"]["image"] == pinned[family]


def test_compile_refuses_a_lock_that_is_not_one(tmp_path, capsys) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("classes: [cat]\n")
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    out = tmp_path / "p.yaml"
    args = ["compile", "--config", str(config), "--out", str(out), "--images-lock", str(bad)]
    assert cli_main(args) == 2
    assert "not a digest lock" in capsys.readouterr().err


def test_the_build_context_carries_the_lock_files() -> None:
    ignored = (Path(build.ROOT) / ".dockerignore").read_text().splitlines()
    assert "!requirements/*.lock" in ignored
