"""Stage 2, relate: the adaptive matching thesaurus (class -> scenes, partners, size, support)."""

from freemask.relate.matching import EmbeddingMatcher, Match, match_class
from freemask.relate.stage import RELATIONS, read_relations, resolve_relations, run_relate
from freemask.relate.thesaurus import (
    ClassEntry,
    Thesaurus,
    ThesaurusError,
    load_thesaurus,
    normalise,
)

__all__ = [
    "RELATIONS",
    "ClassEntry",
    "EmbeddingMatcher",
    "Match",
    "Thesaurus",
    "ThesaurusError",
    "load_thesaurus",
    "match_class",
    "normalise",
    "read_relations",
    "resolve_relations",
    "run_relate",
]
