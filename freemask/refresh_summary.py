"""What one refresh made and cost, against the version before it: ``<version>/refresh.json``.

Read from the version's own outputs (each stage's ``_SUCCESS`` holds its written, dropped and
task seconds summed over shards; the report's rounds hold validation mIoU), so a local refresh
and a pipeline run are summed alike. ``changed`` lists the settings that differ from the
config of the version ``LATEST`` named before this one: a refresh says what it changed.
"""

from __future__ import annotations

import json
from typing import Any

from freemask.bounded_yaml import load
from freemask.stage_output import SUCCESS
from freemask.storage import Storage, write_json
from freemask.tracking import flatten_keys
from freemask.versions import FINAL, best_round, read_latest, settle_versions, version_storage

SUMMARY = "refresh.json"
STAGES = ("generate", "backgrounds", "refine", "compose", "harmonize", "active")
# Settings that differ between any two versions by construction.
PER_VERSION = {"workdir", "draw", "kubeflow.dataset_version", "tracking.uri"}


def summarize_refresh(workdir: Storage, version: str) -> dict[str, Any]:
    """Write and return the summary of ``version`` under ``workdir`` (call it before ``LATEST``
    moves to ``version``, so that ``changed`` compares with the version before). Written once:
    a refresh resumed after ``LATEST`` moved keeps the summary made against the one before."""
    folder = version_storage(workdir, version)
    if folder.exists(SUMMARY):
        return json.loads(folder.read_bytes(SUMMARY))
    stages = {}
    for stage in STAGES:
        if folder.exists(f"{stage}/{SUCCESS}"):
            done = json.loads(folder.read_bytes(f"{stage}/{SUCCESS}"))
            stages[stage] = {key: done.get(key, 0) for key in ("written", "dropped", "seconds")}
    rounds = []
    if folder.exists("report/summary.json"):
        rounds = json.loads(folder.read_bytes("report/summary.json")).get("rounds", [])
    mious = [entry["val_miou"] for entry in rounds if entry.get("val_miou") is not None]
    before = read_latest(workdir)
    previous = before["version"] if before and before["version"] != version else None
    summary = {
        "version": version,
        "previous": previous,
        "drawn": stages.get("generate", {}).get("written", 0),
        "kept": stages.get("active", {}).get("written", 0),
        "dropped": sum(facts["dropped"] for facts in stages.values()),
        "best_val_miou": max(mious, default=None),
        "seconds": {stage: facts["seconds"] for stage, facts in stages.items()},
        "changed": _changed(workdir, previous, version) if previous else [],
    }
    write_json(folder, SUMMARY, summary)
    return summary


def summary_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The summary's headline numbers as MLflow metrics of the refresh's parent run, compared
    across refreshes: samples drawn and kept, and the best validation mIoU. The rest (what
    was dropped, each stage's seconds) is the ``refresh.json`` artifact."""
    metrics = {f"refresh.{key}": float(summary[key]) for key in ("drawn", "kept")}
    if summary["best_val_miou"] is not None:
        metrics["refresh.best_val_miou"] = float(summary["best_val_miou"])
    return metrics


def _changed(workdir: Storage, previous: str, version: str) -> list[str]:
    """``key: old -> new`` for each setting whose value differs between the two versions'
    configs (``config.yaml``, the resolved config each run keeps)."""
    configs = []
    for name in (previous, version):
        folder = version_storage(workdir, name)
        text = folder.read_bytes("config.yaml") if folder.exists("config.yaml") else b"{}"
        configs.append(flatten_keys(load(text.decode("utf-8"), f"{name}/config.yaml") or {}))
    old, new = configs
    keys = sorted((set(old) | set(new)) - PER_VERSION)
    return [
        f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
        for key in keys
        if old.get(key) != new.get(key)
    ]


def log_summary(client: Any, run_id: str, summary: dict[str, Any]) -> None:
    """Log the summary's metrics, the summary itself (``refresh.json``) and what changed to the
    refresh's parent run (``client``: an ``mlflow.MlflowClient``); a finished run takes them
    too."""
    for key, value in summary_metrics(summary).items():
        client.log_metric(run_id, key, value)
    client.log_dict(run_id, summary, SUMMARY)
    client.set_tag(run_id, "freemask.refresh_changed", "; ".join(summary["changed"]) or "-")


def alias_latest_model(client: Any, model_name: str, workdir: Storage) -> str | None:
    """Point the registered model's ``current`` alias at the segmenter of the version
    ``LATEST`` names (its best round's model version), as ``LATEST`` points at its dataset;
    return that model version, or None when the version registered none. (MLflow reserves
    the alias ``latest``: ``models:/<name>/latest`` is the newest registered version, which
    a failed refresh may have registered.)"""
    latest = read_latest(workdir)
    dataset = latest and version_storage(workdir, latest["version"]).child(FINAL)
    best = dataset and best_round(dataset)
    model_version = best.get("model_version") if best else None
    if model_version:
        client.set_registered_model_alias(model_name, "current", model_version)
    return model_version


def finish_refresh(
    workdir: Storage, version: str, keep: int, client: Any | None, run_id: str, model_name: str
) -> tuple[str | None, list[str]]:
    """The end of a published refresh, locally as in the pipeline: its summary (logged to
    ``run_id`` through ``client``, an ``MlflowClient``, when given), ``LATEST`` and retention
    (``settle_versions``), then the model's ``current`` alias; returns what ``settle_versions``
    does."""
    summary = summarize_refresh(workdir, version)
    if client is not None:
        log_summary(client, run_id, summary)
    settled = settle_versions(workdir, keep)
    if client is not None:
        alias_latest_model(client, model_name, workdir)
    return settled
