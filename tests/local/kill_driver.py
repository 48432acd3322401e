"""Kill a small ``freemask run`` with SIGKILL at seeded random points, re-run it, and compare.

Run as a script (``python kill_driver.py FOLDER --seed S --points N``) so that its forked children
start from a process that has imported everything but run nothing: each child is one
``freemask run`` (``main(argv)`` in-process), killed by itself at its target event. Prints one
JSON object: the kill points, the chains and every difference found (none expected).

An event is a storage write or append (by path), the rename that ends a write (killed before
it, the write's temporary file is left behind), or an MLflow call (create_run, model version,
terminate, artifacts, metrics); a target is an event that happens once in an uninterrupted run,
killed just before or just after it. Targets are sorted in run order and hit in turn by
successive re-runs of one work directory; a run that ends without reaching its target closes
that chain (compared with the uninterrupted run) and the next target starts a new one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

# What a run imports (MLflow's stores, the runner and its stages) is imported here, once, before
# the forks: each child then starts at its work instead of spending seconds on imports.
import mlflow.store.model_registry.sqlalchemy_store
import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
import numpy as np
import yaml

import freemask.cli.run
import freemask.local.runner
import freemask.segment.mlflow_model  # noqa: F401
from freemask.cli import main
from freemask.storage import LocalStorage

CONFIG = {
    "name": "kill-test",
    "classes": ["cat", "dog"],
    "generate": {
        "model_id": "builtin:tiny-sd",
        "images_per_class": 1,
        "height": 64,
        "width": 64,
        "reject_implausible": False,
        "num_inference_steps": 2,
    },
    "compose": {"images": 2, "backgrounds_per_scene": 1},
    "segment": {"model_id": "builtin:tiny-mask2former", "image_size": 64, "train_steps": 1},
    # Threshold 0 keeps every sample, so round 1 trains, evaluates and registers a model.
    "active": {"max_rounds": 1, "keep_rule": "any_class", "iou_threshold": 0.0},
}
# Forced among the targets: a kill inside a model save, in MLflow run creation, in round close.
FORCED = [
    ("write", "active/rounds/01/model/labels.json", "after"),
    ("rename", "active/rounds/01/model/model.safetensors", "before"),
    ("create_run", "kill-test", "after"),
    ("create_run", "round-1", "after"),
    ("model_version", "kill-test-segmenter@round-1", "before"),
    ("write", "active/rounds/01/summary.json", "before"),
    # --refresh: the second refresh's marker, LATEST's move, the first version's deletion.
    ("write", "versions/refresh-0002/_PUBLISHED", "after"),
    ("write", "LATEST", "before"),
    ("write", "LATEST", "after"),
    ("delete", "versions/refresh-0001/_PUBLISHED", "after"),
    ("delete", "versions/refresh-0001/export/coco/annotations/instances.json", "before"),
]
# Files whose bytes differ between two uninterrupted runs (run ids, timings, MLflow's store).
VOLATILE = ("mlflow.db", "mlartifacts/", "run.json", "report/")
VOLATILE_KEYS = {"seconds", "run_id", "skipped", "published_at"}


# ``--refresh``: every child runs ``freemask run --refresh`` on a work directory that already
# holds one complete refresh, keeping one version, so the kills land in the second refresh:
# its stages, its publish, LATEST's move and the deletion of the first.
REFRESH = {"argv": [], "versions": 1}


def write_config(work: Path) -> Path:
    path = work.parent / f"{work.name}.yaml"
    settings = {**CONFIG, "workdir": str(work)}
    if REFRESH["argv"]:
        settings["versions"] = {"keep": 1}
    path.write_text(yaml.safe_dump(settings))
    return path


def install_hooks(work: Path, log: Path, target: tuple[str, str, str] | None) -> None:
    """Record every event in ``log``; SIGKILL this process at ``target`` (kind, key, phase)."""
    from mlflow import MlflowClient

    handle = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def event(kind: str, key: str, phase: str) -> None:
        if phase == "before":
            os.write(handle, (json.dumps([kind, key]) + "\n").encode())
        if target == (kind, key, phase):
            os.kill(os.getpid(), signal.SIGKILL)

    def wrap(owner: Any, name: str, kind: str, key_of: Any) -> None:
        original = getattr(owner, name)

        def hooked(self: Any, *args: Any, **kwargs: Any) -> Any:
            key = key_of(self, *args, **kwargs)
            if key is None:
                return original(self, *args, **kwargs)
            event(kind, key, "before")
            result = original(self, *args, **kwargs)
            event(kind, key, "after")
            return result

        setattr(owner, name, hooked)

    def relative(storage: LocalStorage, path: str) -> str | None:
        full = storage.root / path
        return str(full.relative_to(work)) if full.is_relative_to(work) else None

    def first_id(storage: LocalStorage, path: str, data: bytes) -> str | None:
        where = relative(storage, path)
        return where and f"{where}#{json.loads(data.splitlines()[0])['id']}"

    rename = os.replace

    def hooked_rename(source: str, target_path: str) -> None:
        path = Path(target_path)
        key = str(path.relative_to(work)) if path.is_relative_to(work) else None
        if key:
            event("rename", key, "before")
        rename(source, target_path)
        if key:
            event("rename", key, "after")

    def model_version_key(client: MlflowClient, name: str, *args: Any, **kwargs: Any) -> str:
        """The model's name and the run it is registered from, by name: the pool's candidate
        (round-0) and each round register one, so the name alone is not one event."""
        run_id = kwargs.get("run_id") or (args[1] if len(args) > 1 else None)
        return f"{name}@{client.get_run(run_id).info.run_name}" if run_id else name

    os.replace = hooked_rename
    wrap(LocalStorage, "write_bytes", "write", lambda s, path, *_, **__: relative(s, path))
    wrap(LocalStorage, "append_lines", "append", first_id)
    wrap(LocalStorage, "delete", "delete", lambda s, path: relative(s, path))
    wrap(MlflowClient, "create_run", "create_run", lambda s, *a, **k: k.get("run_name"))
    wrap(MlflowClient, "create_model_version", "model_version", model_version_key)
    wrap(MlflowClient, "log_artifacts", "log_artifacts", lambda s, run, folder, path=None: path)
    wrap(
        MlflowClient,
        "log_batch",
        "log_batch",
        lambda s, run_id, metrics=(), params=(), tags=(), **k: ",".join(
            sorted(f"{m.key}@{m.step}" for m in metrics) or ["params"]
        ),
    )


def run_child(work: Path, log: Path, target: tuple[str, str, str] | None) -> str:
    """One ``freemask run`` in a forked child; returns 'killed', 'ok' or 'exit N'."""
    config = write_config(work)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the child exits right after
            install_hooks(work, log, target)
            code = main(["run", "-c", str(config), *REFRESH["argv"]])
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        return "killed"
    code = os.WEXITSTATUS(status)
    return "ok" if code == 0 else f"exit {code}"


def empty_store(folder: Path) -> Path:
    """An MLflow sqlite store with its tables made (copied into each work directory, so the
    schema migrations run once)."""
    database = folder / "template.db"
    pid = os.fork()
    if pid == 0:
        from mlflow import MlflowClient

        MlflowClient(f"sqlite:///{database}").search_experiments()
        os._exit(0)
    os.waitpid(pid, 0)
    return database


def fingerprint(work: Path) -> dict[str, str]:
    """A hash of each output file, JSON compared without the keys that vary run to run."""
    prints = {}
    for path in sorted(work.rglob("*")):
        name = str(path.relative_to(work))
        if not path.is_file() or name.startswith(VOLATILE) or name in VOLATILE:
            continue
        if name.endswith("report/index.html"):  # a version's page: it shows the stages' seconds
            continue
        data = path.read_bytes().replace(str(work).encode(), b"<workdir>")
        if path.suffix == ".json" or path.name.startswith(("_SUCCESS", "_PUBLISHED", "LATEST")):
            data = json.dumps(_without(json.loads(data)), sort_keys=True).encode()
        prints[name] = hashlib.sha256(data).hexdigest()
    return prints


def _without(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_without(item) for item in value]
    return value


def tracking_problems(work: Path) -> list[str]:
    """What is wrong with the work directory's MLflow records (empty when all is well)."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(CONFIG["name"]) or client.get_experiment_by_name(
        "freemask"
    )
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    problems = []
    refreshes = REFRESH["versions"]
    if len(parents) != refreshes:
        problems.append(f"{len(parents)} parent runs")
    rounds: dict[str, int] = {}
    for run in runs:
        if run.info.status != "FINISHED":
            problems.append(f"run {run.info.run_name} is {run.info.status}")
        if "freemask.round" in run.data.tags:
            rounds[run.data.tags["freemask.round"]] = (
                rounds.get(run.data.tags["freemask.round"], 0) + 1
            )
    if any(count != refreshes for count in rounds.values()):
        problems.append(f"round runs {rounds}")
    # Every candidate registers its segmenter once: the pool (round 0) and each round.
    closed = refreshes * (CONFIG["active"]["max_rounds"] + 1)
    versions = client.search_model_versions(f"name = '{CONFIG['name']}-segmenter'")
    if len(versions) != closed:
        problems.append(f"{len(versions)} registered model versions for {closed} closed rounds")
    for parent in parents:
        # The stages' table counts what the outputs hold, whatever the kills.
        stored = work / "mlartifacts" / parent.info.run_id / "artifacts" / "stages.json"
        table = json.loads(stored.read_text()) if stored.is_file() else {"data": []}
        made = {row[0]: row[1] for row in table["data"]}
        for stage in ("generate", "compose"):
            if made.get(stage) != 2:
                problems.append(f"{stage} made {made.get(stage)} in the stages table")
        # Each candidate's story metrics once: a step per round (0: the pool), never twice.
        for key in ("val_miou", "kept_fraction", "kept"):
            steps = [m.step for m in client.get_metric_history(parent.info.run_id, key)]
            if steps != list(range(CONFIG["active"]["max_rounds"] + 1)):
                problems.append(f"{key} logged at steps {steps}")
    return problems


