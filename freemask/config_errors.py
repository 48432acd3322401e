"""How a config's problems are told: one line each, naming the file and line (or the
environment variable), the field, the value and what was expected, short whatever the value.

A line is found per problem by walking the composed YAML along the field's path (each mapping
indexed once), so the cost follows the problems reported, not the size of the document; values
are abbreviated (a long string by its start and length, a long list or mapping by its first
items and count), URIs lose their user and password, and past ``MAX_PROBLEMS`` one line says
how many more there are.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from freemask.redact import redact


def did_you_mean(word: str, known: Iterable[str], shown: int = 3) -> str:
    """'did you mean 'x'?' (or 'x' or 'y') naming the known names closest to ``word`` by
    spelling (difflib's ratio, at least 0.6), or '' when none is close."""
    close = difflib.get_close_matches(word, list(known), n=shown, cutoff=0.6)
    return f"did you mean {' or '.join(repr(name) for name in close)}?" if close else ""


class KeyLines:
    """The 1-based line of a key path in the composed document, looked up per problem (each
    mapping's keys indexed once, on first use), so the cost follows the problems reported, not
    the size of the document or of what its aliases name."""

    def __init__(self, root: yaml.Node | None):
        self.root = root
        self._keys: dict[int, dict[str, tuple[yaml.Node, yaml.Node]]] = {}

    def line_of(self, loc: tuple) -> int:
        """The line of ``loc``'s nearest enclosing key in the file (0 when it is not in it)."""
        node, line = self.root, 0
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                if id(node) not in self._keys:  # the last of a repeated key, as YAML keeps it
                    self._keys[id(node)] = {str(k.value): (k, v) for k, v in node.value}
                found = self._keys[id(node)].get(str(part))
                if found is None:
                    break
                key_node, node = found
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if not 0 <= part < len(node.value):
                    break
                key_node = node = node.value[part]
            else:
                break
            line = key_node.start_mark.line + 1
        return line


# Problems listed in a config error (past it, one line says how many more there are), and the
# characters of one problem's line (a message may quote a value: a device name, a template).
MAX_PROBLEMS = 50
MAX_PROBLEM_LINE = 1000


def problem_lines(problems: list[str]) -> str:
    """The problems as the lines of one message: the first ``MAX_PROBLEMS``, each cut to
    ``MAX_PROBLEM_LINE`` characters and without credentials in its URIs, then how many more."""
    shown = [
        line
        if len(line) <= MAX_PROBLEM_LINE
        else f"{line[:MAX_PROBLEM_LINE]}... ({len(line)} characters)"
        for line in map(redact, problems[:MAX_PROBLEMS])
    ]
    if len(problems) > MAX_PROBLEMS:
        shown.append(f"... and {len(problems) - MAX_PROBLEMS} more problems")
    return "\n".join(shown)


def describe(
    error: Mapping[str, Any],
    path: Path,
    lines: KeyLines,
    env_origins: Mapping[tuple, str],
    model: type[BaseModel],
) -> str:
    """One pydantic error of validating ``model`` (the run config) from the file at ``path`` as
    'where: field: got X; expected Y' (X abbreviated); ``env_origins`` names the environment
    variable that set a field."""
    loc = tuple(error["loc"])
    field = ".".join(_short_key(part) for part in loc) or "(top level)"
    overridden = [loc[:depth] for depth in range(len(loc), 0, -1) if loc[:depth] in env_origins]
    line = lines.line_of(loc)
    if overridden:
        where = f"environment {env_origins[overridden[0]]}"
    else:
        where = f"{path}:{line}" if line else str(path)
    kind = error["type"]
    if kind == "extra_forbidden":
        known = _known_keys(model, loc)
        suggestion = did_you_mean(str(loc[-1]), known) if len(str(loc[-1])) <= 60 else ""
        if suggestion:
            return (
                f"{where}: {field}: unknown key; {suggestion} (expected one of: {', '.join(known)})"
            )
        return f"{where}: {field}: unknown key; expected one of: {', '.join(known)}"
    if kind == "missing":
        return f"{where}: {field}: missing; this field is required"
    message = error["msg"]
    if kind == "value_error":
        return f"{where}: {field}: {message.removeprefix('Value error, ')}"
    expected = message[0].lower() + message[1:]
    expected = expected.removeprefix("input should be ").removeprefix("input ")
    for words, symbol in _COMPARISONS:
        if expected.startswith(words):
            expected = f"a value {symbol}{expected[len(words) :]}"
    return f"{where}: {field}: got {abbreviate(error['input'])}; expected {expected}"


def abbreviate(value: Any, depth: int = 0) -> str:
    """``repr(value)`` for an error message, kept short whatever the value: a long string shows
    its start and length, a long list or mapping its first items and count, and nesting past two
    levels only its type and length (the cost is bounded too: nothing is walked past that)."""
    if isinstance(value, (str, bytes)):
        if len(value) <= 60:
            return repr(value)
        return f"{value[:40]!r}... ({len(value)} characters)"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"(an integer of {value.bit_length()} bits)"
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        if depth >= 2:
            return f"({type(value).__name__} of {len(value)})"
        items = iter(value.items() if isinstance(value, dict) else value)
        shown = [
            f"{abbreviate(item[0], 2)}: {abbreviate(item[1], depth + 1)}"
            if isinstance(value, dict)
            else abbreviate(item, depth + 1)
            for _, item in zip(range(3), items, strict=False)
        ]
        if len(value) > 3:
            shown.append(f"... ({len(value)} items)")
        opening, closing = "{}" if isinstance(value, (dict, set, frozenset)) else "[]"
        if isinstance(value, tuple):
            opening, closing = "()"
        return opening + ", ".join(shown) + closing
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}... ({len(text)} characters)"


def _short_key(part: Any) -> str:
    """A key of a field path, cut when it is long (an unknown key can be any string)."""
    text = str(part)
    return text if len(text) <= 60 else f"{text[:40]}...({len(text)} characters)"


_COMPARISONS = (
    ("greater than or equal to", ">="),
    ("less than or equal to", "<="),
    ("greater than", ">"),
    ("less than", "<"),
)


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names allowed in the section of ``model`` that holds ``loc``'s last key."""
    for part in loc[:-1]:
        annotation = model.model_fields[str(part)].annotation if isinstance(part, str) else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return sorted(model.model_fields)
