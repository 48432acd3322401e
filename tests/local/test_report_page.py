"""The run report of a small demo run: its page opened in headless Chromium (every stage's
section, a class-balanced sheet of the worst-scoring beside typical samples, a picture that is
not blank), and its MLflow parent run telling the rounds' story with the report beside it."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import CLASSES, write_dataset
from mlflow import MlflowClient
from PIL import Image

from freemask.cli import main
from freemask.local.report import write_run_report
from freemask.local.runner import PIPELINE
from freemask.local.sheets import PER_CLASS
from freemask.records import write_manifest
from freemask.report_page import report_page
from freemask.run_description import DESCRIPTION_TAG
from freemask.storage import LocalStorage

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
STAGES = [stage for stage, _, _ in PIPELINE]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, dict]:
    """A demo run as small as goes: two images per class, six scenes, two rounds."""
    root = tmp_path_factory.mktemp("report")
    demo = str(REPO / "configs/demo.yaml")
    scenes = ["toyworld", "scenes", "-c", demo, "--out", str(root / "validation")]
    assert main([*scenes, "--count", "4", "--seed", "7"]) == 0
    config = yaml.safe_load((REPO / "configs/demo.yaml").read_text())
    config["workdir"] = str(root / "work")
    config["relate"]["thesaurus"] = str(REPO / "configs" / config["relate"]["thesaurus"])
    config["generate"].update(images_per_class=2, num_inference_steps=4)
    config["compose"].update(images=6, backgrounds_per_scene=1)
    config["segment"].update(train_steps=2, checkpoint_every=2, validation=str(root / "validation"))
    config["active"].update(
        max_rounds=2, min_miou_gain=0.0, keep_rule="percentile", iou_threshold=0.0
    )
    path = root / "demo.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["run", "-c", str(path)]) == 0
    return root / "work", config


class PageParts(HTMLParser):
    """The stage sections and sheet tiles of a page, by their data attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.tiles: list[dict[str, str]] = []
        self.images = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {key: value or "" for key, value in attrs}
        classes = found.get("class", "").split()
        if tag == "section" and "stage" in classes:
            self.sections.append(found["data-stage"])
        if tag == "figure" and "tile" in classes:
            self.tiles.append(found)
        if tag == "img" and found.get("src", "").startswith("data:image/"):
            self.images += 1


def chromium(*arguments: str, profile: Path) -> subprocess.CompletedProcess:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {CHROMIUM} is missing (.ci/run installs it)")
        pytest.skip(
            "NO BROWSER: headless Chromium is not installed, so the report page was not opened "
            "(apt-get install -y chromium)"
        )
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *arguments,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=True)


def test_the_page_in_chromium_shows_every_stage_and_class_balanced_sheets(
    demo_run, tmp_path: Path
) -> None:
    work, config = demo_run
    page = (work / "report/index.html").as_uri()
    # 1. The page as the browser builds it: a section per stage, tiles per class.
    dom = chromium("--dump-dom", page, profile=tmp_path / "profile").stdout
    parts = PageParts()
    parts.feed(dom)
    assert parts.sections == STAGES
    generated = [tile for tile in parts.tiles if tile["data-stage"] == "generate"]
    by_class = {
        name: [t for t in generated if t["data-class"] == name] for name in config["classes"]
    }
    # Every class is there (the first samples would all be balls), a few tiles each, the
    # worst-scoring beside a typical one, scored lower.
    assert all(0 < len(tiles) <= PER_CLASS for tiles in by_class.values()), by_class
    for name, tiles in by_class.items():
        kinds = {tile["data-kind"]: float(tile["data-score"]) for tile in tiles}
        assert set(kinds) == {"worst", "typical"}, name
        assert kinds["worst"] <= kinds["typical"], name
    active = {tile["data-class"] for tile in parts.tiles if tile["data-stage"] == "active"}
    assert len(active) >= 2  # the shipped scenes, shown class by class
    assert parts.images >= len(parts.tiles) + 3  # every tile, the mIoU curve, two histograms

    # 2. The screenshot: the page renders, and not as a blank sheet.
    shot = tmp_path / "report.png"
    chromium(f"--screenshot={shot}", "--window-size=1280,2000", page, profile=tmp_path / "p2")
    pixels = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("RGB"))
    assert pixels.shape == (2000, 1280, 3)
    assert pixels.std() > 20 and (pixels.min(axis=2) < 200).mean() > 0.05


