"""``freemask toyworld scenes``: labelled scene sets with the run's class ids, resumable."""

from pathlib import Path

import numpy as np
import yaml

from freemask.cli import main
from freemask.records import read_manifest
from freemask.storage import LocalStorage, read_image
from freemask.toyworld import dataset


def write_config(tmp_path: Path, classes: list[str]) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"name": "toy", "workdir": str(tmp_path), "classes": classes}))
    return str(path)


def test_scenes_use_the_run_class_ids_and_resume(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path, ["cross", "ball"])
    out = str(tmp_path / "scenes")
    assert main(["toyworld", "scenes", "-c", config, "--out", out, "--count", "6"]) == 0
    storage = LocalStorage(out)
    samples = read_manifest(storage)
    assert len(samples) == 6
    for sample in samples:
        labels = read_image(storage, sample.semantic_mask)
        assert set(np.unique(labels)) <= {0, 1, 2}
        for instance in sample.instances:
            expected = {"cross": 1, "ball": 2}[instance.class_name]
            assert instance.class_id == expected
            assert (labels[instance.mask()] == expected).all()
    assert main(["toyworld", "scenes", "-c", config, "--out", out, "--count", "8"]) == 0
    assert "2 written, 6 already done" in capsys.readouterr().out
    assert [s.id for s in read_manifest(storage)][:6] == [s.id for s in samples]


def test_scenes_refuse_classes_outside_the_toy_world_and_bad_counts(tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "scenes")
    assert (
        main(["toyworld", "scenes", "-c", write_config(tmp_path, ["ball", "cat"]), "--out", out])
        == 2
    )
    assert "['cat'] are not toy-world objects" in capsys.readouterr().err
    config = write_config(tmp_path, ["ball"])
    assert main(["toyworld", "scenes", "-c", config, "--out", out, "--objects", "3,1"]) == 2
    assert "expected 1 <= low <= high" in capsys.readouterr().err


def test_scenes_follow_the_run_relation_table(tmp_path: Path) -> None:
    table = tmp_path / "table.yaml"
    table.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "scenes": {"sky": {}, "floor": {}},
                "classes": {
                    "cross": {"scenes": {"sky": 1}, "size": 0.3, "support": "air"},
                    "box": {"scenes": {"floor": 1}, "size": 0.3, "support": "ground"},
                },
            }
        )
    )
    path = tmp_path / "run.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "toy",
                "workdir": str(tmp_path),
                "classes": ["cross", "box"],
                "relate": {"thesaurus": "table.yaml"},  # beside the config
            }
        )
    )
    out = str(tmp_path / "scenes")
    assert main(["toyworld", "scenes", "-c", str(path), "--out", out, "--count", "8"]) == 0
    for sample in read_manifest(LocalStorage(out)):
        names = {instance.class_name for instance in sample.instances}
        assert names <= ({"cross"} if sample.scene == "sky" else {"box"}), sample.scene
    # --anywhere draws from every scene, the shifted domain too; bad domains are refused.
    anywhere = str(tmp_path / "anywhere")
    argv = ["toyworld", "scenes", "-c", str(path), "--out", anywhere, "--count", "4"]
    assert main([*argv, "--anywhere", "--domain", "shifted"]) == 0
    assert main([*argv, "--domain", "cartoon"]) == 2


def test_scenes_from_another_renderer_version_are_refused_not_resumed(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    config = write_config(tmp_path, ["ball"])
    out = str(tmp_path / "scenes")
    argv = ["toyworld", "scenes", "-c", config, "--out", out, "--count", "2"]
    assert main(argv) == 0
    before = read_manifest(LocalStorage(out))
    capsys.readouterr()
    monkeypatch.setattr(dataset, "VERSION", "next")
    assert main([*argv[:-1], "3"]) == 2
    assert f"{out}: holds toyworld scenes of renderer version(s) 2, now next" in (
        capsys.readouterr().err
    )
    assert read_manifest(LocalStorage(out)) == before
    fresh = str(tmp_path / "fresh")
    assert main([*argv[:5], fresh, "--count", "2"]) == 0
    samples = read_manifest(LocalStorage(fresh))
    assert {stamp.version for sample in samples for stamp in sample.source} == {"next"}
