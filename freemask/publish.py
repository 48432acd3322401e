"""The end of a run: the final dataset exported in every format and the run report written,
under the run's work directory. The local runner and the pipeline's ``publish`` task both call
``publish_run``, so a cluster run ends with the same dataset and report as ``freemask run``."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from freemask.config import RunConfig
from freemask.run_description import DESCRIPTION_TAG, describe_run
from freemask.storage import Storage, read_json, write_json
from freemask.tracking import Run
from freemask.versions import FINAL, PUBLISHED

EXPORT = "export"


@dataclass(frozen=True)
class Published:
    """What ``publish_run`` wrote: per format, the export's counts; the report's summary."""

    exports: dict[str, dict]
    report: dict[str, Any]


def publish_run(config: RunConfig, workdir: Storage, mlflow_url: str | None = None) -> Published:
    """Export ``<workdir>/active`` as ``<workdir>/export/<format>`` for each of
    ``export.FORMATS`` (COCO, VOC, Hugging Face ``datasets``), write ``<workdir>/report/`` with
    its page ``index.html`` (linking ``mlflow_url``, the MLflow run's page, when given), then
    the ``_PUBLISHED`` marker. Safe to re-run: each file is rewritten whole."""
    # Imported here: the exit handler's image reads only the marker (is_published).
    from freemask.export import FORMATS, export_dataset
    from freemask.local.report import REPORT, write_run_report
    from freemask.report_page import PAGE, report_page

    final = workdir.child(FINAL)
    options = {"hf": {"name": config.name}}  # the dataset card's title
    exports = {
        fmt: export_dataset(
            final, workdir.child(f"{EXPORT}/{fmt}"), config.classes, fmt, **options.get(fmt, {})
        )
        for fmt in FORMATS
    }
    rule_threshold = (
        None if config.active.keep_rule == "percentile" else config.active.iou_threshold
    )
    written = write_run_report(workdir, rule_threshold, config.classes, describe_run(config))
    report = written.summary
    page = report_page(config.name, workdir.uri, exports, report, written.pictures, mlflow_url)
    workdir.child(REPORT).write_bytes(PAGE, page.encode())
    report["files"].append(PAGE)
    published_at = datetime.now(UTC).isoformat(timespec="microseconds")
    marker = {"exports": exports, "report": report["files"], "published_at": published_at}
    write_json(workdir, PUBLISHED, marker)
    return Published(exports, report)


def is_published(workdir: Storage) -> bool:
    """Whether ``publish_run`` completed under ``workdir`` (its marker is written last)."""
    return workdir.exists(PUBLISHED)


def log_report(run: Run, workdir: Storage, files: list[str]) -> None:
    """Log the report of ``<workdir>/report/`` (``files``, as ``publish_run`` lists them) to
    ``run``: the files and ``summary.json`` as ``report/`` artifacts, the run's resolved config
    (``<workdir>/config.yaml``, credentials already out), the stages' counts and times as the
    table ``stages.json``, the pictures as MLflow images (each stage's sheet; the IoU histogram
    per round, step = round), and the run's description with what it shipped."""
    from freemask.local.report import REPORT, SUMMARY

    report = workdir.child(REPORT)
    summary = read_json(report, SUMMARY)
    # 1. The files: the page, the numbers, the pictures; and the config beside them.
    with tempfile.TemporaryDirectory() as temp:
        for name in [*files, SUMMARY]:
            (Path(temp) / name).write_bytes(report.read_bytes(name))
        run.log_artifact(temp, REPORT)
    if workdir.exists(CONFIG):
        log_config(run, workdir)
    # 2. Counters as one table, not as metrics: the run's charts stay the rounds' story.
    run.log_dict(stage_table(summary), STAGE_TABLE)
    # 3. The pictures as MLflow images: the run page's image charts.
    for name in files:
        if name.endswith(".png"):
            key, step = image_key(name)
            run.log_image(report.read_bytes(name), key, step)
    # 4. What the run is, and what it shipped.
    if summary.get("description"):
        run.set_tags({DESCRIPTION_TAG: summary["description"] + shipped(summary)})


CONFIG = "config.yaml"  # the resolved config each runner keeps in the work directory
STAGE_TABLE = "stages.json"


def log_config(run: Run, workdir: Storage) -> None:
    """Log ``<workdir>/config.yaml`` as the artifact ``config.yaml``."""
    with tempfile.TemporaryDirectory() as temp:
        path = Path(temp) / CONFIG
        path.write_bytes(workdir.read_bytes(CONFIG))
        run.log_artifact(path)


def stage_table(summary: dict[str, Any]) -> dict[str, Any]:
    """The stages' counts and seconds as a table (MLflow's split layout: columns, data), in
    pipeline order."""
    from freemask.local.report import STAGES

    stages = summary.get("stages", {})
    columns = ["stage", "made", "rejected", "seconds"]
    data = [
        [
            stage,
            stages[stage].get("samples"),
            stages[stage].get("rejected"),
            stages[stage].get("seconds"),
        ]
        for stage in sorted(stages, key=lambda name: STAGES.index(name) if name in STAGES else 99)
    ]
    return {"columns": columns, "data": data}


def image_key(name: str) -> tuple[str, int]:
    """(MLflow image key, step) of a report picture: ``round_02_iou_histogram.png`` is
    ``iou_histogram`` at step 2, ``generate_samples.png`` is ``generate_samples`` at 0."""
    stem = name.removesuffix(".png")
    parts = stem.split("_", 2)
    if parts[0] == "round" and len(parts) == 3 and parts[1].isdigit():
        return parts[2], int(parts[1])
    return stem, 0


def shipped_candidate(outcome: dict[str, Any]) -> str:
    """The shipped candidate in words: which, with its validation mIoU and margins (older
    summaries: the round and its mIoU)."""
    if outcome.get("chosen"):
        return outcome["chosen"]
    miou = outcome.get("val_miou")
    said = f"the kept set of round {outcome.get('best_round')}"
    return said + (f" (validation mIoU {miou:.3f})" if miou is not None else "")


def shipped(summary: dict[str, Any]) -> str:
    """The description's last lines: what the run shipped, and where its report is."""
    outcome = summary.get("outcome")
    paragraphs = []
    if outcome:
        paragraphs.append(
            f"**Shipped {outcome.get('samples')} samples**: {shipped_candidate(outcome)}; "
            f"stopped: {outcome.get('stop_reason')}."
        )
    paragraphs.append("The report: `report/index.html` among this run's artifacts.")
    return "".join(f"\n\n{paragraph}" for paragraph in paragraphs)
