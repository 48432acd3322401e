"""Pictures of a round for MLflow: the IoU histogram and a contact sheet with mask overlays,
logged as MLflow images (step = the round)."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from freemask.active.rounds import SCORE
from freemask.export import voc_palette
from freemask.records import Sample, ignore_value, serialize_samples
from freemask.storage import Storage, read_image
from freemask.tracking import Run

TILE = 128
CONTACT_ROWS = 6


def iou_histogram_png(scores: list[float], threshold: float | None, title: str) -> bytes:
    """A PNG histogram of per-sample scores in [0, 1], with the threshold marked."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(5, 3), dpi=100)
    axes.hist(scores, bins=20, range=(0, 1), color="#4c72b0")
    if threshold is not None:
        axes.axvline(threshold, color="#c44e52", linestyle="--", label=f"threshold {threshold:.2f}")
        axes.legend(loc="upper left")
    axes.set_xlabel("IoU of generated mask vs pseudo-label")
    axes.set_ylabel("samples")
    axes.set_title(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    pyplot.close(figure)
    return buffer.getvalue()


def overlay(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The image with its label map blended in (VOC colours; ignore shown white). In a 16-bit
    label map class k > 254 takes class ``(k - 1) % 254 + 1``'s colour: the palette has 256."""
    palette = np.array(voc_palette(), dtype=np.uint8).reshape(-1, 3)
    colours = palette[np.where(labels > 0, (labels.astype(np.int64) - 1) % 254 + 1, 0)]
    colours[labels == ignore_value(labels)] = 255
    alpha = np.where(labels == 0, 0.0, 0.5)[..., None]
    return (image * (1 - alpha) + colours * alpha).astype(np.uint8)


def contact_sheet_png(rows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]) -> bytes:
    """One row per sample: caption, image+generated mask, image+pseudo-label."""
    sheet = Image.new("RGB", (2 * TILE + 160, max(1, len(rows)) * TILE), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (caption, image, generated, pseudo) in enumerate(rows):
        top = index * TILE
        for column, labels in enumerate((generated, pseudo)):
            tile = Image.fromarray(overlay(image, labels)).resize((TILE, TILE))
            sheet.paste(tile, (160 + column * TILE, top))
        draw.text((4, top + 4), caption, fill="black")
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


def log_kept(run: Run, kept: list[Sample]) -> None:
    """A candidate's kept manifest as the run's ``round/kept.jsonl`` artifact."""
    with tempfile.TemporaryDirectory() as temp:
        path = Path(temp) / "kept.jsonl"
        path.write_bytes(serialize_samples(kept))
        run.log_artifact(path, "round")


def log_pictures(
    run: Run,
    out: Storage,
    folder: str,
    kept: list[Sample],
    discarded: list[Sample],
    threshold: float,
    step: int,
) -> None:
    """The round's IoU histogram and contact sheet as MLflow images at ``step`` (the round),
    and its kept manifest as an artifact. The sheet shows the filter's edge: the kept samples
    that scored lowest beside the discarded ones that scored highest."""
    log_kept(run, kept)
    pseudo_store = out.child(f"{folder}/pseudo")
    rows = []
    edge = (
        ("kept", sorted(kept, key=lambda s: (s.scores[SCORE], s.id))),
        ("discarded", sorted(discarded, key=lambda s: (-s.scores[SCORE], s.id))),
    )
    for label, group in edge:
        for sample in group[: CONTACT_ROWS // 2]:
            caption = f"{label} {sample.scores[SCORE]:.2f}\n{sample.id[:20]}"
            image = read_image(out, sample.image, mode="RGB")
            labels = read_image(pseudo_store, f"{sample.id}.png")
            rows.append((caption, image, read_image(out, sample.semantic_mask), labels))
    scores = [s.scores[SCORE] for s in [*kept, *discarded]]
    run.log_image(iou_histogram_png(scores, threshold, folder), "iou_histogram", step)
    run.log_image(contact_sheet_png(rows), "contact_sheet", step)
