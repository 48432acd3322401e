"""images/build.py without Docker: the plan builds every family once, pushes, reads the digests
back and writes the digest lock that ``freemask compile --images-lock`` reads."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml
from services import free_port

from components._spec import digest_images
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


def test_the_plan_builds_every_family_once_in_dockerfile_order_and_the_client_last() -> None:
    order = build.targets()
    builds = build.plan(IMAGES, "reg.example/team", "1.2.3", order)
    in_order = [t for t in order if t in IMAGES["families"] and t != build.CLIENT]
    assert [b.family for b in builds] == [*in_order, build.CLIENT]
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


def client_build_lock(docker: FakeDocker) -> str | None:
    """The IMAGES_LOCK build argument of the client image's build, None when it has none."""
    (call,) = [
        c for c in docker.calls if c[0] == "build" and c[c.index("--target") + 1] == "client"
    ]
    values = [a.split("=", 2)[2] for a in call if a.startswith("--build-arg=IMAGES_LOCK=")]
    return values[0] if values else None


def test_the_pushed_client_carries_the_pipeline_images_digest_lock(tmp_path) -> None:
    """The refresh CronJob submits from the client image: the lock it carries pins every task."""
    docker = FakeDocker()
    lock = tmp_path / "images.lock.json"
    assert build.main(["--push", "--registry", "reg.example", "--lock", str(lock)], docker) == 0
    carried = tmp_path / "carried.json"
    carried.write_text(client_build_lock(docker) or "")
    pinned = json.loads(lock.read_text())["images"]
    by_task = digest_images(carried)
    assert by_task == {task: pinned[family] for task, family in IMAGES["tasks"].items()}
    # Built after every family its runs use; a local, unpushed client carries no lock.
    order = [c[c.index("--target") + 1] for c in docker.calls if c[0] == "build"]
    assert all(order.index(f) < order.index("client") for f in set(IMAGES["tasks"].values()))
    unpushed = FakeDocker()
    assert build.main(["--registry", "reg.example", "client"], unpushed) == 0
    assert client_build_lock(unpushed) is None


def test_pushing_the_client_alone_takes_the_digests_pushed_before(tmp_path, capsys) -> None:
    lock = tmp_path / "images.lock.json"
    alone = ["--push", "--registry", "r.example", "--lock", str(lock), "client"]
    docker = FakeDocker()
    assert build.main(alone, docker) == 2
    assert docker.calls == []  # refused before anything was built
    assert "push cpu generate segment first" in capsys.readouterr().err
    assert build.main(["--push", "--registry", "r.example", "--lock", str(lock)], FakeDocker()) == 0
    pinned = json.loads(lock.read_text())["images"]
    docker = FakeDocker()
    assert build.main(alone, docker) == 0
    carried = json.loads(client_build_lock(docker) or "{}")["images"]
    assert carried == {f: pinned[f] for f in set(IMAGES["tasks"].values())}


def test_the_cronjob_reads_the_lock_where_the_client_image_writes_it() -> None:
    dockerfile = build.DOCKERFILE.read_text()
    client = dockerfile[dockerfile.index("AS client") :].split("\nFROM ", 1)[0]
    assert "ARG IMAGES_LOCK" in client
    written = re.search(r'"\$IMAGES_LOCK" > ([^\s;]+)', client)
    assert written is not None
    cronjob = yaml.safe_load((build.ROOT / "manifests/base/refresh-cronjob.yaml").read_text())
    (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["FREEMASK_IMAGES_LOCK"] == written.group(1)


def test_compile_takes_the_lock_from_the_environment(tmp_path, monkeypatch, capsys) -> None:
    lock = tmp_path / "images.lock.json"
    assert (
        build.main(["--push", "--registry", "reg.example", "--lock", str(lock)], FakeDocker()) == 0
    )
    config = tmp_path / "run.yaml"
    config.write_text("classes: [cat]\n")
    out = tmp_path / "pipeline.yaml"
    monkeypatch.setenv("FREEMASK_IMAGES_LOCK", str(lock))
    assert cli_main(["compile", "--config", str(config), "--out", str(out)]) == 0
    spec, _ = load_ir(out)
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images and all("@sha256:" in image for image in images)
    # A client image built without a lock fails loudly instead of submitting by tag.
    monkeypatch.setenv("FREEMASK_IMAGES_LOCK", str(tmp_path / "absent.json"))
    assert cli_main(["compile", "--config", str(config), "--out", str(out)]) == 2
    assert "absent.json: not a digest lock" in capsys.readouterr().err


def test_a_ca_bundle_is_served_to_host_network_builds_only(tmp_path, monkeypatch) -> None:
    """With --network host each build names the bundle's URL, which serves the bundle while the
    build runs and not after; without the host network no bundle is offered."""
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nfreemask test\n-----END CERTIFICATE-----\n")
    monkeypatch.setattr(build, "CA_PORT", free_port())
    fetched: list[bytes] = []

    class FetchingDocker(FakeDocker):
        def __call__(self, args: Sequence[str]) -> str:
            urls = [a.split("=", 2)[2] for a in args if a.startswith("--build-arg=BUILD_CA_URL=")]
            for url in urls:
                with urllib.request.urlopen(url, timeout=5) as answer:
                    fetched.append(answer.read())
            return super().__call__(args)

    docker = FetchingDocker()
    argv = ["--network", "host", "--ca-bundle", str(bundle), "cpu"]
    assert build.main(argv, docker=docker) == 0
    (call,) = docker.calls
    assert call[call.index("--network") + 1] == "host"
    assert fetched == [bundle.read_bytes()]
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{build.CA_PORT}/ca.pem", timeout=5)

    docker = FetchingDocker()
    assert build.main(["--ca-bundle", str(bundle), "cpu"], docker=docker) == 0
    (call,) = docker.calls
    assert "--network" not in call
    assert not any("BUILD_CA_URL" in argument for argument in call)
