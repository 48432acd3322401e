"""The run report as one self-contained HTML page: what ``freemask run`` leaves in
``report/index.html``, what the pipeline's ``publish`` task shows in the KFP UI (an HTML
artifact) and what the MLflow run keeps. Pictures are embedded as data URIs, so the page needs
nothing beside it.

It reads top to bottom as the run went: what the run makes and what it shipped, then one
section per stage (counts, time, and a contact sheet balanced over the classes, the
worst-scoring samples beside typical ones), the active-learning rounds with their charts, and
label quality where samples have truth.
"""

from __future__ import annotations

import base64
import re
from html import escape
from typing import Any

from freemask.redact import redact

PAGE = "index.html"
NUMBER = re.compile(r"[-+]?\d+(\.\d+)?")
STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;color:#222}
h1{margin-bottom:.2em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0} td,th{border:1px solid #ccc;padding:.2em .6em}
td.n{text-align:right} th{background:#f3f3f3}
nav a{margin-right:.8em} .facts{color:#555} .outcome{background:#eef6ee;padding:.6em 1em}
.class-row{display:flex;align-items:center;gap:6px;margin:4px 0}
.class-name{width:7em;font-weight:bold;overflow:hidden;text-overflow:ellipsis}
.tile{margin:0;font-size:.75em;text-align:center}
.tile img{display:block;border:3px solid #9bc59b}
.tile.worst img{border-color:#d9534f}
figure.chart{display:inline-block;margin:.4em} img{max-width:100%}
"""


def report_page(
    name: str,
    dataset: str,
    exports: dict[str, dict[str, Any]],
    summary: dict[str, Any],
    pictures: dict[str, bytes],
    mlflow_url: str | None,
) -> str:
    """The page of a run named ``name`` whose dataset lies under ``dataset``: the exports
    (format -> counts, under ``<dataset>/export/<format>``), the report's ``summary`` (stages
    with their sheets, rounds, outcome), its ``pictures`` (the report's PNGs by file name, the
    sheets' tiles by their ``picture`` name) and the MLflow run's page."""
    dataset = redact(dataset)
    stages = summary.get("stages", {})
    parts = [f"<h1>{escape(name)}</h1>", f"<p>Dataset: <code>{escape(dataset)}</code></p>"]
    if mlflow_url:
        link = escape(redact(mlflow_url))
        parts.append(f'<p><a href="{link}" target="_blank">MLflow run</a></p>')
    if summary.get("description"):
        parts.append(f'<div class="description">{_markdown(redact(summary["description"]))}</div>')
    parts.append(_outcome(summary.get("outcome")))
    links = [("exports", "Exports"), ("stages", "Stages")]
    links += [(f"stage-{stage}", stage) for stage in stages]
    links += [("rounds", "Rounds"), ("label-quality", "Label quality")]
    parts.append("<nav>" + "".join(f'<a href="#{a}">{escape(t)}</a>' for a, t in links) + "</nav>")
    parts.append('<section id="exports"><h2>Exports</h2>')
    rows = [
        [fmt, f"{dataset}/export/{fmt}", ", ".join(f"{k} {v}" for k, v in counts.items())]
        for fmt, counts in exports.items()
    ]
    parts.append(_table(["format", "where", "counts"], rows) + "</section>")
    parts.append(_stages(stages, pictures))
    parts.append(_rounds(summary.get("rounds", []), pictures))
    parts.append(_label_quality(stages))
    body = "\n".join(part for part in parts if part)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(name)}</title><style>{STYLE}</style>"
        f"</head><body>\n{body}\n</body></html>\n"
    )


def chosen_of(outcome: dict[str, Any]) -> str:
    """Which candidate was shipped and by how much it won, in words (older runs: its round)."""
    return outcome.get("chosen") or f"the kept set of round {outcome.get('best_round')}"


def _outcome(outcome: dict[str, Any] | None) -> str:
    if not outcome:
        return '<p class="outcome" id="outcome">The active-learning loop has not finished.</p>'
    return (
        f'<p class="outcome" id="outcome">Shipped <b>{escape(str(outcome.get("samples")))}</b> '
        f"samples: {escape(chosen_of(outcome))} "
        f"(validation mIoU {_number(outcome.get('val_miou'))}). The loop stopped: "
        f"{escape(str(outcome.get('stop_reason') or '-'))}.</p>"
    )


def _stages(stages: dict[str, dict[str, Any]], pictures: dict[str, bytes]) -> str:
    """The stages' table, then a section per stage with its sheet."""
    if not stages:
        return ""
    rows = [
        [
            stage,
            facts.get("samples"),
            facts.get("rejected"),
            _number(facts.get("seconds"), 1),
            facts.get("instances_per_sample"),
            _number(facts.get("label_quality", {}).get("miou")),
        ]
        for stage, facts in stages.items()
    ]
    total = sum(facts.get("seconds") or 0.0 for facts in stages.values())
    header = ["stage", "made", "rejected", "seconds", "objects per sample", "label mIoU"]
    parts = [
        '<section id="stages"><h2>Stages</h2>',
        _table(header, rows),
        f'<p class="facts">{total:.1f} s in all.</p></section>',
    ]
    for stage, facts in stages.items():
        parts.append(
            f'<section class="stage" id="stage-{escape(stage)}" data-stage="{escape(stage)}">'
            f"<h2>{escape(stage)}</h2>"
            f'<p class="facts">made {escape(str(facts.get("samples")))}, rejected '
            f"{escape(str(facts.get('rejected')))}, {_number(facts.get('seconds'), 1)} s</p>"
        )
        if "sheet" in facts:
            parts.append(_sheet(stage, facts["sheet"], pictures))
        parts.append("</section>")
    return "\n".join(parts)


def _sheet(stage: str, sheet: dict[str, Any], pictures: dict[str, bytes]) -> str:
    """A stage's contact sheet: a row per class, its worst-scoring tiles (red) beside typical
    ones (green), each the image beside its labels."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for tile in sheet["tiles"]:
        rows.setdefault(tile["class"], []).append(tile)
    score = sheet.get("score")
    about = (
        f"Per class, the lowest-scoring samples (red) beside typical ones (green, nearest the "
        f"median) by <code>{escape(score)}</code>"
        if score
        else "Per class, samples spread over the stage's output"
    )
    if set(rows) == {""}:
        about = "Samples spread over the stage's output (they hold no objects)"
    if sheet.get("classes_left_out"):
        about += f"; {sheet['classes_left_out']} classes with higher scores are left out"
    parts = [
        f'<div class="sheet" data-stage="{escape(stage)}">',
        f'<p class="facts">{about}. Also in the report folder as '
        f"<code>{escape(sheet['file'])}</code>.</p>",
    ]
    for class_name, tiles in rows.items():
        label = class_name or "(no objects)"
        parts.append(
            f'<div class="class-row" data-class="{escape(class_name)}">'
            f'<div class="class-name">{escape(label)}</div>'
        )
        for tile in tiles:
            data = pictures.get(tile["picture"])
            image = (
                f'<img alt="{escape(tile["sample"])}" src="data:image/jpeg;base64,'
                f'{base64.b64encode(data).decode("ascii")}">'
                if data
                else ""
            )
            score = "" if tile.get("score") is None else f' data-score="{tile["score"]}"'
            parts.append(
                f'<figure class="tile {escape(tile["kind"])}" data-stage="{escape(stage)}" '
                f'data-class="{escape(class_name)}" data-kind="{escape(tile["kind"])}" '
                f'data-sample="{escape(tile["sample"])}"{score}>'
                f"{image}<figcaption>{escape(tile['caption'])}</figcaption></figure>"
            )
        parts.append("</div>")
    parts.append("</div>")
    return "".join(parts)


def _rounds(rounds: list[dict[str, Any]], pictures: dict[str, bytes]) -> str:
    if not rounds:
        return '<section id="rounds"><h2>Active-learning rounds</h2><p>None yet.</p></section>'
    header = ["round", "judge", "candidates", "kept", "kept fraction", "IoU vs pseudo"]
    rows = [
        [
            r.get("round"),
            r.get("judge"),
            r.get("candidates"),
            r.get("kept"),
            _number(r.get("kept_fraction")),
            _number(r.get("mean_iou_vs_pseudo")),
        ]
        for r in rounds
    ]
    for row, r in zip(rows, rounds, strict=True):
        row.append(_number(r.get("val_miou")))
    parts = [
        '<section id="rounds"><h2>Active-learning rounds</h2>',
        _table([*header, "validation mIoU"], rows),
    ]
    classes = list(dict.fromkeys(name for r in rounds for name in r.get("per_class_iou") or {}))
    if classes:
        parts.append("<h3>Validation IoU per class</h3>")
        per_class = [
            [name, *(_number((r.get("per_class_iou") or {}).get(name)) for r in rounds)]
            for name in classes
        ]
        parts.append(_table(["class", *(f"round {r.get('round')}" for r in rounds)], per_class))
    charts = ["miou_per_round.png"] + [
        f"round_{r['round']:02d}_iou_histogram.png" for r in rounds if "round" in r
    ]
    for chart in charts:
        if chart in pictures:
            encoded = base64.b64encode(pictures[chart]).decode("ascii")
            parts.append(
                f'<figure class="chart"><img alt="{escape(chart)}" '
                f'src="data:image/png;base64,{encoded}"><figcaption>{escape(chart)}</figcaption>'
                "</figure>"
            )
    parts.append("</section>")
    return "\n".join(parts)


def _label_quality(stages: dict[str, dict[str, Any]]) -> str:
    """Label quality against truth per stage, and per class, where samples have it."""
    measured = {s: f["label_quality"] for s, f in stages.items() if f.get("label_quality")}
    if not measured:
        return (
            '<section id="label-quality"><h2>Label quality</h2><p>No sample has truth to '
            "measure against (only renders and redraws do).</p></section>"
        )
    keys = [
        "miou",
        "object_precision",
        "object_recall",
        "background_share",
        "wrong_class_share",
        "ignore_share",
    ]
    rows = [
        [stage, q.get("samples"), *(_number(q.get(k)) for k in keys)]
        for stage, q in measured.items()
    ]
    parts = [
        '<section id="label-quality"><h2>Label quality</h2>',
        _table(["stage", "samples", *(k.replace("_", " ") for k in keys)], rows),
    ]
    classes = list(dict.fromkeys(c for q in measured.values() for c in q.get("per_class", {})))
    per_class = [
        [
            name,
            *(_number(q.get("per_class", {}).get(name, {}).get("iou")) for q in measured.values()),
        ]
        for name in classes
    ]
    parts.append("<h3>IoU per class</h3>" + _table(["class", *measured], per_class))
    parts.append("</section>")
    return "\n".join(parts)


def _markdown(text: str) -> str:
    """The little Markdown a run's description uses (paragraphs, "- " lists, **bold** and
    `code`) as HTML, everything escaped first."""
    blocks = []
    for block in text.split("\n\n"):
        lines = [_inline(line) for line in block.strip().splitlines()]
        if lines and all(line.startswith("- ") for line in lines):
            blocks.append("<ul>" + "".join(f"<li>{line[2:]}</li>" for line in lines) + "</ul>")
        elif lines:
            blocks.append(f"<p>{' '.join(lines)}</p>")
    return "".join(blocks)


def _inline(line: str) -> str:
    line = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", escape(line))
    return re.sub(r"`(.+?)`", r"<code>\1</code>", line)


def _number(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{escape(str(cell))}</th>" for cell in header)
    lines = [f"<tr>{head}</tr>"]
    for row in rows:
        cells = "".join(
            f'<td class="n">{escape(str(cell))}</td>'
            if isinstance(cell, int | float) or NUMBER.fullmatch(str(cell))
            else f"<td>{escape('-' if cell is None else str(cell))}</td>"
            for cell in row
        )
        lines.append(f"<tr>{cells}</tr>")
    return "<table>" + "".join(lines) + "</table>"
