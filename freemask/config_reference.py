"""The configuration reference, docs/configuration.md, rendered from the config models.

Every field of every section with its type, default, bounds (what validation enforces) and
description, read from ``freemask.config``'s pydantic models so that the page cannot drift from
them: ``freemask config reference --out docs/configuration.md`` writes it, and a test fails when
the committed page differs or a field has no description.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from collections.abc import Iterator
from typing import Any, Literal

import annotated_types
from pydantic import AfterValidator, BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from freemask import config as config_module
from freemask.config import PATH_FIELDS, RunConfig

COMMAND = "freemask config reference --out docs/configuration.md"

# Rules that hold for every section; what one field enforces is in its row.
INTRO = """\
One YAML file per run (`configs/demo.yaml`: small and offline; `configs/default.yaml`: real
models, VOC's 20 classes). `freemask config validate FILE` checks a file (one line per problem:
`file:line: field: got X; expected Y`) and `freemask config show FILE` prints it resolved
(defaults and environment overrides applied).

- **Unknown keys are errors**, and a key given twice is an error (YAML would keep the last
  silently).
- **Environment overrides.** Any field can be overridden from the environment with
  `FREEMASK__<SECTION>__<FIELD>` (the value parsed as YAML), e.g.
  `FREEMASK__GENERATE__IMAGES_PER_CLASS=4`; `--set section.field=value` on a command line does
  the same (how pipeline tasks pass runtime parameters).
- **Bounds.** Integers are strict (`true` is not 1), and counts and sizes have upper bounds
  (`images_per_class` and `compose.images` at most 1,000,000, image sides at most 4096), so a
  typo fails at once instead of allocating for minutes. The *bounds* column below is what
  validation enforces; rules between fields (low < high) are in the description.
- **Relative paths.** Relative input paths ({path_fields}) that exist beside the config file are
  taken from there, so a config works from any directory; others, and `workdir`, are relative
  to the working directory.
- **YAML within bounds.** Configs, thesauri and override values are YAML within bounds
  (`freemask/bounded_yaml.py`), each refused in one line naming the file or variable: at most
  16 MiB, 64 levels of nesting, and 1,000,000 nodes once every alias is expanded (an alias
  counts as the nodes it names, counted without expanding it, so a few lines of anchors cannot
  name billions of nodes); a config of 65,534 classes, the most there can be (masks are 16-bit
  at most and 65535 is ignore), is 1 MB and 66,000 nodes, and `freemask config validate` takes
  1.5 s on it (`benchmarks/bench_config_parse.py`).
- **Errors.** Messages abbreviate long values (the first items and a count), list the first 50
  problems, and the command line cuts any line at 1000 characters.
"""


def render_reference(model: type[BaseModel] = RunConfig) -> str:
    """The Markdown reference of ``model`` (a run config): its own fields, then one section per
    sub-model field, then the items of list fields that hold models."""
    top = [name for name, field in model.model_fields.items() if not _section_model(field)]
    sections = [
        (name, _section_model(field), field)
        for name, field in model.model_fields.items()
        if _section_model(field)
    ]
    path_fields = ", ".join(f"`{section}.{key}`" for section, key in PATH_FIELDS)
    lines = [
        "# Configuration reference",
        "",
        f"<!-- Generated from freemask/config.py by `{COMMAND}`: edit the models, not this "
        "file. -->",
        "",
        INTRO.format(path_fields=path_fields),
        "| section | what it sets |",
        "| --- | --- |",
        "| [top level](#top-level) | " + _cell(_doc(model)) + " |",
    ]
    lines += [
        f"| [`{name}`](#{name}) | {_cell(field.description or '')} |" for name, _, field in sections
    ]
    lines += ["", "## Top level", "", _doc(model), "", *_table(model, top)]
    for name, section, _ in sections:
        lines += ["", f"## `{name}`", "", _doc(section), "", *_table(section)]
        for item_name, item_model in _item_models(section):
            lines += [
                "",
                f"### Items of `{name}.{item_name}`",
                "",
                _doc(item_model),
                "",
                *_table(item_model),
            ]
    return "\n".join(lines) + "\n"


def undocumented_fields(model: type[BaseModel] = RunConfig) -> list[str]:
    """Dotted names of the fields of ``model`` and every model inside it that have no
    description (``[]`` when all do)."""
    return [name for name, field in _walk(model, "") if not (field.description or "").strip()]


def _walk(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, FieldInfo]]:
    for name, field in model.model_fields.items():
        yield f"{prefix}{name}", field
        for inner in _models_in(field.annotation):
            yield from _walk(inner, f"{prefix}{name}.")


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models an annotation holds: itself, or the items of its lists, tuples and unions."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in _models_in(arg)]


def _section_model(field: FieldInfo) -> type[BaseModel] | None:
    annotation = field.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _item_models(model: type[BaseModel]) -> list[tuple[str, type[BaseModel]]]:
    return [
        (name, inner)
        for name, field in model.model_fields.items()
        if not _section_model(field)
        for inner in _models_in(field.annotation)
    ]


def _doc(model: type[BaseModel]) -> str:
    """A model's docstring as Markdown paragraphs."""
    text = inspect.cleandoc(model.__doc__ or "").replace("``", "`")
    return "\n\n".join(" ".join(part.split()) for part in text.split("\n\n"))


