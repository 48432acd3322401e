"""Estimate each image family's size from its lock file, with no Docker engine.

For every requirement of ``requirements/<family>.lock`` it finds the locked file (by its
sha256, the lock's own hashes) in PyPI's simple index (JSON, PEP 691/700: every file's size)
and adds the sizes up: the compressed size of the family's dependency layers, roughly what a
node pulls. The Python base image and the freemask wheel (a few MB) come on top. Prints a
Markdown table. Run: ``.venv/bin/python images/sizes.py`` (needs PyPI).
"""

from __future__ import annotations

import json
import re
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INDEX = "https://pypi.org/simple/{}/"
LOCKS = {
    "torch layer (shared by generate, segment)": "torch.lock",
    "generate": "generate.lock",
    "segment": "segment.lock",
    "cpu": "cpu.lock",
    "client": "client.lock",
    "mlflow": "mlflow-server.lock",
}


def requirements(lock: Path) -> dict[str, set[str]]:
    """name -> the sha256 hashes the lock allows for it."""
    entries = re.split(r"\n(?=[A-Za-z0-9])", lock.read_text())
    found = {}
    for entry in entries:
        match = re.match(r"^([A-Za-z0-9_.\-]+)==", entry)
        if match:
            found[match.group(1).lower()] = set(re.findall(r"sha256:([0-9a-f]{64})", entry))
    return found


def for_images(filename: str) -> bool:
    """True for a wheel that installs on the images' Linux x86_64 CPython 3.11 (Debian bookworm's)."""
    tags = filename.removesuffix(".whl").split("-")[-3:]
    if len(tags) != 3 or not filename.endswith(".whl"):
        return False
    python, abi, platform = tags
    return (python in {"py3", "cp311", "py2.py3"} or (abi == "abi3" and python <= "cp311")) and (
        platform == "any" or ("linux" in platform and "x86_64" in platform)
    )


def file_sizes(name: str) -> dict[str, int]:
    """sha256 -> size of every wheel of project ``name`` on PyPI that fits the images."""
    request = urllib.request.Request(
        INDEX.format(name), headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)["files"]
    return {
        f["hashes"].get("sha256", ""): int(f.get("size") or 0)
        for f in files
        if for_images(f["filename"])
    }


def locked_size(sizes: dict[str, dict[str, int]], hashes: dict[str, set[str]]) -> int:
    """Bytes of the wheels a lock installs: for each requirement, the largest of its allowed
    files that fits the images (the lock's hashes also name other platforms' files)."""
    total = 0
    for name, allowed in hashes.items():
        total += max((sizes[name].get(sha, 0) for sha in allowed), default=0)
    return total


def main() -> int:
    locks = {label: requirements(ROOT / "requirements" / name) for label, name in LOCKS.items()}
    names = sorted({name for lock in locks.values() for name in lock})
    with ThreadPoolExecutor(4) as pool:
        sizes = dict(zip(names, pool.map(file_sizes, names), strict=True))
    print("| family | locked packages | wheels (MB, compressed) |")
    print("| --- | --- | --- |")
    for label, hashes in locks.items():
        print(f"| {label} | {len(hashes)} | {locked_size(sizes, hashes) / 1e6:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
