"""The Adaptive Matching Thesaurus: a reviewed table of classes, their scenes, partners and sizes.

The table (``thesaurus.yaml`` beside this module, or a file named in config) holds canonical scene
tags in a small hierarchy with aliases, and per class: scene weights, partner classes, a size
prior and a support type. Names are normalised (case, spaces, underscores, hyphens) and aliases
resolve to their entry, so "grass", "Grassland" and "meadow" are one scene and "couch" is "sofa".
The reverse map (scene -> classes) is derived here, never written twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from freemask import bounded_yaml
from freemask.bounded_yaml import YamlLimitError
from freemask.errors import FreemaskError

SUPPORTS = ("ground", "air", "water", "table", "wall", "ceiling", "stuff")
# A class tied to a scene is tied to each ancestor scene with this factor per level.
ANCESTOR_DECAY = 0.5


class ThesaurusError(FreemaskError):
    """The thesaurus file is invalid, or a class or scene cannot be resolved."""


def normalise(name: str) -> str:
    """Lower case, with underscores and hyphens as spaces and runs of spaces collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"[_\-]+", " ", name.strip().lower())).strip()


class _SceneRow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    parent: str | None = None
    aliases: list[str] = Field(default_factory=list)


class _ClassRow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    aliases: list[str] = Field(default_factory=list)
    scenes: dict[str, Annotated[float, Field(gt=0.0, le=1.0)]] = Field(min_length=1)
    partners: list[str] = Field(default_factory=list)
    size: Annotated[float, Field(gt=0.0, le=1.0)]
    support: Literal[SUPPORTS]  # type: ignore[valid-type]


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: Literal[1]
    scenes: dict[str, _SceneRow]
    classes: dict[str, _ClassRow]


@dataclass(frozen=True)
class ClassEntry:
    """One class of the table: scene weights (canonical scenes), partners, size and support."""

    name: str
    aliases: tuple[str, ...]
    scenes: dict[str, float]
    partners: tuple[str, ...]
    size: float
    support: str


@dataclass
class Thesaurus:
    """Scenes (canonical name -> parent) and classes, with alias lookups for both."""

    parents: dict[str, str | None]
    classes: dict[str, ClassEntry]
    scene_aliases: dict[str, str] = field(default_factory=dict)
    class_aliases: dict[str, str] = field(default_factory=dict)

    def lookup(self, name: str) -> ClassEntry | None:
        """The entry for a class name or alias, or None if the table does not hold it."""
        key = normalise(name)
        canonical = key if key in self.classes else self.class_aliases.get(key)
        return self.classes.get(canonical) if canonical else None

    def scene(self, tag: str) -> str | None:
        """The canonical scene for a tag or alias, or None if unknown."""
        key = normalise(tag)
        return key if key in self.parents else self.scene_aliases.get(key)

    def ancestors(self, scene: str) -> list[str]:
        """The scene's parent, grandparent ... up to its root."""
        chain = []
        parent = self.parents[scene]
        while parent is not None:
            chain.append(parent)
            parent = self.parents[parent]
        return chain

    def scene_weights(self, entry: ClassEntry) -> dict[str, float]:
        """The entry's scene weights, spread to ancestor scenes (decayed per level)."""
        weights: dict[str, float] = {}
        for scene, weight in entry.scenes.items():
            weights[scene] = max(weights.get(scene, 0.0), weight)
            for level, ancestor in enumerate(self.ancestors(scene), start=1):
                decayed = weight * ANCESTOR_DECAY**level
                weights[ancestor] = max(weights.get(ancestor, 0.0), decayed)
        return dict(sorted(weights.items(), key=lambda item: (-item[1], item[0])))

    def classes_by_scene(self) -> dict[str, dict[str, float]]:
        """The reverse map: scene -> {class: weight}, derived from the class entries."""
        reverse: dict[str, dict[str, float]] = {scene: {} for scene in self.parents}
        for entry in self.classes.values():
            for scene, weight in self.scene_weights(entry).items():
                reverse[scene][entry.name] = weight
        return reverse

    def names(self) -> dict[str, str]:
        """Every class name and alias -> its canonical class (for embedding matches)."""
        return {**{name: name for name in self.classes}, **self.class_aliases}


def default_thesaurus_path() -> Path:
    """The shipped table."""
    return Path(str(resources.files("freemask.relate").joinpath("thesaurus.yaml")))


