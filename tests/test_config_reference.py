"""docs/configuration.md is rendered from the config models: every field has a description, the
committed page is the generator's output, and each row shows the field's type, default, bounds
and description."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from freemask.cli import main
from freemask.config import KubeflowConfig, RunConfig, StrictModel
from freemask.config_reference import COMMAND, render_reference, undocumented_fields

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def row(text: str, section: str, field: str) -> str:
    """The table row of ``field`` under the heading ``section``."""
    body = text.split(f"\n{section}\n", 1)[1].split("\n## ", 1)[0]
    return next(line for line in body.splitlines() if line.startswith(f"| `{field}` |"))


def test_every_config_field_has_a_description() -> None:
    missing = undocumented_fields()
    assert missing == [], f"config fields without a description (Field(description=...)): {missing}"


def test_a_field_without_a_description_is_named_by_its_dotted_path() -> None:
    class Item(StrictModel):
        bare: int = 1

    class Section(StrictModel):
        documented: int = Field(1, description="Has one.")
        items: list[Item] = Field(default_factory=list, description="Items.")
        blank: str = Field("", description="  ")

    class Run(StrictModel):
        section: Section = Field(default_factory=Section, description="A section.")

    assert undocumented_fields(Run) == ["section.items.bare", "section.blank"]


def test_docs_configuration_is_the_generated_reference() -> None:
    committed = REFERENCE.read_text(encoding="utf-8") if REFERENCE.is_file() else ""
    assert committed == render_reference(), (
        f"docs/configuration.md differs from the config models in freemask/config.py; "
        f"regenerate it: {COMMAND}"
    )


def test_a_row_shows_type_default_bounds_and_description() -> None:
    text = render_reference()
    images = row(text, "## `generate`", "images_per_class")
    assert images.startswith("| `images_per_class` | int | `100` | strict; >= 1; <= 1000000 | ")
    assert "per class" in images
    height = row(text, "## `generate`", "height")
    assert "multiple of 8" in height and "<= 4096" in height
    assert "| `classes` | list of str | required |" in row(text, "## Top level", "classes")
    assert "one of `any_class`, `mean_over_classes`, `percentile`" in row(
        text, "## `active`", "keep_rule"
    )
    assert "`auto`, `cpu`, `cuda` or `cuda:N`" in row(text, "## `segment`", "device")
    window = row(text, "## `generate`", "timestep_window")
    assert "| (float, float) | `[0.0, 1.0]` | each item >= 0.0, <= 1.0 |" in window
    assert "| str or null | `null` | matches `^https?://" in row(text, "## `tracking`", "ui_url")


def test_every_kubeflow_field_and_its_items_are_listed() -> None:
    text = render_reference()
    for name in KubeflowConfig.model_fields:
        assert row(text, "## `kubeflow`", name)
    assert len(KubeflowConfig.model_fields) == 19
    assert "required" in row(text, "### Items of `kubeflow.gpu_tolerations`", "key")
    assert row(text, "### Items of `kubeflow.secrets`", "env")


def test_every_section_has_a_heading_and_a_link() -> None:
    text = render_reference()
    sections = [name for name, field in RunConfig.model_fields.items() if field.default_factory]
    assert "kubeflow" in sections and "versions" in sections
    for name in sections:
        assert f"\n## `{name}`\n" in text
        assert f"| [`{name}`](#{name}) |" in text


def test_config_reference_command_prints_or_writes_the_reference(tmp_path, capsys) -> None:
    assert main(["config", "reference"]) == 0
    assert capsys.readouterr().out == render_reference()
    target = tmp_path / "configuration.md"
    assert main(["config", "reference", "--out", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == render_reference()
    assert main(["config", "reference", "--out", str(tmp_path / "missing" / "x.md")]) == 2
    assert "cannot write the reference" in capsys.readouterr().err