def test_the_parent_run_tells_the_rounds_story_and_keeps_the_report(demo_run, tmp_path) -> None:
    work, config = demo_run
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(config["tracking"]["experiment"])
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    run_id = parent.info.run_id
    # 1. Metrics: the rounds' story, one point per round; no stage counters.
    assert set(parent.data.metrics) == {"val_miou", "kept_fraction", "kept"}
    assert [m.step for m in client.get_metric_history(run_id, "val_miou")] == [0, 1, 2]
    # 2. A description that says what the run made and shipped, and where it came from.
    tags = parent.data.tags
    assert "5 classes (ball, box, ring, cone, cross)" in tags[DESCRIPTION_TAG]
    assert "**Shipped" in tags[DESCRIPTION_TAG] and "report/index.html" in tags[DESCRIPTION_TAG]
    assert (tags["mlflow.source.name"], tags["mlflow.source.type"]) == ("freemask run", "LOCAL")
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True)
    if head.returncode == 0:  # a checkout: the run names its commit
        assert tags["mlflow.source.git.commit"] == head.stdout.decode().strip()
    # 3. The config, the stages' table, the report, and the pictures as images.
    logged = {item.path for item in client.list_artifacts(run_id)}
    assert {"config.yaml", "stages.json", "report", "images"} <= logged
    table = json.loads(
        Path(client.download_artifacts(run_id, "stages.json", str(tmp_path))).read_text()
    )
    assert table["columns"] == ["stage", "made", "rejected", "seconds"]
    assert [row[0] for row in table["data"]] == STAGES
    report = {item.path for item in client.list_artifacts(run_id, "report")}
    assert {"report/index.html", "report/summary.json", "report/generate_samples.png"} <= report
    images = {
        item.path.split("/")[1].split("+timestamp")[0]
        for item in client.list_artifacts(run_id, "images")
    }
    expected = {"generate_samples+step+0", "iou_histogram+step+1", "iou_histogram+step+2"}
    assert expected | {"miou_per_round+step+0"} <= images
    # 4. Each round: its own description and pictures, a step each.
    for run in runs:
        if run.data.tags.get("freemask.round") in ("1", "2"):
            step = run.data.tags["freemask.round"]
            assert run.data.tags[DESCRIPTION_TAG].startswith(f"Round {step}: judged by")
            pictures = {i.path for i in client.list_artifacts(run.info.run_id, "images")}
            assert any(p.startswith(f"images/contact_sheet+step+{step}+") for p in pictures)


def test_label_quality_shows_where_samples_have_truth(tmp_path: Path) -> None:
    generate = LocalStorage(tmp_path / "work" / "generate")
    samples = [sample for sample, _ in write_dataset(generate, 6)]
    # Truth: the labels themselves (a perfect stage), so label mIoU is 1.
    truthful = [s.model_copy(update={"truth_mask": s.semantic_mask}) for s in samples]
    write_manifest(generate, truthful)
    written = write_run_report(LocalStorage(tmp_path / "work"), None, CLASSES)
    quality = written.summary["stages"]["generate"]["label_quality"]
    assert quality["miou"] == 1.0
    page = report_page("q", str(tmp_path / "work"), {}, written.summary, written.pictures, None)
    parts = PageParts()
    parts.feed(page)
    assert parts.sections == ["generate"]
    section = page[page.index('<section id="label-quality">') :]
    assert "<td>generate</td>" in section and "<td>traffic light</td>" in section
    # The sheet: a row for every class.
    tiles = [tile for tile in parts.tiles if tile["data-stage"] == "generate"]
    assert {tile["data-class"] for tile in tiles} == set(CLASSES)
