"""Config loading: valid files resolve, every kind of mistake gives one clear line."""

import hashlib
import json
from pathlib import Path

import pytest

from freemask.config import ADDED_SETTINGS, RunConfig, config_hash, load_config, recorded_values
from freemask.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def problems(path: Path, environ: dict | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=environ or {})
    return str(caught.value).splitlines()


@pytest.mark.parametrize("name", ["demo.yaml", "default.yaml"])
def test_shipped_configs_are_valid(name: str) -> None:
    config = load_config(REPO / "configs" / name, environ={})
    assert config.classes
    assert config.generate.images_per_class >= 1


def test_defaults_fill_unset_sections(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "classes: [cat, dog]\n"), environ={})
    assert config.classes == ["cat", "dog"]
    assert config.active.max_rounds == RunConfig.model_fields["active"].default_factory().max_rounds


def test_wrong_type_names_file_line_field_value_and_expectation(tmp_path: Path) -> None:
    path = write(tmp_path, "classes: [cat]\ngenerate:\n  batch_size: four\n")
    assert problems(path) == [
        f"{path}:3: generate.batch_size: got 'four'; expected a valid integer"
    ]


def test_unknown_key_lists_the_allowed_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "classes: [cat]\nactive:\n  maximum: 3\n")
    (line,) = problems(path)
    assert line.startswith(f"{path}:3: active.maximum: unknown key; expected one of: ")
    assert "max_rounds" in line and "iou_threshold" in line


def test_a_misspelt_key_names_the_key_it_resembles(tmp_path: Path) -> None:
    path = write(tmp_path, "classes: [cat]\nactive:\n  max_round: 3\n")
    (line,) = problems(path)
    assert line.startswith(
        f"{path}:3: active.max_round: unknown key; did you mean 'max_rounds'? (expected one of: "
    )
    assert "iou_threshold" in line


def test_out_of_range_number(tmp_path: Path) -> None:
    path = write(tmp_path, "classes: [cat]\nactive:\n  iou_threshold: 1.5\n")
    assert problems(path) == [f"{path}:3: active.iou_threshold: got 1.5; expected a value <= 1"]


def test_missing_file() -> None:
    assert problems(Path("/nonexistent/run.yaml")) == [
        "/nonexistent/run.yaml: config file not found"
    ]


def test_missing_required_field(tmp_path: Path) -> None:
    path = write(tmp_path, "name: demo\n")
    assert problems(path) == [f"{path}: classes: missing; this field is required"]


def test_every_problem_is_reported_one_per_line(tmp_path: Path) -> None:
    path = write(tmp_path, "classes: [cat]\ngenerate:\n  height: 100\n  scheduler: magic\n")
    lines = problems(path)
    assert len(lines) == 2
    assert lines[0].startswith(f"{path}:3: generate.height: got 100; expected a multiple of 8")
    assert lines[1].startswith(f"{path}:4: generate.scheduler: got 'magic'; expected ")


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "classes: [cat\nseed: 1\n")
    (line,) = problems(path)
    assert line.startswith(f"{path}:") and "not valid YAML" in line


def test_cross_field_rule_is_explained(tmp_path: Path) -> None:
    path = write(tmp_path, "classes: [cat, cat]\n")
    assert problems(path) == [f"{path}:1: classes: each class must be listed once; repeated: cat"]


def test_environment_overrides_and_is_named_in_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "classes: [cat]\n")
    config = load_config(
        path, environ={"FREEMASK__GENERATE__IMAGES_PER_CLASS": "7", "FREEMASK__SEED": "3"}
    )
    assert config.generate.images_per_class == 7
    assert config.seed == 3
    assert problems(path, {"FREEMASK__ACTIVE__MAX_ROUNDS": "-1"}) == [
        "environment FREEMASK__ACTIVE__MAX_ROUNDS: active.max_rounds: got -1; expected a value >= 0"
    ]


