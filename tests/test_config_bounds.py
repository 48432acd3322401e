"""Configs and thesauri load in bounded time and memory whatever they hold: YAML past the bounds
(size, nesting, nodes with aliases expanded) is refused in one line naming the file, class lists
validate in linear time up to the 65534 classes that 16-bit masks hold, and error lines stay
short."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import yaml

from freemask import bounded_yaml
from freemask.cli import main
from freemask.cli.main import MAX_ERROR_LINE, error_lines
from freemask.config import MAX_CLASSES, load_config
from freemask.config_errors import MAX_PROBLEMS
from freemask.errors import ConfigError
from freemask.relate import ThesaurusError, load_thesaurus


def bomb(nodes: int) -> tuple[str, str]:
    """(anchors whose last names ``nodes`` (a power of ten) list items once expanded, its alias)."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    level = 0
    while 10 ** (level + 1) < nodes:
        level += 1
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 10) + "]")
    return "\n".join(lines), f"*a{level}"


def indented(text: str) -> str:
    return "".join(f"  {line}\n" for line in text.splitlines())


def problems(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=environ or {})
    return str(caught.value).splitlines()


@pytest.mark.parametrize("where", ["unknown key", "classes", "environment"])
def test_an_alias_bomb_of_ten_million_nodes_is_refused_at_once(tmp_path: Path, where: str) -> None:
    anchors, top = bomb(10**7)
    path = tmp_path / "run.yaml"
    environ = {}
    if where == "unknown key":
        path.write_text(f"classes: [cat]\nbombs:\n{indented(anchors)}  last: {top}\n")
    elif where == "classes":
        path.write_text(f"bombs:\n{indented(anchors)}classes: {top}\n")
    else:
        path.write_text("classes: [cat]\n")
        flow = anchors.replace("\n", ", ")
        environ = {"FREEMASK__CLASSES": f"{{{flow}, last: {top}}}"}
    start = time.perf_counter()
    (line,) = problems(path, environ)
    assert time.perf_counter() - start < 10  # it finishes (the benchmark times it)
    source = "environment FREEMASK__CLASSES" if environ else str(path)
    assert line.startswith(f"{source}:")
    assert f"more than {bounded_yaml.MAX_NODES} YAML nodes once aliases are expanded" in line


