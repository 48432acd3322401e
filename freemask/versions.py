"""Dataset versions under one work directory: ``<workdir>/versions/<version>/`` per refresh, the
``LATEST`` pointer to the newest complete one, and retention of the others.

A version is complete once ``publish_run`` wrote its ``_PUBLISHED`` marker. ``LATEST`` moves
only after that, by a read-modify-write that never moves it back (a refresh that finishes
after a newer one leaves the newer in place), so a failed or partial refresh never moves it.
Retention marks an old version ``_DELETING``, then deletes its ``_PUBLISHED`` marker, its
files, and the mark last: a deletion killed midway leaves a version that no reader takes for
complete and that the next prune finishes; it never touches the one ``LATEST`` names.
"""

from __future__ import annotations

import json
import re
from typing import Any

from freemask.config import RunConfig
from freemask.errors import FreemaskError
from freemask.stage_output import SUCCESS
from freemask.storage import Storage, open_storage
from freemask.tracking import resolve_tracking_uri

VERSIONS = "versions"
FINAL = "active"  # the active loop's output in a version: the dataset it ships
PUBLISHED = "_PUBLISHED"  # publish_run's last write: the version's dataset and report are whole
LATEST = "LATEST"
DELETING = "_DELETING"
REFRESHED = "_REFRESHED"  # a local refresh's last write: published, LATEST moved, pruned
LOCAL_VERSION = re.compile(r"^refresh-(\d{4,})$")


def top_workdir(config: RunConfig) -> str | None:
    """The work directory that holds ``config``'s version (``config.workdir`` is
    ``<top>/versions/<version>`` in a refresh or pipeline run), or None outside a version."""
    version = config.kubeflow.dataset_version
    suffix = f"/{VERSIONS}/{version}"
    workdir = config.workdir.rstrip("/")
    return workdir.removesuffix(suffix) if version and workdir.endswith(suffix) else None


def project_workdir(config: RunConfig) -> str:
    """The work directory of ``config``'s project: the top one in a version, else its own."""
    return top_workdir(config) or config.workdir


def project_tracking_uri(config: RunConfig) -> str:
    """The tracking URI of ``config``'s runs (``resolve_tracking_uri``): by default the sqlite
    store of the project's top work directory, so that every local version of one project (a
    refresh, a pipeline task on a local work directory) logs into one store and one
    experiment, where ``freemask compare --experiment`` sees them side by side."""
    tracking = config.tracking
    return resolve_tracking_uri(
        tracking.uri, project_workdir(config), credentials=tracking.credentials
    )


def version_storage(workdir: Storage, version: str) -> Storage:
    """The folder of dataset version ``version``."""
    return workdir.child(f"{VERSIONS}/{version}")


def next_local_version(workdir: Storage) -> str:
    """The name of the next local refresh: ``refresh-0001``, then one above the highest."""
    numbers = [
        int(match.group(1))
        for name in list_versions(workdir)
        if (match := LOCAL_VERSION.match(name))
    ]
    return f"refresh-{max(numbers, default=0) + 1:04d}"


def local_refresh(config: RunConfig) -> tuple[RunConfig, str]:
    """The config of this local refresh and its version: the newest ``refresh-N`` that a kill
    left without its ``_REFRESHED`` mark (resumed: its stages skip what they made, then it
    publishes, moves LATEST and applies retention), else the next one. Its work directory is the
    version's folder, its draw the version, and its tracking store the project's, under the
    top work directory, so every refresh's parent run lands in one experiment."""
    workdir = open_storage(config.workdir)
    local = [name for name in list_versions(workdir) if LOCAL_VERSION.match(name)]
    unfinished = local and not version_storage(workdir, local[-1]).exists(REFRESHED)
    version = local[-1] if unfinished else next_local_version(workdir)
    tracking = config.tracking.model_copy(update={"uri": project_tracking_uri(config)})
    update = {
        "workdir": version_storage(workdir, version).uri,
        "draw": config.draw or version,
        "tracking": tracking,
        "kubeflow": config.kubeflow.model_copy(update={"dataset_version": version}),
    }
    return config.model_copy(update=update), version


