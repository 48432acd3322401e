"""Stage 2, relate: resolve the run's classes against the thesaurus and write the relation table.

``relations.json`` (under the stage's prefix) holds, per run class, the entry it resolved to and
how (exact, alias, or embedding with its score and nearest candidates), its scene weights, its
partners (all, and those among the run's classes), size prior and support; and, per scene, the
run's classes that fit it. It is written for review and read by the backgrounds and compose
stages.
"""

from __future__ import annotations

import time
from typing import Any

from freemask.config import RunConfig
from freemask.relate.matching import EmbeddingMatcher, Match, match_class
from freemask.relate.thesaurus import Thesaurus, load_thesaurus
from freemask.stage_output import SUCCESS, StageResult, require_finished, write_success
from freemask.storage import Storage, open_storage, read_json, write_json

STAGE = "relate"
RELATIONS = "relations.json"


def load_text_encoder(model_id: str) -> Any:
    """The text encoder of the embedding matcher (``freemask.models.load_text_encoder``),
    imported on use: the table and its checks (``freemask.preflight``) need no torch."""
    from freemask.models import load_text_encoder as load

    return load(model_id)


def resolve_relations(
    classes: list[str],
    thesaurus: Thesaurus,
    matcher: EmbeddingMatcher | None,
    threshold: float,
) -> dict[str, Any]:
    """The relation table of ``classes`` (see the module docstring for its layout)."""
    matches: dict[str, Match] = {
        name: match_class(name, thesaurus, matcher, threshold) for name in classes
    }
    entries = {name: thesaurus.classes[match.entry] for name, match in matches.items()}
    by_entry = {entry.name: name for name, entry in entries.items()}
    relations: dict[str, Any] = {}
    for name, match in matches.items():
        entry = entries[name]
        partners = [thesaurus.lookup(partner).name for partner in entry.partners]
        relations[name] = {
            "entry": entry.name,
            "matched_by": match.method,
            "score": round(match.score, 4),
            "nearest": [list(pair) for pair in match.nearest],
            "scenes": {scene: round(w, 4) for scene, w in thesaurus.scene_weights(entry).items()},
            "partners": partners,
            "partners_in_run": [
                by_entry[p] for p in partners if p in by_entry and by_entry[p] != name
            ],
            "size": entry.size,
            "support": entry.support,
        }
    scenes: dict[str, dict[str, float]] = {}
    for name, relation in relations.items():
        for scene, weight in relation["scenes"].items():
            scenes.setdefault(scene, {})[name] = weight
    return {"version": 1, "classes": relations, "scenes": dict(sorted(scenes.items()))}


def run_relate(
    config: RunConfig, inputs: str | None, outputs: str, *, encoder: Any | None = None
) -> StageResult:
    """Resolve ``config.classes`` and write ``relations.json`` and ``_SUCCESS`` under ``outputs``.

    The text encoder (``config.relate.embedding_model``) is loaded only when a class is not in
    the table by name or alias; ``encoder`` can pass one in. Raises ThesaurusError for a class
    with no entry similar enough, listing the nearest candidates.
    """
    started = time.monotonic()
    settings = config.relate
    thesaurus = load_thesaurus(settings.thesaurus)
    matcher = None
    if any(thesaurus.lookup(name) is None for name in config.classes):
        matcher = EmbeddingMatcher(
            thesaurus, encoder or load_text_encoder(settings.embedding_model)
        )
    relations = resolve_relations(config.classes, thesaurus, matcher, settings.similarity_threshold)
    storage = open_storage(outputs)
    write_json(storage, RELATIONS, relations)
    methods = [relation["matched_by"] for relation in relations["classes"].values()]
    result = StageResult(
        stage=STAGE,
        output=storage.uri,
        written=len(relations["classes"]),
        seconds=time.monotonic() - started,
        summary={method: methods.count(method) for method in sorted(set(methods))},
    )
    write_success(storage, SUCCESS, result.to_json())
    return result


def read_relations(storage: Storage) -> dict[str, Any]:
    """Read a finished relate stage's ``relations.json``."""
    require_finished(storage, "the relate output")
    return read_json(storage, RELATIONS)
