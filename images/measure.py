"""What the built images hold, measured: per family, the size unpacked (the engine's) and
compressed (the registry's manifest: what a node pulls), the build time (build/images-build.json,
written by images/build.py), the time from a cold start to ``freemask --help`` (``mlflow
--version`` for the server image) and the tasks that run in it. Also checks that every digest in
the lock (images/images.lock.json) is the one the registry serves for the tag it was pushed as.

Prints a Markdown table; its last line is one JSON object with the figures. Run after
``make images PUSH=1 REGISTRY=127.0.0.1:5000/freemask``:
``.venv/bin/python images/measure.py``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGES_FILE = ROOT / "components" / "images.json"
LOCK_FILE = ROOT / "images" / "images.lock.json"
TIMINGS_FILE = ROOT / "build" / "images-build.json"
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
    ]
)
MIB = 1024 * 1024


def registry_manifest(reference: str) -> tuple[str, dict]:
    """The digest the registry serves for ``reference`` (``host/name:tag`` or
    ``host/name@sha256:...``, plain HTTP: a registry on 127.0.0.1) and the manifest itself."""
    host, _, rest = reference.partition("/")
    if "@" in rest:
        name, _, version = rest.partition("@")
    else:
        name, _, version = rest.rpartition(":")
    request = urllib.request.Request(
        f"http://{host}/v2/{name}/manifests/{version}", headers={"Accept": MANIFEST_TYPES}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.headers["Docker-Content-Digest"], json.load(answer)


def lock_mismatches(lock: Mapping, tag: str) -> list[str]:
    """The lock's entries whose digest is not the one the registry serves for ``tag``."""
    problems = []
    for family, pinned in sorted(lock["images"].items()):
        repository, _, digest = pinned.partition("@")
        served, _ = registry_manifest(f"{repository}:{tag}")
        if served != digest:
            problems.append(f"{family}: lock {digest}, registry serves {served} for :{tag}")
    return problems


def cold_start_seconds(image: str, family: str) -> float:
    """Wall time of ``docker run`` from a container that does not exist yet to its exit."""
    command = ["--version"] if family == "mlflow" else ["--help"]
    started = time.monotonic()
    subprocess.run(
        ["docker", "run", "--rm", "--network", "none", image, *command],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.monotonic() - started


def unpacked_bytes(image: str) -> int:
    output = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Size}}", image],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return int(output)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lock", type=Path, default=LOCK_FILE)
    parser.add_argument(
        "--timings", type=Path, default=TIMINGS_FILE, help="a build's times (images/build.py)"
    )
    args = parser.parse_args(argv)
    images = json.loads(IMAGES_FILE.read_text())
    lock = json.loads(args.lock.read_text())
    problems = lock_mismatches(lock, lock["tag"])
    if problems:
        print("error: the lock does not pin what the registry serves:", *problems, sep="\n  ")
        return 1
    seconds = json.loads(args.timings.read_text())["seconds"] if args.timings.exists() else {}
    tasks: dict[str, list[str]] = {}
    for task, family in images["tasks"].items():
        tasks.setdefault(family, []).append(task)
    tasks.setdefault("client", ["compile", "submit", "schedule"])
    tasks.setdefault("mlflow", ["the tracking server"])
    figures = {}
    print("| family | compressed (MiB) | unpacked (MiB) | build (s) | cold start (s) | runs |")
    print("| --- | --- | --- | --- | --- | --- |")
    for family, pinned in sorted(lock["images"].items()):
        _, manifest = registry_manifest(pinned)
        compressed = sum(layer["size"] for layer in manifest["layers"])
        row = {
            "compressed_mib": round(compressed / MIB),
            "unpacked_mib": round(unpacked_bytes(pinned) / MIB),
            "build_seconds": seconds.get(family),
            "cold_start_seconds": round(cold_start_seconds(pinned, family), 1),
        }
        figures[family] = row
        print(
            f"| {family} | {row['compressed_mib']} | {row['unpacked_mib']} | "
            f"{row['build_seconds']} | {row['cold_start_seconds']} | "
            f"{', '.join(tasks.get(family, []))} |"
        )
    print(json.dumps({"images": figures, "lock_matches_registry": True}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
