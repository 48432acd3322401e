"""How long ``freemask config validate`` takes on large and hostile configs.

Every command loads a config, so loading must stay linear in the file and bounded whatever the
file says. Each row is one ``freemask config validate FILE`` in its own process (a row that does
not finish within ``TIMEOUT`` seconds is stopped and reported as such), timed from start to exit:

1. N classes, listed one per line (N up to the 65534 that 16-bit masks allow, then 100000,
   which is refused).
2. Alias bombs: a few lines whose aliases name 10^5, 10^6 or 10^7 nodes once expanded ("billion
   laughs"), under an unknown key, inside ``classes``, and through ``FREEMASK__CLASSES``; 10^5
   is under freemask.bounded_yaml's bound of 10^6 (the config is then refused for what it
   holds), the others over it.
3. A list nested 100000 deep, and a file over the size bound.

The table gives the exit code, the seconds, and the longest line the command printed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TIMEOUT = 60.0
CLASS_COUNTS = (1_000, 10_000, 30_000, 65_534, 100_000)


def bomb(nodes: int) -> tuple[str, str]:
    """(YAML anchors, each a list of ten aliases of the previous one; the alias of the last):
    ``nodes`` (a power of ten) list items once every alias is expanded."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    level = 0
    while 10 ** (level + 1) < nodes:
        level += 1
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n", f"*a{level}"


def bomb_config(nodes: int, where: str) -> tuple[str, dict[str, str]]:
    """A config (text, extra environment) with a ``nodes`` alias bomb ``where``."""
    anchors, top = bomb(nodes)
    if where == "unknown key":
        return f"classes: [cat]\nbombs:\n{_indent(anchors)}  last: {top}\n", {}
    if where == "classes":
        return f"bombs:\n{_indent(anchors)}classes: {top}\n", {}
    # The environment: the value is YAML, the same bomb in flow style.
    flow = anchors.replace("\n", ", ").rstrip(", ")
    return "classes: [cat]\n", {"FREEMASK__CLASSES": f"{{{flow}, last: {top}}}"}


def _indent(text: str) -> str:
    return "".join(f"  {line}\n" for line in text.splitlines())


def cases() -> list[tuple[str, str, dict[str, str]]]:
    """(name, config text, extra environment) for every row."""
    rows = []
    for count in CLASS_COUNTS:
        text = "classes:\n" + "".join(f"  - class-{index}\n" for index in range(count))
        rows.append((f"{count} classes", text, {}))
    for nodes in (10**5, 10**6, 10**7):
        for where in ("unknown key", "classes", "environment"):
            text, environ = bomb_config(nodes, where)
            rows.append((f"alias bomb 10^{len(str(nodes)) - 1} in {where}", text, environ))
    depth = 100_000
    rows.append((f"list nested {depth} deep", "classes: " + "[" * depth + "]" * depth + "\n", {}))
    rows.append(("file of 40 MB", "classes: [cat]\n" + "# padding\n" * 4_000_000, {}))
    return rows


def run_validate(path: Path, environ: dict[str, str]) -> tuple[int | None, float, int]:
    """(exit code or None when stopped, seconds, longest output line in characters)."""
    command = [sys.executable, "-m", "freemask.cli", "config", "validate", str(path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **environ}
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=env)
    except subprocess.TimeoutExpired:
        return None, time.perf_counter() - start, 0
    seconds = time.perf_counter() - start
    lines = (done.stdout + done.stderr).splitlines() or [""]
    return done.returncode, seconds, max(len(line) for line in lines)


def startup_seconds() -> float:
    """The cost of starting the command at all (``--help``), for reading the rows."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "freemask.cli", "--help"], capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    figures: dict[str, object] = {"startup_seconds": round(startup_seconds(), 2)}
    print(f"startup (freemask --help): {figures['startup_seconds']} s; timeout {TIMEOUT:.0f} s")
    print(f"{'config':<36} {'exit':>5} {'seconds':>8} {'longest line':>13}")
    with tempfile.TemporaryDirectory() as folder:
        for name, text, environ in cases():
            path = Path(folder) / "run.yaml"
            path.write_text(text)
            code, seconds, longest = run_validate(path, environ)
            shown = "stop" if code is None else str(code)
            print(f"{name:<36} {shown:>5} {seconds:>8.2f} {longest:>13}")
            key = name.replace(" ", "_").replace("^", "e")
            figures[f"{key}_seconds"] = round(seconds, 2)
            figures[f"{key}_exit"] = code
            figures[f"{key}_longest_line"] = longest
    sys.stdout.write(json.dumps(figures) + "\n")


if __name__ == "__main__":
    main()