def load_thesaurus(path: str | Path | None = None) -> Thesaurus:
    """Load and check a thesaurus file (the shipped one by default).

    Raises ThesaurusError naming the file and field for a malformed table, an unknown scene or
    partner, a repeated alias, or a cycle in the scene hierarchy.
    """
    path = str(path) if path else str(default_thesaurus_path())
    try:
        # Within the bounds of freemask.bounded_yaml (size, nesting, nodes with aliases
        # expanded), parsed by the C parser where PyYAML has it.
        data = _File.model_validate(bounded_yaml.load(_read_text(path), path))
    except UnicodeDecodeError as exc:
        raise ThesaurusError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except YamlLimitError as exc:
        raise ThesaurusError(str(exc)) from None
    except yaml.YAMLError as exc:
        raise ThesaurusError(f"{path}: not valid YAML ({exc})") from None
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part)[:60] for part in error["loc"])
        raise ThesaurusError(f"{path}: {where}: {error['msg']}") from None
    except ValueError as exc:  # a date like 2024-13-01, an integer of over 4300 digits
        raise ThesaurusError(f"{path}: not a valid YAML value: {str(exc)[:200]}") from None
    return _build(data, path)


def _read_text(path: str) -> str:
    """The file at ``path``: a local path, or a storage URI (``gs://bucket/table.yaml``, where a
    pipeline's config and its thesaurus live)."""
    folder, _, name = path.rpartition("/")
    if "://" in path:
        from freemask.storage import open_storage

        store = open_storage(folder)
        if not name or not store.exists(name):
            raise ThesaurusError(f"{path}: thesaurus file not found")
        data = store.read_bytes(name)
        bounded_yaml.check_size(len(data), path)
        return data.decode("utf-8")
    if not Path(path).is_file():
        raise ThesaurusError(f"{path}: thesaurus file not found")
    bounded_yaml.check_size(Path(path).stat().st_size, path)
    return Path(path).read_text(encoding="utf-8")


def _build(data: _File, path: str) -> Thesaurus:
    parents = {
        normalise(name): row.parent and normalise(row.parent) for name, row in data.scenes.items()
    }
    scene_aliases = _aliases(
        {normalise(n): r.aliases for n, r in data.scenes.items()}, path, "scene"
    )
    for scene, parent in parents.items():
        if parent is not None and parent not in parents:
            raise ThesaurusError(f"{path}: scenes.{scene}.parent: unknown scene {parent!r}")
    for scene in parents:
        seen = {scene}
        parent = parents[scene]
        while parent is not None:
            if parent in seen:
                raise ThesaurusError(
                    f"{path}: scenes.{scene}: the parent chain loops at {parent!r}"
                )
            seen.add(parent)
            parent = parents[parent]
    class_aliases = _aliases(
        {normalise(n): r.aliases for n, r in data.classes.items()}, path, "class"
    )
    thesaurus = Thesaurus(parents, {}, scene_aliases, class_aliases)

    def resolve_scene(tag: str, where: str) -> str:
        scene = thesaurus.scene(tag)
        if scene is None:
            raise ThesaurusError(f"{path}: {where}: unknown scene {tag!r}")
        return scene

    for raw_name, row in data.classes.items():
        name = normalise(raw_name)
        scenes: dict[str, float] = {}
        for tag, weight in row.scenes.items():
            scene = resolve_scene(tag, f"classes.{raw_name}.scenes")
            scenes[scene] = max(scenes.get(scene, 0.0), weight)
        thesaurus.classes[name] = ClassEntry(
            name=name,
            aliases=tuple(normalise(alias) for alias in row.aliases),
            scenes=scenes,
            partners=tuple(normalise(partner) for partner in row.partners),
            size=row.size,
            support=row.support,
        )
    for entry in thesaurus.classes.values():
        unknown = [partner for partner in entry.partners if thesaurus.lookup(partner) is None]
        if unknown:
            raise ThesaurusError(
                f"{path}: classes.{entry.name}.partners: unknown class(es) {unknown}"
            )
    return thesaurus


def _aliases(rows: dict[str, list[str]], path: str, kind: str) -> dict[str, str]:
    """alias -> canonical name; an alias naming another entry or two entries is an error."""
    aliases: dict[str, str] = {}
    for name, names in rows.items():
        for alias in map(normalise, names):
            if alias == name:
                continue
            owner = aliases.get(alias) or (alias if alias in rows else None)
            if owner is not None and owner != name:
                raise ThesaurusError(
                    f"{path}: {kind} alias {alias!r} of {name!r} already names {owner!r}"
                )
            aliases[alias] = name
    return aliases
