"""The active loop's prefix keeps the settings its rounds were made with: a start with other
settings is refused with the changed fields named, never resumed under a mixed configuration."""

from __future__ import annotations

import pytest
from helpers import write_shapes_set

from freemask.active import run_active
from freemask.active.settings import guard_settings
from freemask.cli import main
from freemask.errors import FreemaskError
from freemask.storage import LocalStorage


@pytest.fixture
def finished(tmp_path, config_for):
    """A finished one-round loop under ``tmp_path/active`` and its config."""
    write_shapes_set(tmp_path / "pool", 8)
    config = config_for(active={"max_rounds": 1, "iou_threshold": 0.0})
    run_active(config, str(tmp_path / "pool"), str(tmp_path / "active"))
    return config


def files_under(root) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize(
    ("section", "field", "value"),
    [
        ("active", "keep_rule", "percentile"),
        ("active", "iou_threshold", 0.25),
        ("active", "max_rounds", 2),
        ("segment", "train_steps", 4),
    ],
)
def test_a_changed_setting_on_a_finished_loop_is_refused_by_name(
    finished, tmp_path, section, field, value
) -> None:
    before = files_under(tmp_path / "active")
    part = getattr(finished, section).model_copy(update={field: value})
    changed = finished.model_copy(update={section: part})
    with pytest.raises(FreemaskError, match=rf"{section}\.{field} .* -> ") as caught:
        run_active(changed, str(tmp_path / "pool"), str(tmp_path / "active"))
    assert "--refresh" in str(caught.value)
    assert files_under(tmp_path / "active") == before


def test_how_the_loop_runs_may_change(finished, tmp_path) -> None:
    segment = finished.segment.model_copy(update={"predict_batch_size": 7, "device": "cpu"})
    guard_settings(
        finished.model_copy(update={"segment": segment}), LocalStorage(tmp_path / "active")
    )


def test_the_round_steps_refuse_changed_settings_too(finished, tmp_path, capsys) -> None:
    import yaml

    data = finished.model_dump(mode="json")
    data["active"]["keep_rule"] = "mean_over_classes"
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(data))
    code = main(["round", "filter", "--config", str(tmp_path / "run.yaml"), "--round", "1"])
    output = capsys.readouterr()
    assert code == 2
    assert "active.keep_rule 'any_class' -> 'mean_over_classes'" in output.out + output.err