def _table(model: type[BaseModel], names: list[str] | None = None) -> list[str]:
    rows = [
        "| field | type | default | bounds | description |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in names if names is not None else list(model.model_fields):
        field = model.model_fields[name]
        bounds = "; ".join(_bounds(field.annotation, field.metadata))
        rows.append(
            f"| `{name}` | {_cell(_type(field.annotation))} | {_cell(_default(field))} | "
            f"{_cell(bounds)} | {_cell(field.description or '')} |"
        )
    return rows


def _cell(text: str) -> str:
    """Text that stays inside one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _type(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type(args[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type(arg) for arg in args)
    if origin is Literal:
        return type(args[0]).__name__
    if origin is list:
        return f"list of {_type(args[0])}"
    if origin is dict:
        return f"mapping of {_type(args[0])} to {_type(args[1])}"
    if origin is tuple:
        return "(" + ", ".join(_type(arg) for arg in args) + ")"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object (fields below)"
    return getattr(annotation, "__name__", str(annotation))


def _bounds(annotation: Any, metadata: list[Any]) -> list[str]:
    """What validation enforces on a value: its own constraints, then its items'."""
    bounds = _constraints(metadata)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        inner_metadata = [
            item
            for extra in args[1:]
            for item in (extra.metadata if isinstance(extra, FieldInfo) else [extra])
        ]
        return bounds + _bounds(args[0], inner_metadata)
    if origin is Literal:
        return [*bounds, "one of " + ", ".join(f"`{_yaml_scalar(value)}`" for value in args)]
    if origin in (typing.Union, types.UnionType):
        return bounds + [text for arg in args for text in _bounds(arg, [])]
    if origin in (list, tuple) and args:
        items = [_bounds(arg, []) for arg in args]
        if all(item == items[0] for item in items) and items[0]:
            return [*bounds, "each item " + ", ".join(items[0])]
        return bounds + [
            f"item {index + 1} " + ", ".join(item) for index, item in enumerate(items) if item
        ]
    if origin is dict and args:
        values = _bounds(args[1], [])
        return bounds + ([f"each value: {', '.join(values)}"] if values else [])
    return bounds


def _constraints(metadata: list[Any]) -> list[str]:
    texts = []
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            texts.append(f">= {item.ge}")
        elif isinstance(item, annotated_types.Gt):
            texts.append(f"> {item.gt}")
        elif isinstance(item, annotated_types.Le):
            texts.append(f"<= {item.le}")
        elif isinstance(item, annotated_types.Lt):
            texts.append(f"< {item.lt}")
        elif isinstance(item, annotated_types.MultipleOf):
            texts.append(f"multiple of {item.multiple_of}")
        elif isinstance(item, annotated_types.MinLen):
            texts.append(f"length >= {item.min_length}")
        elif isinstance(item, annotated_types.MaxLen):
            texts.append(f"length <= {item.max_length}")
        elif isinstance(item, AfterValidator) and item.func is config_module._device_name:
            texts.append("`auto`, `cpu`, `cuda` or `cuda:N`")
        elif getattr(item, "strict", None):
            texts.append("strict")
        if getattr(item, "pattern", None):
            texts.append(f"matches `{item.pattern}`")
    return texts


def _yaml_scalar(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = to_jsonable_python(field.get_default(call_default_factory=True))
    return f"`{json.dumps(value)}`"
