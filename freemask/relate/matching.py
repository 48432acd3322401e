"""Matching classes the thesaurus does not hold to its nearest entries by text embedding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from freemask.relate.thesaurus import Thesaurus, ThesaurusError, normalise

CANDIDATES_SHOWN = 5


@dataclass(frozen=True)
class Match:
    """How a class name was resolved: to which entry, by what, and how close."""

    entry: str
    method: str  # "exact", "alias" or "embedding"
    score: float
    nearest: list[tuple[str, float]]


class EmbeddingMatcher:
    """Cosine similarity between a class name and every table name and alias.

    ``encoder`` is anything with ``encode(list[str], normalize_embeddings=True) -> array``
    (a sentence-transformers model); table embeddings are computed once.
    """

    def __init__(self, thesaurus: Thesaurus, encoder: Any):
        self.encoder = encoder
        names = thesaurus.names()
        self.labels = list(names)
        self.owners = [names[label] for label in self.labels]
        self.table = self._encode(self.labels)

    def _encode(self, texts: list[str]) -> np.ndarray:
        vectors = self.encoder.encode(texts, normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    def nearest(self, name: str, count: int = CANDIDATES_SHOWN) -> list[tuple[str, float]]:
        """The ``count`` nearest table entries (best alias score per entry), best first."""
        scores = self.table @ self._encode([normalise(name)])[0]
        best: dict[str, float] = {}
        for owner, score in zip(self.owners, scores.tolist(), strict=True):
            best[owner] = max(best.get(owner, -1.0), score)
        ranked = sorted(best.items(), key=lambda item: -item[1])
        return [(owner, round(score, 4)) for owner, score in ranked[:count]]


def match_class(
    name: str,
    thesaurus: Thesaurus,
    matcher: EmbeddingMatcher | None,
    threshold: float,
) -> Match:
    """Resolve a class name: exact entry, alias, else nearest entry by embedding above threshold.

    Raises ThesaurusError listing the nearest candidates with their scores when none reaches
    ``threshold`` (or when no matcher is given for a name the table lacks).
    """
    key = normalise(name)
    if key in thesaurus.classes:
        return Match(key, "exact", 1.0, [])
    entry = thesaurus.lookup(key)
    if entry is not None:
        return Match(entry.name, "alias", 1.0, [])
    if matcher is None:
        raise ThesaurusError(f"class {name!r} is not in the thesaurus and no matcher was given")
    nearest = matcher.nearest(key)
    best, score = nearest[0]
    if score < threshold:
        listed = ", ".join(f"{owner} ({value:.2f})" for owner, value in nearest)
        raise ThesaurusError(
            f"class {name!r} is not in the thesaurus and no entry is similar enough "
            f"(best {score:.2f} < relate.similarity_threshold {threshold:.2f}); nearest: {listed}. "
            "Add it to a thesaurus file (relate.thesaurus), rename it, or lower the threshold"
        )
    return Match(best, "embedding", score, nearest)
