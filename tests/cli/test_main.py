"""The command line: exit codes, one-line errors, and each command's effect."""

import os
import subprocess
import sys
from pathlib import Path

import yaml
from helpers import CLASSES, write_dataset
from pycocotools.coco import COCO

from freemask.cli import main
from freemask.records import read_manifest
from freemask.stage_output import Shard, StageOutput
from freemask.storage import LocalStorage


def write_config(tmp_path: Path, **fields) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(
        yaml.safe_dump(
            {"name": "cli-test", "workdir": str(tmp_path / "work"), "classes": CLASSES, **fields}
        )
    )
    return path


def test_console_script_help_runs() -> None:
    done = subprocess.run(
        [Path(sys.executable).parent / "freemask", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0
    assert "export" in done.stdout and "run" in done.stdout


def test_config_validate_ok_and_bad(tmp_path: Path, capsys) -> None:
    assert main(["config", "validate", str(write_config(tmp_path))]) == 0
    assert "ok:" in capsys.readouterr().out
    bad = write_config(tmp_path, generate={"images_per_class": 0, "colour": "red"})
    assert main(["config", "validate", str(bad)]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2
    assert all(line.startswith(f"error: {bad}:") for line in errors)
    assert "Traceback" not in capsys.readouterr().err


def test_config_show_prints_resolved_values(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("FREEMASK__GENERATE__BATCH_SIZE", "3")
    assert main(["config", "show", str(write_config(tmp_path))]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["generate"]["batch_size"] == 3
    assert shown["active"]["max_rounds"] == 0  # the default: the pool ships


def test_unknown_command_and_missing_option_are_usage_errors(capsys) -> None:
    assert main(["nonsense"]) == 2
    assert main(["export", "--in", "x"]) == 2


def test_export_command_writes_a_coco_dataset(tmp_path: Path, capsys) -> None:
    source = LocalStorage(tmp_path / "data")
    write_dataset(source, 3)
    config = write_config(tmp_path)
    out = tmp_path / "coco"
    assert (
        main(
            ["export", "-c", str(config), "--in", source.uri, "--out", str(out), "--format", "coco"]
        )
        == 0
    )
    assert len(COCO(str(out / "annotations" / "instances.json")).getImgIds()) == 3


def test_export_of_a_missing_manifest_is_a_bad_input_error(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path)
    assert (
        main(
            [
                "export",
                "-c",
                str(config),
                "--in",
                str(tmp_path / "none"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "unfinished (no _SUCCESS)" in capsys.readouterr().err


def test_manifest_validate_and_join(tmp_path: Path, capsys) -> None:
    storage = LocalStorage(tmp_path / "data")
    write_dataset(storage, 2)
    assert main(["manifest", "validate", "--in", storage.uri]) == 0
    storage.delete(read_manifest(storage)[0].image)
    assert main(["manifest", "validate", "--in", storage.uri]) == 2
    assert "does not exist" in capsys.readouterr().err

    sharded = LocalStorage(tmp_path / "sharded")
    for index in range(2):
        StageOutput(sharded, "generate", Shard(index, 2)).finish()
    assert main(["join", "--in", sharded.uri, "--stage", "generate", "--shards", "2"]) == 0
    assert sharded.exists("_SUCCESS")


def test_set_overrides_apply_to_one_command_only(tmp_path: Path, capsys) -> None:
    config = str(write_config(tmp_path))
    assert main(["--set", "generate.batch_size=7", "config", "show", config]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["generate"]["batch_size"] == 7
    assert "FREEMASK__GENERATE__BATCH_SIZE" not in os.environ
    assert main(["config", "show", config]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["generate"]["batch_size"] == 4
    assert main(["--set", "nonsense", "config", "show", config]) == 2
