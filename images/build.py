"""Build, push and pin freemask's images: one per family, each a target of images/Dockerfile.

Families and image names come from components/images.json (the file the Kubeflow components
read); the registry and tag from ``--registry``/``--tag``, else FREEMASK_REGISTRY/FREEMASK_TAG,
else images.json. Every target is built once, in the Dockerfile's order (the shared stages, the
wheel and the CUDA torch layer, come from BuildKit's cache after the first target that needs
them). With ``--push`` each image is pushed, its digest read back from the registry and the
digest lock written (images/images.lock.json: family -> ``registry/name@sha256:...``), which
``freemask compile --images-lock`` turns into a pipeline that names its images by digest.
The client image is built after the pipeline images and, when pushing, carries their digest
lock (build argument ``IMAGES_LOCK``), so the runs it submits (the refresh CronJob's) are pinned
too. Run by ``make images`` (``make images PUSH=1`` pushes).

``--network host`` builds on the host's network (an engine started by images/engine.sh has no
bridge); then ``--ca-bundle`` (default: $PIP_CERT) is served on 127.0.0.1 while building, and pip
trusts it inside each install step only (images/with-build-ca), for a TLS-intercepting proxy.
Each family's build time goes to build/images-build.json.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "images" / "Dockerfile"
IMAGES_FILE = ROOT / "components" / "images.json"
CLIENT = "client"  # the family that submits runs; it carries the pipeline images' digest lock
LOCK_FILE = ROOT / "images" / "images.lock.json"
DIGEST = re.compile(r"@(sha256:[0-9a-f]{64})\b")
TIMINGS_FILE = ROOT / "build" / "images-build.json"
# A fixed port, so that the build argument naming the CA bundle, and so the layer cache, stays
# the same from one build to the next.
CA_PORT = 47801

# The seam to Docker: runs a docker command line, returns its standard output (raises
# subprocess.CalledProcessError on failure). Tests pass a fake.
Docker = Callable[[Sequence[str]], str]


@dataclass(frozen=True)
class Build:
    """One image: the Dockerfile target of ``family`` tagged ``reference``."""

    family: str
    reference: str  # registry/name:tag

    @property
    def repository(self) -> str:
        return self.reference.rsplit(":", 1)[0]


def targets(dockerfile: Path = DOCKERFILE) -> list[str]:
    """The Dockerfile's stage names, in order (``FROM ... AS name``)."""
    pattern = re.compile(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", re.IGNORECASE | re.MULTILINE)
    return pattern.findall(dockerfile.read_text())


def plan(
    images: Mapping, registry: str, tag: str, order: Sequence[str], only: Sequence[str] = ()
) -> list[Build]:
    """One build per family of ``images`` (images.json), in the Dockerfile's ``order`` but the
    client last; ``only`` keeps those families. Raises ValueError for a family that is not a Dockerfile target."""
    families = dict(images["families"])
    unknown = [family for family in [*families, *only] if family not in order]
    if unknown:
        raise ValueError(f"no Dockerfile target for {', '.join(unknown)}")
    chosen = [family for family in order if family in families and (not only or family in only)]
    # The client carries the pipeline images' digests: it comes after them.
    chosen.sort(key=lambda family: family == CLIENT)
    return [Build(family, f"{registry.rstrip('/')}/{families[family]}:{tag}") for family in chosen]


def build_command(
    build: Build,
    dockerfile: Path = DOCKERFILE,
    context: Path = ROOT,
    build_args: Mapping[str, str] | None = None,
    network: str = "",
) -> list[str]:
    arguments = [f"--build-arg={name}={value}" for name, value in (build_args or {}).items()]
    return [
        "docker",
        "build",
        *(["--network", network] if network else []),
        "--target",
        build.family,
        *arguments,
        "-f",
        str(dockerfile),
        "-t",
        build.reference,
        str(context),
    ]


def parse_digest(repo_digests: str, repository: str) -> str:
    """``repository@sha256:...`` from ``docker inspect --format '{{json .RepoDigests}}'``
    output (a JSON list; the entry of ``repository``). Raises ValueError when there is none."""
    for entry in json.loads(repo_digests or "[]") or []:
        name, _, _ = entry.partition("@")
        match = DIGEST.search(entry)
        if name == repository and match:
            return f"{repository}@{match.group(1)}"
    raise ValueError(f"{repository}: no pushed digest in {repo_digests.strip()!r}")


def write_lock(path: Path, registry: str, tag: str, pinned: Mapping[str, str]) -> Path:
    """The digest lock: family -> ``registry/name@sha256:...``, with the registry and tag built."""
    lock = {"registry": registry, "tag": tag, "images": dict(sorted(pinned.items()))}
    path.write_text(json.dumps(lock, indent=2) + "\n")
    return path


def pipeline_lock(images: Mapping, registry: str, tag: str, pinned: Mapping[str, str]) -> str:
    """The lock the client image carries: the digest of every family a pipeline task runs in.
    Raises ValueError naming the families not pushed yet (for this registry and tag)."""
    families = sorted(set(images["tasks"].values()))
    missing = [family for family in families if family not in pinned]
    if missing:
        raise ValueError(
            f"the {CLIENT} image carries the pipeline images' digests, and "
            f"{', '.join(missing)} {'has' if len(missing) == 1 else 'have'} none for "
            f"{registry}:{tag}: push {' '.join(missing)} first (or all families at once)"
        )
    return json.dumps(
        {"registry": registry, "tag": tag, "images": {f: pinned[f] for f in families}}
    )


def run_builds(
    builds: Sequence[Build],
    docker: Docker,
    push: bool,
    pinned: Mapping[str, str],
    client_lock: Callable[[Mapping[str, str]], str],
    build_args: Mapping[str, str] | None = None,
    network: str = "",
    seconds: dict[str, float] | None = None,
) -> dict[str, str]:
    """Build every image once (and push it), starting from the digests already ``pinned``;
    returns family -> digest reference of every pushed image. When pushing, the client is
    built with ``client_lock`` of the digests known by then. ``seconds`` receives each
    family's build time."""
    pinned = dict(pinned)
    for build in builds:
        arguments = dict(build_args or {})
        if push and build.family == CLIENT:
            arguments["IMAGES_LOCK"] = client_lock(pinned)
        command = build_command(build, build_args=arguments, network=network)
        print(" ".join(command), flush=True)
        started = time.monotonic()
        docker(command[1:])
        if seconds is not None:
            seconds[build.family] = round(time.monotonic() - started, 1)
        if push:
            print(f"docker push {build.reference}", flush=True)
            docker(["push", build.reference])
            digests = docker(["inspect", "--format", "{{json .RepoDigests}}", build.reference])
            pinned[build.family] = parse_digest(digests, build.repository)
    return pinned


def _docker(args: Sequence[str]) -> str:
    """``docker ARGS``; a build's or push's output streams to the terminal, the rest is returned."""
    environment = {**os.environ, "DOCKER_BUILDKIT": os.environ.get("DOCKER_BUILDKIT", "0")}
    streamed = args[0] in {"build", "push"}
    return (
        subprocess.run(
            ["docker", *args],
            check=True,
            stdout=None if streamed else subprocess.PIPE,
            text=True,
            env=environment,
        ).stdout
        or ""
    )


@contextlib.contextmanager
def served_ca_bundle(bundle: Path | None, port: int | None = None) -> Iterator[dict[str, str]]:
    """While open, ``bundle`` is served on 127.0.0.1:``port`` (default CA_PORT); yields the
    build arguments that name it (none without a bundle)."""
    port = CA_PORT if port is None else port
    if bundle is None:
        yield {}
        return
    with tempfile.TemporaryDirectory() as folder:
        shutil.copyfile(bundle, Path(folder) / "ca.pem")
        handler = functools.partial(_QuietHandler, directory=folder)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield {"BUILD_CA_URL": f"http://127.0.0.1:{port}/ca.pem"}
        finally:
            server.shutdown()
            server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Requests are not logged: the build's own output says what it fetched."""


def docker_available() -> bool:
    return shutil.which("docker") is not None and not (
        subprocess.run(["docker", "info"], capture_output=True).returncode
    )


def main(argv: Sequence[str] | None = None, docker: Docker | None = None) -> int:
    images = json.loads(IMAGES_FILE.read_text())
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--registry", default=os.environ.get("FREEMASK_REGISTRY") or images["registry"]
    )
    parser.add_argument("--tag", default=os.environ.get("FREEMASK_TAG") or images["tag"])
    parser.add_argument("--push", action="store_true", help="push, then write the digest lock")
    parser.add_argument("--lock", type=Path, default=LOCK_FILE, help="where the digest lock goes")
    parser.add_argument(
        "--network",
        default=os.environ.get("FREEMASK_BUILD_NETWORK", ""),
        help="the build containers' network (host for an engine with no bridge)",
    )
    parser.add_argument(
        "--ca-bundle",
        type=Path,
        default=Path(os.environ["PIP_CERT"]) if os.environ.get("PIP_CERT") else None,
        help="a CA bundle pip trusts while installing, with --network host (default: $PIP_CERT)",
    )
    parser.add_argument("families", nargs="*", help="only these families [default: all]")
    args = parser.parse_args(argv)
    try:
        builds = plan(images, args.registry, args.tag, targets(), args.families)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if docker is None:
        if not docker_available():
            print(
                "make images needs a running Docker engine (`docker info` failed)",
                file=sys.stderr,
            )
            return 2
        docker = _docker
    previous: dict[str, str] = {}
    # Families not built this time keep their digests when registry and tag are the same.
    if args.push and args.lock.exists():
        lock = json.loads(args.lock.read_text())
        if (lock.get("registry"), lock.get("tag")) == (args.registry, args.tag):
            previous = dict(lock.get("images", {}))

    def client_lock(known: Mapping[str, str]) -> str:
        return pipeline_lock(images, args.registry, args.tag, known)

    families = [build.family for build in builds]
    if args.push and CLIENT in families:
        # Checked before anything is built: the families pushed ahead of the client count.
        ahead = {family: "" for family in families[: families.index(CLIENT)]}
        try:
            client_lock({**previous, **ahead})
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    seconds: dict[str, float] = {}
    # The build containers reach a bundle served on 127.0.0.1 only on the host's network.
    bundle = args.ca_bundle if args.network == "host" else None
    with served_ca_bundle(bundle) as ca_args:
        pinned = run_builds(
            builds, docker, args.push, previous, client_lock, ca_args, args.network, seconds
        )
    TIMINGS_FILE.parent.mkdir(exist_ok=True)
    TIMINGS_FILE.write_text(json.dumps({"seconds": seconds}, indent=2) + "\n")
    if args.push:
        print(f"wrote {write_lock(args.lock, args.registry, args.tag, pinned)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
