"""``freemask run --refresh``: each refresh a new dataset version with its own draws, LATEST on
the newest complete one whatever kills a refresh, retention, and the refreshes side by side in
one MLflow experiment."""

import json
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

import freemask.local.runner
from freemask.cli import main
from freemask.local.runner import PIPELINE
from freemask.records import read_manifest
from freemask.storage import LocalStorage
from freemask.versions import LATEST, read_latest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def validation(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("validation")
    demo = str(REPO / "configs/demo.yaml")
    argv = ["toyworld", "scenes", "-c", demo, "--out", str(folder), "--count", "4", "--seed", "7"]
    assert main(argv) == 0
    return folder


def small_demo(tmp_path: Path, validation: Path, keep: int) -> Path:
    """The demo config, as small as a run goes: one object per class, one round."""
    config = yaml.safe_load((REPO / "configs/demo.yaml").read_text())
    config["workdir"] = str(tmp_path / "work")
    config["relate"]["thesaurus"] = str(REPO / "configs" / config["relate"]["thesaurus"])
    # Four steps draw poor objects: no class check, so that every drawn object is kept.
    config["generate"].update(images_per_class=1, num_inference_steps=4, class_check="none")
    config["compose"].update(images=4, backgrounds_per_scene=1)
    config["segment"].update(train_steps=2, checkpoint_every=2, validation=str(validation))
    config["active"].update(max_rounds=1, keep_rule="percentile", iou_threshold=0.0)
    config["versions"] = {"keep": keep}
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def sample_ids(version: Path) -> set[str]:
    return {sample.id for sample in read_manifest(LocalStorage(version / "generate"))}


def test_refreshes_draw_new_samples_keep_the_newest_and_compare_side_by_side(
    tmp_path, validation, capsys, monkeypatch
) -> None:
    config = small_demo(tmp_path, validation, keep=2)
    work = tmp_path / "work"
    for refresh in range(3):
        if refresh == 2:  # the third refresh changes one setting, and says so
            settings = yaml.safe_load(config.read_text())
            settings["generate"]["guidance_scale"] = 5.0
            config.write_text(yaml.safe_dump(settings))
        assert main(["run", "-c", str(config), "--refresh"]) == 0
    versions = work / "versions"
    assert read_latest(LocalStorage(work))["version"] == "refresh-0003"
    # Retention: the newest two complete versions stay; the first is gone whole.
    holding = [
        path.name for path in versions.iterdir() if any(p.is_file() for p in path.rglob("*"))
    ]
    assert sorted(holding) == [
        "refresh-0002",
        "refresh-0003",
    ]
    assert sample_ids(versions / "refresh-0002").isdisjoint(sample_ids(versions / "refresh-0003"))
    assert (versions / "refresh-0003/export/coco/annotations/instances.json").is_file()
    # `freemask export` reads what LATEST names unless told otherwise.
    exported = tmp_path / "latest-coco"
    assert main(["export", "-c", str(config), "--out", str(exported)]) == 0
    coco = json.loads((exported / "annotations/instances.json").read_text())
    shipped = versions / "refresh-0003/export/coco/annotations/instances.json"
    assert coco["images"] == json.loads(shipped.read_text())["images"]
    # Each refresh's summary: what it drew, kept and cost, and what changed since the last.
    summary = json.loads((versions / "refresh-0003/refresh.json").read_text())
    assert summary["previous"] == "refresh-0002"
    assert summary["drawn"] == 5 and summary["kept"] > 0 and summary["seconds"]["generate"] > 0
    assert summary["changed"] == ["generate.guidance_scale: 4.0 -> 5.0"]
    # One experiment in the project's store: a parent run per refresh, by version.
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("freemask-demo").experiment_id
    parents = client.search_runs([experiment], filter_string="tags.`freemask.runner` = 'local'")
    assert sorted(run.data.tags["freemask.dataset_version"] for run in parents) == [
        "refresh-0001",
        "refresh-0002",
        "refresh-0003",
    ]
    # The registered segmenter's `current` alias follows LATEST: refresh-0003's best round.
    latest_model = client.get_model_version_by_alias("demo-segmenter", "current")
    assert client.get_run(latest_model.run_id).data.tags["mlflow.parentRunId"] in {
        run.info.run_id
        for run in parents
        if run.data.tags["freemask.dataset_version"] == "refresh-0003"
    }
    for run in parents:  # the summary's headline numbers, charted across refreshes
        assert run.data.metrics["refresh.drawn"] == 5
        assert not any(key.startswith("refresh.seconds") for key in run.data.metrics)
        # ... and the whole summary (what was dropped, each stage's seconds) beside them.
        logged = {item.path for item in client.list_artifacts(run.info.run_id)}
        assert "refresh.json" in logged
    # The console reads COLUMNS at each print; setting its width would pin it for later tests.
    monkeypatch.setenv("COLUMNS", "200")
    capsys.readouterr()
    uri = f"sqlite:///{work / 'mlflow.db'}"
    assert main(["compare", "--experiment", "freemask-demo", "--tracking-uri", uri]) == 0
    shown = capsys.readouterr().out
    assert all(f"refresh-000{n}" in shown for n in (1, 2, 3))


def test_a_version_drawn_again_is_the_same_byte_for_byte(tmp_path, validation) -> None:
    config = small_demo(tmp_path, validation, keep=5)
    assert main(["run", "-c", str(config), "--refresh"]) == 0
    first = tmp_path / "work/versions/refresh-0001/generate"
    settings = yaml.safe_load(config.read_text())
    settings.update(workdir=str(tmp_path / "again"), draw="refresh-0001")
    config.write_text(yaml.safe_dump(settings))
    assert main(["run", "-c", str(config)]) == 0
    # Every image and mask of every stage, the exports' too (pictures of the run aside).
    again = tmp_path / "again"
    first = first.parent
    names = sorted(
        p.relative_to(first).as_posix()
        for p in first.rglob("*.png")
        if not p.relative_to(first).as_posix().startswith(("report/", "mlartifacts/"))
    )
    assert len(names) > 50
    assert names == sorted(
        p.relative_to(again).as_posix()
        for p in again.rglob("*.png")
        if not p.relative_to(again).as_posix().startswith(("report/", "mlartifacts/"))
    )
    assert all((first / name).read_bytes() == (again / name).read_bytes() for name in names)


# Where a refresh can die: a stage in the middle, the publish marker, the LATEST update, and
# retention half way through deleting the version before.
KILL_POINTS = ["harmonize", "_PUBLISHED", LATEST, "delete"]


def test_a_refresh_killed_anywhere_leaves_latest_on_a_whole_version(
    tmp_path, validation, monkeypatch
) -> None:
    config = small_demo(tmp_path, validation, keep=1)
    work = tmp_path / "work"
    assert main(["run", "-c", str(config), "--refresh"]) == 0
    first = work / "versions/refresh-0001"
    exports = sorted(p.relative_to(first) for p in (first / "export").rglob("*") if p.is_file())

    def die(*args, **kwargs):
        raise KeyboardInterrupt

    for point in KILL_POINTS:
        with monkeypatch.context() as patch:
            if point == "harmonize":
                stages = [(n, die if n == "harmonize" else f, s) for n, f, s in PIPELINE]
                patch.setattr(freemask.local.runner, "PIPELINE", stages)
            elif point == "delete":
                deletes = iter(range(10**6))
                real_delete = LocalStorage.delete

                def delete_then_die(self, path, real=real_delete, count=deletes):
                    if next(count) == 3:  # the marker and two files gone, then killed
                        raise KeyboardInterrupt
                    real(self, path)

                patch.setattr(LocalStorage, "delete", delete_then_die)
            else:
                real_write = LocalStorage.write_bytes

                def write_then_die(self, path, data, *, real=real_write, name=point, **kw):
                    if path == name:
                        raise KeyboardInterrupt
                    real(self, path, data, **kw)

                patch.setattr(LocalStorage, "write_bytes", write_then_die)
            assert main(["run", "-c", str(config), "--refresh"]) == 130, point
        latest = read_latest(LocalStorage(work))["version"]
        whole = work / "versions" / latest
        assert (whole / "_PUBLISHED").is_file(), point
        assert latest == "refresh-0001" or point == "delete", point
        if latest == "refresh-0001":
            assert all((first / path).is_file() for path in exports), point
    # The refresh killed in retention published and moved LATEST; the same command finishes
    # that refresh (the delete too) rather than drawing another; the one after draws anew.
    assert read_latest(LocalStorage(work))["version"] == "refresh-0002"
    assert main(["run", "-c", str(config), "--refresh"]) == 0
    assert read_latest(LocalStorage(work))["version"] == "refresh-0002"
    assert not [p for p in first.rglob("*") if p.is_file()]
    assert not (work / "versions/refresh-0003").exists()
    assert main(["run", "-c", str(config), "--refresh"]) == 0
    assert read_latest(LocalStorage(work))["version"] == "refresh-0003"
    marker = json.loads((work / "versions/refresh-0003/_PUBLISHED").read_text())
    assert marker["published_at"]


def test_a_growing_dataset_carries_what_the_last_version_kept(tmp_path, validation) -> None:
    config = small_demo(tmp_path, validation, keep=5)
    settings = yaml.safe_load(config.read_text())
    settings["versions"]["mode"] = "grow"
    settings["active"].update(keep_rule="any_class", iou_threshold=0.0)  # the loop keeps all
    config.write_text(yaml.safe_dump(settings))
    for _ in range(2):
        assert main(["run", "-c", str(config), "--refresh"]) == 0
    versions = tmp_path / "work/versions"
    first = read_manifest(LocalStorage(versions / "refresh-0001/active"))
    second = read_manifest(LocalStorage(versions / "refresh-0002/active"))
    drawn = {s.id for s in read_manifest(LocalStorage(versions / "refresh-0002/harmonize"))}
    assert first and {s.id for s in second} == {s.id for s in first} | drawn
    by_id = {sample.id: sample for sample in second}
    for sample in first:  # carried, with where it came from and who kept it
        carried = by_id[sample.id]
        assert carried.drawn_in == "refresh-0001"
        assert carried.kept_in == ["refresh-0001", "refresh-0002"]
        assert (versions / "refresh-0002/active" / carried.image).is_file()
    assert {by_id[i].drawn_in for i in drawn} == {"refresh-0002"}
    # The first version's segmenter came along and was weighed as round 1's judge.
    active = versions / "refresh-0002/active"
    assert (active / "carried_judge/model.safetensors").is_file()
    choice = json.loads((active / "judge.json").read_text())
    assert set(choice["validation_miou"]) == {"first", "carried"}
    judge = json.loads((active / "rounds/01/summary.json").read_text())["judge"]
    assert ("version refresh-0001" in judge) == (choice["chosen"] == "carried"), judge
    assert read_latest(LocalStorage(tmp_path / "work"))["version"] == "refresh-0002"
