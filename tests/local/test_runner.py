"""``freemask run``: every stage in one process, exports and report, and resuming after a kill."""

import json
import tempfile
from pathlib import Path

import datasets
import yaml
from helpers import CLASSES
from mlflow import MlflowClient
from pycocotools.coco import COCO

import freemask.local.runner
from freemask.cli import main
from freemask.local.runner import PIPELINE
from freemask.records import read_manifest
from freemask.storage import LocalStorage

REPO = Path(__file__).resolve().parents[2]


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def local_runs(work: Path, experiment: str) -> list:
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    return client.search_runs([experiment_id], filter_string="tags.`freemask.runner` = 'local'")


def rounds_of(work: Path, run) -> set[str]:
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    return {c.data.tags["freemask.round"] for c in children if "freemask.round" in c.data.tags}


def stage_rows(work: Path, run) -> dict[str, dict]:
    """The parent run's table of stage counts (``stages.json``), by stage."""
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(client.download_artifacts(run.info.run_id, "stages.json", folder))
        table = json.loads(path.read_text())
    return {row[0]: dict(zip(table["columns"], row, strict=True)) for row in table["data"]}


def test_run_goes_through_every_stage_under_one_parent_run(tmp_path: Path, capsys) -> None:
    # Random weights draw meaningless attention: the plausibility checks would reject it all.
    tiny = {
        "model_id": "builtin:tiny-sd",
        "images_per_class": 1,
        "height": 64,
        "width": 64,
        "reject_implausible": False,
    }
    config = write_config(
        tmp_path / "run.yaml",
        {
            "name": "cli-test",
            "workdir": str(tmp_path / "work"),
            "classes": CLASSES,
            "generate": {**tiny, "num_inference_steps": 2},
            "compose": {"images": 4, "backgrounds_per_scene": 1},
            "segment": {"model_id": "builtin:tiny-mask2former", "image_size": 64, "train_steps": 2},
            "active": {"max_rounds": 1, "keep_rule": "percentile"},
        },
    )
    assert main(["run", "-c", str(config)]) == 0
    printed = capsys.readouterr().out
    work = tmp_path / "work"
    assert yaml.safe_load((work / "config.yaml").read_text())["classes"] == CLASSES
    (run,) = local_runs(work, "freemask")
    assert run.data.params["generate.images_per_class"] == "1"
    assert run.info.status == "FINISHED"
    # Stage counts are one table (counted from the outputs), not metrics.
    stages = stage_rows(work, run)
    assert stages["generate"]["made"] + stages["generate"]["rejected"] == 3
    assert len(read_manifest(LocalStorage(work / "generate"))) == stages["generate"]["made"]
    assert list(stages) == [stage for stage, _, _ in PIPELINE]
    assert rounds_of(work, run) == {"0", "1"}
    assert "active-learning rounds" in printed
    # The final dataset's records point at files that are there (soft masks included).
    assert main(["manifest", "validate", "--in", str(work / "active"), "-c", str(config)]) == 0