def test_aliases_under_the_bound_load_as_safe_load_reads_them(tmp_path: Path) -> None:
    text = (
        "base: &base {height: 64, width: 64}\n"
        "generate:\n  <<: *base\n  height: 128\n"
        "names: &names [a, b]\nagain: *names\nwhen: 2024-01-02\nbig: 0x1f\n"
        "deep: {a: [1, {b: [null, true, 1.5, '2']}]}\n"
    )
    assert bounded_yaml.load(text, "t.yaml") == yaml.safe_load(text)
    anchors, top = bomb(10**5)
    text = f"{anchors}\nlast: {top}\n"
    assert bounded_yaml.load(text, "t.yaml") == yaml.safe_load(text)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("classes: &a [cat, *a]\n", "alias *a is inside the node it names"),
        ("classes: " + "[" * 100 + "]" * 100 + "\n", "nested more than 64 levels deep"),
        ("classes: " + "[" * 100_000 + "]" * 100_000 + "\n", "nest"),  # libyaml's own bound
        ("classes: [cat]\nseed: " + "1" * 5000 + "\n", "not a valid YAML value"),
        ("classes: [cat]\ndraw: 2024-13-01\n", "not a valid YAML value: month must be in 1..12"),
        ("classes: [cat]\n---\nclasses: [dog]\n", "found another document"),
    ],
)
def test_hostile_yaml_is_refused_in_one_line(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    (line,) = problems(path)
    assert line.startswith(str(path)) and words in line


def test_a_file_over_the_size_bound_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("classes: [cat]\n" + "#" * bounded_yaml.MAX_BYTES + "\n")
    (line,) = problems(path)
    assert line.startswith(f"{path}: ") and f"at most {bounded_yaml.MAX_BYTES}" in line


def test_the_most_classes_load_and_one_more_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    names = [f"class-{index}" for index in range(100_000)]
    path.write_text("classes:\n" + "".join(f"  - {name}\n" for name in names[:MAX_CLASSES]))
    start = time.perf_counter()
    assert len(load_config(path, environ={}).classes) == MAX_CLASSES == 65534
    path.write_text("classes:\n" + "".join(f"  - {name}\n" for name in names))
    (line,) = problems(path)
    assert time.perf_counter() - start < 60  # it finishes (the benchmark times it)
    assert line == (
        f"{path}:1: classes: 100000 classes; at most 65534 (masks are 16-bit at most and "
        "65535 is ignore)"
    )


def test_repeated_classes_are_found_in_linear_time_and_listed_briefly(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    names = [f"class-{index:05d}" for index in range(30_000)]
    path.write_text("classes:\n" + "".join(f"  - {name}\n" for name in names + names))
    start = time.perf_counter()
    (line,) = problems(path)
    assert time.perf_counter() - start < 30  # quadratic took minutes here
    assert line.startswith(f"{path}:1: classes: each class must be listed once; repeated: ")
    assert line.endswith("class-00009, ... (30000 in all)") and len(line) < 300


def test_repeated_keys_are_named_by_their_path_and_line(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("classes: [cat]\ngenerate:\n  height: 64\n  height: 72\nclasses: [dog]\n")
    assert problems(path) == [
        f"{path}:4: generate.height: repeated key; each key once",
        f"{path}:5: classes: repeated key; each key once",
    ]


def test_long_values_and_many_problems_are_abbreviated(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    long_name = "x" * 1_000_000
    numbers = ", ".join(str(index) for index in range(60_000))
    path.write_text(f"classes: [cat]\nseed: {long_name}\ngenerate: {{contexts: 7}}\n")
    lines = problems(path)
    assert (
        lines[0].startswith(f"{path}:2: seed: got 'xxxxxxxx") and "(1000000 characters)" in lines[0]
    )
    assert all(len(line) < 400 for line in lines)
    path.write_text(f"classes: [{numbers}]\n")
    lines = problems(path)
    assert len(lines) == MAX_PROBLEMS + 1 and lines[-1] == "... and 59950 more problems"
    path.write_text(f"classes: {{a: [{numbers}]}}\n")
    (line,) = problems(path)
    assert "got {'a': [0, 1, 2, ... (60000 items)]}" in line and len(line) < 400


def test_the_cli_caps_every_error_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(f"classes: [cat]\n? {'k' * 1_000_000}\n: 1\n")  # a key past 1024
    assert main(["config", "validate", str(path)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert len(line) < 1000 and "unknown key" in line and "(1000000 characters)" in line
    # A message that quotes its input whole is cut where the CLI prints it.
    assert main(["--set", "x" * 1_000_000, "config", "validate", str(path)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert len(line) <= MAX_ERROR_LINE + 50 and line.endswith(" characters)")
    assert error_lines("a\n" * 500) == ["a"] * 100 + ["... and 400 more lines"]


def test_a_thesaurus_alias_bomb_is_refused_naming_the_file(tmp_path: Path) -> None:
    anchors, top = bomb(10**7)
    path = tmp_path / "thesaurus.yaml"
    path.write_text(f"version: 1\nscenes: {{}}\nbombs:\n{indented(anchors)}classes: {top}\n")
    with pytest.raises(ThesaurusError, match=f"^{re.escape(str(path))}:.*more than .* YAML nodes"):
        load_thesaurus(path)


def test_an_override_that_is_no_valid_yaml_value_is_taken_as_text(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("classes: [cat]\n")
    assert load_config(path, environ={"FREEMASK__DRAW": "2024-13-01"}).draw == "2024-13-01"