def settle_versions(workdir: Storage, keep: int) -> tuple[str | None, list[str]]:
    """Point ``LATEST`` at the newest complete version (finishing a refresh killed after it
    published), then apply retention; returns (the version ``LATEST`` names, or None before
    any, and the versions deleted). Safe to run at any time, and again."""
    names = list_versions(workdir)
    complete = sorted(
        (when, name) for name in names if (when := published_at(workdir, name)) is not None
    )
    latest = advance_latest(workdir, complete[-1][1]) if complete else None
    return latest, _prune(workdir, keep, names, [name for _, name in complete], latest)


def previous_dataset(config: RunConfig) -> tuple[str, Storage] | None:
    """(version, its dataset folder) of the version ``LATEST`` names when ``config`` runs
    another version under the same work directory; None outside a version or before any."""
    top = top_workdir(config)
    if top is None:
        return None
    workdir = open_storage(top)
    latest = read_latest(workdir)
    if latest is None or latest["version"] == config.kubeflow.dataset_version:
        return None
    return latest["version"], version_storage(workdir, latest["version"]).child(FINAL)


def best_round(dataset: Storage) -> dict[str, Any] | None:
    """The summary of the round a version's active loop shipped (``round``, ``val_miou``,
    ``model_version``...), from its ``_SUCCESS``; None when the loop has not finished."""
    if not dataset.exists(SUCCESS):
        return None
    summary = json.loads(dataset.read_bytes(SUCCESS)).get("summary", {})
    chosen = [r for r in summary.get("rounds", []) if r.get("round") == summary.get("best_round")]
    return chosen[0] if chosen else None


def list_versions(workdir: Storage) -> list[str]:
    """Every version folder under ``<workdir>/versions``, complete or not, sorted by name."""
    return sorted({path.split("/", 1)[0] for path in workdir.child(VERSIONS).list()})


def published_at(workdir: Storage, version: str) -> str | None:
    """When ``version`` was published (ISO 8601, UTC), or None when it is not complete."""
    folder = version_storage(workdir, version)
    if not folder.exists(PUBLISHED):
        return None
    return json.loads(folder.read_bytes(PUBLISHED)).get("published_at", "")


def read_latest(workdir: Storage) -> dict[str, Any] | None:
    """``LATEST``'s record (``version``, ``published_at``), or None before the first refresh."""
    if not workdir.exists(LATEST):
        return None
    return json.loads(workdir.read_bytes(LATEST))


def advance_latest(workdir: Storage, version: str) -> str:
    """Point ``LATEST`` at ``version`` when it is complete and newer than the one named;
    return the version ``LATEST`` names afterwards."""
    when = published_at(workdir, version)
    if when is None:
        raise FreemaskError(f"{version}: not published ({PUBLISHED} missing); LATEST stays")

    def newer(current: bytes | None) -> bytes | None:
        if current is not None and json.loads(current)["published_at"] >= when:
            return None
        record = {"version": version, "published_at": when}
        return json.dumps(record, sort_keys=True).encode() + b"\n"

    return json.loads(workdir.update(LATEST, newer))["version"]


def _prune(
    workdir: Storage, keep: int, names: list[str], complete: list[str], latest: str | None
) -> list[str]:
    """Delete the ``complete`` versions (oldest first) but the newest ``keep`` and ``latest``
    (never an incomplete one: it may be a refresh in progress), and finish the deletions an
    earlier prune left half done; return the versions deleted."""
    kept = {*complete[-keep:], latest}
    unfinished = [name for name in names if version_storage(workdir, name).exists(DELETING)]
    doomed = [name for name in complete if name not in kept]
    for name in doomed:
        version_storage(workdir, name).write_bytes(DELETING, b"{}\n")
    for name in sorted({*unfinished, *doomed}):
        folder = version_storage(workdir, name)
        folder.delete(PUBLISHED)  # first: from here on no reader takes it for complete
        for path in folder.list():
            if path != DELETING:
                folder.delete(path)
        folder.delete(DELETING)
    return sorted({*unfinished, *doomed})