def test_a_run_with_the_default_rounds_ships_the_pool(tmp_path: Path, capsys) -> None:
    """active.max_rounds 0, the default: round 0 trains on the pool, nothing is filtered, and
    the pool is what the run exports and reports."""
    tiny = {"model_id": "builtin:tiny-sd", "images_per_class": 1, "height": 64, "width": 64}
    config = write_config(
        tmp_path / "run.yaml",
        {
            "name": "pool-test",
            "workdir": str(tmp_path / "work"),
            "classes": CLASSES,
            "generate": {**tiny, "num_inference_steps": 2, "reject_implausible": False},
            "compose": {"images": 4, "backgrounds_per_scene": 1},
            "segment": {"model_id": "builtin:tiny-mask2former", "image_size": 64, "train_steps": 2},
        },
    )
    assert main(["run", "-c", str(config)]) == 0
    printed = capsys.readouterr().out
    work = tmp_path / "work"
    (run,) = local_runs(work, "freemask")
    assert run.info.status == "FINISHED"
    assert rounds_of(work, run) == {"0"}
    assert not (work / "active" / "rounds" / "01").exists()
    pool = {s.id for s in read_manifest(LocalStorage(work / "harmonize"))}
    assert {s.id for s in read_manifest(LocalStorage(work / "active"))} == pool
    coco = COCO(str(work / "export/coco/annotations/instances.json"))
    assert len(coco.getImgIds()) == len(pool)
    assert "the unfiltered pool (round 0)" in printed
    assert "stopped: active.max_rounds is 0" in printed
    summary = json.loads((work / "report" / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [0]


def test_demo_run_exports_reports_and_resumes_after_a_kill(tmp_path: Path, monkeypatch) -> None:
    # The shipped demo config with small counts: the toy model draws, every stage runs.
    config = yaml.safe_load((REPO / "configs/demo.yaml").read_text())
    work = tmp_path / "work"
    config["workdir"] = str(work)
    config["relate"]["thesaurus"] = str(REPO / "configs" / config["relate"]["thesaurus"])
    config["generate"].update(images_per_class=3, num_inference_steps=8)
    config["compose"].update(images=12, backgrounds_per_scene=1)
    # Validation: rendered scenes with exact labels, as the demo's own (see the Makefile).
    validation = tmp_path / "validation"
    assert (
        main(
            [
                "toyworld",
                "scenes",
                "-c",
                str(REPO / "configs/demo.yaml"),
                "--out",
                str(validation),
                "--count",
                "6",
                "--seed",
                "7",
            ]
        )
        == 0
    )
    config["segment"].update(train_steps=4, checkpoint_every=2, validation=str(validation))
    # Round 1 is judged by the demo's independent labeller (no round 0); the threshold 0
    # keeps every sample (ties included), so round 2 runs too.
    config["active"].update(
        max_rounds=2, min_miou_gain=0.0, keep_rule="percentile", iou_threshold=0.0
    )
    path = write_config(tmp_path / "demo.yaml", config)

    # 1. A run killed in the middle (harmonize fails after compose has finished).
    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    stages = [(name, killed if name == "harmonize" else fn, src) for name, fn, src in PIPELINE]
    monkeypatch.setattr(freemask.local.runner, "PIPELINE", stages)
    assert main(["run", "-c", str(path)]) == 130  # Ctrl-C: "interrupted"
    composed = read_manifest(LocalStorage(work / "compose"))
    assert len(composed) == 12
    assert not (work / "harmonize" / "_SUCCESS").exists()

    # 2. The same command again continues the same parent run and redoes nothing finished.
    monkeypatch.setattr(freemask.local.runner, "PIPELINE", PIPELINE)
    assert main(["run", "-c", str(path)]) == 0
    (run,) = local_runs(work, "freemask-demo")
    assert run.info.status == "FINISHED"
    # Stage counts say what the outputs hold, the resumed stages' too; each round's mIoU is
    # logged once, a step per round.
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    stages = stage_rows(work, run)
    assert stages["compose"]["made"] == 12
    generated = read_manifest(LocalStorage(work / "generate"))
    assert stages["generate"]["made"] == len(generated)
    history = client.get_metric_history(run.info.run_id, "val_miou")
    assert [m.step for m in history] == [0, 1, 2]  # 0: the unfiltered pool
    assert read_manifest(LocalStorage(work / "compose")) == composed
    assert rounds_of(work, run) == {"0", "1", "2"}

    # 3. The final dataset, exported, and the report folder.
    final = read_manifest(LocalStorage(work / "active"))
    assert final
    coco = COCO(str(work / "export/coco/annotations/instances.json"))
    assert len(coco.getImgIds()) == len(final)
    objects = coco.loadAnns(coco.getAnnIds(iscrowd=False))
    assert objects and all(isinstance(a["segmentation"], list) for a in objects)  # polygons
    assert all(coco.annToMask(a).sum() == a["area"] for a in coco.loadAnns(coco.getAnnIds()))
    voc = work / "export/voc/VOCdevkit/VOC2012/ImageSets/Segmentation/trainval.txt"
    assert len(voc.read_text().split()) == len(final)
    hf = datasets.load_dataset(str(work / "export/hf"), cache_dir=str(tmp_path / "hf-cache"))
    assert sum(split.num_rows for split in hf.values()) == len(final)
    report = work / "report"
    expected = {
        "generate_samples.png",
        "compose_samples.png",
        "refine_samples.png",
        "harmonize_samples.png",
        "active_samples.png",
        "round_01_iou_histogram.png",
        "round_02_iou_histogram.png",
        "miou_per_round.png",
        "summary.json",
        "index.html",
    }
    assert expected <= {file.name for file in report.iterdir()}
    page = (report / "index.html").read_text()
    assert page.count('src="data:image/png;base64,') == 3  # the mIoU curve, two histograms
    assert page.count('<section class="stage"') == len(PIPELINE)
    summary = yaml.safe_load((report / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [0, 1, 2]
    assert summary["stages"]["compose"]["samples"] == 12
    assert summary["stages"]["compose"]["instances_per_sample"] >= 1.5
