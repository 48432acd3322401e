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
from freemask.storage import Storage, write_json
from freemask.tracking import Run
from freemask.versions import FINAL, PUBLISHED

EXPORT = "export"


@dataclass(frozen=True)
class Published:
    """What ``publish_run`` wrote: per format, the export's counts; the report's summary."""

    exports: dict[str, dict]
    report: dict[str, Any]


def publish_run(config: RunConfig, workdir: Storage, mlflow_url: str | None = None) -> Published:
    """Export ``<workdir>/active`` as ``<workdir>/export/<format>`` (COCO, VOC), write
    ``<workdir>/report/`` with its page ``index.html`` (linking ``mlflow_url``, the MLflow run's
    page, when given), then the ``_PUBLISHED`` marker. Safe to re-run: each file is rewritten
    whole."""
    # Imported here: the exit handler's image reads only the marker (is_published).
    from freemask.export import FORMATS, export_dataset
    from freemask.local.report import REPORT, write_run_report
    from freemask.report_page import PAGE, report_page

    final = workdir.child(FINAL)
    exports = {
        fmt: export_dataset(final, workdir.child(f"{EXPORT}/{fmt}"), config.classes, fmt)
        for fmt in FORMATS
    }
    rule_threshold = (
        None if config.active.keep_rule == "percentile" else config.active.iou_threshold
    )
    report = write_run_report(workdir, rule_threshold, config.classes)
    folder = workdir.child(REPORT)
    pictures = {name: folder.read_bytes(name) for name in report["files"] if name.endswith(".png")}
    page = report_page(config.name, workdir.uri, exports, report, pictures, mlflow_url)
    folder.write_bytes(PAGE, page.encode())
    report["files"].append(PAGE)
    published_at = datetime.now(UTC).isoformat(timespec="microseconds")
    marker = {"exports": exports, "report": report["files"], "published_at": published_at}
    write_json(workdir, PUBLISHED, marker)
    return Published(exports, report)


def is_published(workdir: Storage) -> bool:
    """Whether ``publish_run`` completed under ``workdir`` (its marker is written last)."""
    return workdir.exists(PUBLISHED)


def log_report(run: Run, workdir: Storage, files: list[str]) -> None:
    """Log the files of ``<workdir>/report/`` as ``run``'s ``report/`` artifacts."""
    from freemask.local.report import REPORT

    report = workdir.child(REPORT)
    with tempfile.TemporaryDirectory() as temp:
        for name in files:
            (Path(temp) / name).write_bytes(report.read_bytes(name))
        run.log_artifact(temp, REPORT)
