"""The run report as one self-contained HTML page: what ``freemask run`` leaves in
``report/index.html`` and what the pipeline's ``publish`` task shows in the KFP UI (an HTML
artifact). Pictures are embedded as data URIs, so the page needs nothing beside it."""

from __future__ import annotations

import base64
from html import escape
from typing import Any

from freemask.redact import redact

PAGE = "index.html"


def report_page(
    name: str,
    dataset: str,
    exports: dict[str, dict[str, Any]],
    summary: dict[str, Any],
    pictures: dict[str, bytes],
    mlflow_url: str | None,
) -> str:
    """The page of a run named ``name`` whose dataset lies under ``dataset``: the exports
    (format -> counts, under ``<dataset>/export/<format>``), the report's ``summary`` (stages,
    rounds), its ``pictures`` (file name -> PNG bytes) and the MLflow run's page."""
    dataset = redact(dataset)
    parts = [f"<h1>{escape(name)}</h1>", f"<p>Dataset: <code>{escape(dataset)}</code></p>"]
    if mlflow_url:
        link = escape(redact(mlflow_url))
        parts.append(f'<p><a href="{link}" target="_blank">MLflow run</a></p>')
    parts.append("<h2>Exports</h2>")
    parts.append(
        _table(
            ["format", "where", "counts"],
            [
                [fmt, f"{dataset}/export/{fmt}", ", ".join(f"{k} {v}" for k, v in counts.items())]
                for fmt, counts in exports.items()
            ],
        )
    )
    stages = summary.get("stages", {})
    if stages:
        parts.append("<h2>Stages</h2>")
        rows = [
            [
                stage,
                facts.get("samples"),
                facts.get("instances_per_sample"),
                facts.get("label_quality", {}).get("miou", "-"),
            ]
            for stage, facts in stages.items()
        ]
        parts.append(_table(["stage", "samples", "objects per sample", "label mIoU"], rows))
    rounds = summary.get("rounds", [])
    if rounds:
        parts.append("<h2>Active-learning rounds</h2>")
        rows = [[r.get("round"), r.get("kept"), r.get("val_miou")] for r in rounds]
        parts.append(_table(["round", "kept", "validation mIoU"], rows))
    for file_name, png in pictures.items():
        encoded = base64.b64encode(png).decode("ascii")
        parts.append(
            f'<figure><img alt="{escape(file_name)}" src="data:image/png;base64,{encoded}">'
            f"<figcaption>{escape(file_name)}</figcaption></figure>"
        )
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(name)}</title>"
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.2em .6em}img{max-width:100%}</style>"
        f"</head><body>\n{body}\n</body></html>\n"
    )


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{escape(str(cell))}</th>" for cell in header)
    lines = [f"<tr>{head}</tr>"]
    for row in rows:
        cells = "".join(f"<td>{escape('-' if cell is None else str(cell))}</td>" for cell in row)
        lines.append(f"<tr>{cells}</tr>")
    return "<table>" + "".join(lines) + "</table>"