def latest_problems(work: Path) -> list[str]:
    """What is wrong with ``LATEST`` after a kill: it must name a published version whose
    export is whole (empty when all is well)."""
    if not (work / "LATEST").is_file():
        return ["no LATEST"]
    version = work / "versions" / json.loads((work / "LATEST").read_text())["version"]
    coco = version / "export/coco/annotations/instances.json"
    if not (version / "_PUBLISHED").is_file() or not coco.is_file():
        return [f"LATEST names {version.name}, which is not whole"]
    return []


def main_driver() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--points", type=int, default=20)
    parser.add_argument("--refresh", action="store_true", help="kill the second refresh")
    args = parser.parse_args()
    if args.refresh:
        REFRESH.update(argv=["--refresh"], versions=2)
    folder: Path = args.folder
    folder.mkdir(parents=True, exist_ok=True)
    template = empty_store(folder)

    def fresh(name: str) -> Path:
        work = folder / name
        work.mkdir()
        shutil.copy(template, work / "mlflow.db")
        if args.refresh:  # the first refresh, whole: what LATEST names until the second's end
            outcome = run_child(work, folder / "first.events", None)
            if outcome != "ok":
                raise SystemExit(f"the first refresh ended {outcome}")
        return work

    # 1. The uninterrupted run: its outputs, and its events to choose kill points from.
    baseline, log = fresh("baseline"), folder / "baseline.events"
    outcome = run_child(baseline, log, None)
    if outcome != "ok":
        raise SystemExit(f"the uninterrupted run ended {outcome}")
    events = [tuple(json.loads(line)) for line in log.read_text().splitlines()]
    # Not MLflow's own artifact files: their paths hold the run's id (an image's, a fresh
    # uuid too), so no re-run writes the same path; the MLflow calls around them are events.
    once = [
        key
        for key in dict.fromkeys(events)
        if events.count(key) == 1 and not key[1].startswith("mlartifacts/")
    ]
    # 2. The kill points: the forced ones plus seeded random ones, in run order.
    rng = np.random.default_rng(args.seed)
    targets = [t for t in FORCED if (t[0], t[1]) in once]
    # One target per path: a kill just after a file's write has already renamed it into
    # place, so a target on that rename would never come in the re-run.
    rest = [key for key in once if all(key[1] != t[1] for t in targets)]
    for index in rng.permutation(len(rest)):
        if len(targets) == args.points:
            break
        if all(rest[index][1] != t[1] for t in targets):
            targets.append((*rest[index], "before" if rng.random() < 0.5 else "after"))
    targets.sort(key=lambda t: once.index((t[0], t[1])))
    # 3. Kill at each point in turn, re-running one work directory; compare at each chain's end.
    expected = fingerprint(baseline)
    report: dict[str, Any] = {"kills": 0, "chains": [], "missed": [], "latest": []}
    chain: list[str] = []
    work = fresh("chain-0")

    def close_chain() -> None:
        outcome = run_child(work, folder / "resume.events", None)
        found = fingerprint(work)
        report["chains"].append(
            {
                "points": chain,
                "final_run": outcome,
                "differences": sorted(
                    name
                    for name in set(expected) | set(found)
                    if expected.get(name) != found.get(name)
                ),
                "tracking": tracking_problems(work),
            }
        )

    for target in targets:
        outcome = run_child(work, folder / "resume.events", target)
        if outcome == "killed":
            report["kills"] += 1
            chain.append(":".join(target))
            if args.refresh:
                report["latest"] += [f"{':'.join(target)}: {p}" for p in latest_problems(work)]
            continue
        report["missed"].append({"point": ":".join(target), "outcome": outcome})
        close_chain()
        chain, work = [], fresh(f"chain-{len(report['chains'])}")
    if chain:
        close_chain()
    print(json.dumps(report))


if __name__ == "__main__":
    main_driver()