def test_config_hash_is_stable_and_sensitive(tmp_path: Path) -> None:
    base = load_config(write(tmp_path, "classes: [cat]\n"), environ={})
    same = load_config(write(tmp_path, "classes: [cat]\nseed: 0\n"), environ={})
    other = load_config(
        write(tmp_path, "classes: [cat]\ngenerate:\n  guidance_scale: 5\n"), environ={}
    )
    assert config_hash(base.generate) == config_hash(same.generate)
    assert config_hash(base.generate) != config_hash(other.generate)


def test_settings_added_later_keep_the_hash_of_outputs_made_before_them() -> None:
    for model, added in ADDED_SETTINGS.items():
        legacy = model.model_validate(added)  # each old behaviour is a valid value
        # The release before these fields hashed the section without them.
        before = legacy.model_dump(mode="json", exclude=set(added))
        canonical = json.dumps(before, sort_keys=True, separators=(",", ":"))
        assert config_hash(legacy) == hashlib.sha256(canonical.encode()).hexdigest()[:12]
        assert recorded_values(legacy) == before


def test_an_added_setting_at_a_new_value_is_hashed_and_recorded() -> None:
    compose = RunConfig(classes=["cat"]).compose
    assert "paste_extent" not in recorded_values(compose)
    whole = compose.model_copy(update={"paste_extent": "truth"})
    assert recorded_values(whole)["paste_extent"] == "truth"
    assert config_hash(whole) != config_hash(compose)
    refine = RunConfig(classes=["cat"]).refine  # the default core is not the old behaviour
    assert recorded_values(refine)["grabcut_core_erosion"] == refine.grabcut_core_erosion
    no_core = refine.model_copy(update={"grabcut_core_erosion": None})
    assert "grabcut_core_erosion" not in recorded_values(no_core)
    assert config_hash(no_core) != config_hash(refine)


def test_relative_input_paths_resolve_beside_the_config_file(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "thesaurus.yaml").write_text("{}\n")
    path = folder / "run.yaml"
    path.write_text("classes: [a]\nrelate: {thesaurus: thesaurus.yaml}\nworkdir: runs/x\n")
    monkeypatch.chdir(tmp_path)  # somewhere else
    config = load_config(path, environ={})
    assert config.relate.thesaurus == str(folder / "thesaurus.yaml")
    assert config.workdir == "runs/x"  # outputs stay relative to the working directory
    path.write_text("classes: [a]\nsegment: {model_id: org/name}\n")
    assert load_config(path, environ={}).segment.model_id == "org/name"  # a hub id


def test_a_dataset_version_is_its_own_draw_unless_one_is_pinned(tmp_path, monkeypatch) -> None:
    """A pipeline task's config: the run id as ``kubeflow.dataset_version`` gives the version's
    own folder and draw, so each run plans other samples; a pinned ``draw`` redraws a version."""
    from freemask.cli.options import load_run_config
    from freemask.generate.stage import plan_samples

    path = write(tmp_path, f"workdir: {tmp_path}/work\nclasses: [cat]\nseed: 3\n")
    monkeypatch.delenv("FREEMASK__KUBEFLOW__DATASET_VERSION", raising=False)
    plain = load_run_config(path)
    configs = {}
    for version in ("run-a", "run-b"):
        monkeypatch.setenv("FREEMASK__KUBEFLOW__DATASET_VERSION", version)
        configs[version] = load_run_config(path)
    assert plain.draw == "" and plain.draw_seed == 3
    assert configs["run-a"].draw == "run-a"
    assert configs["run-a"].workdir == f"{tmp_path}/work/versions/run-a"
    ids = {version: {s.id for s in plan_samples(c)} for version, c in configs.items()}
    assert ids["run-a"].isdisjoint(ids["run-b"])
    monkeypatch.setenv("FREEMASK__DRAW", "run-a")
    monkeypatch.setenv("FREEMASK__KUBEFLOW__DATASET_VERSION", "run-c")
    assert {s.id for s in plan_samples(load_run_config(path))} == ids["run-a"]
