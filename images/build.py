"""Build the freemask images with Docker: the base first, then one image per stage.

Names, registry and tag come from components/images.json, the file the Kubeflow components
read too. Run by `make images`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    if (
        shutil.which("docker") is None
        or subprocess.run(["docker", "info"], capture_output=True).returncode
    ):
        print("make images needs a running Docker engine (`docker info` failed)", file=sys.stderr)
        return 2
    images = json.loads((ROOT / "components" / "images.json").read_text())
    registry, tag = images["registry"], images["tag"]
    base = f"{registry}/{images['base']}:{tag}"
    builds = [("base", base, [])]
    for stage, name in images["stages"].items():
        builds.append((stage, f"{registry}/{name}:{tag}", ["--build-arg", f"BASE_IMAGE={base}"]))
    for stage, image, extra in builds:
        dockerfile = ROOT / "images" / f"{stage}.Dockerfile"
        command = ["docker", "build", "-f", str(dockerfile), "-t", image, *extra, str(ROOT)]
        print(" ".join(command))
        subprocess.run(command, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
