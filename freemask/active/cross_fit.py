"""Judges of later rounds that never judge what they learnt: two-fold cross-fitting.

A segmenter trained on a set agrees with that set's labels, mistakes included: judged by round
1's own segmenter, the demo's round 2 agreed at 0.98 and discarded nothing. With
``active.later_judges: cross_fit``, round k (k >= 2) splits its candidates (round k-1's kept
set) into two folds by sample id; a judge is trained on each fold and pseudo-labels the other
one, so every label is judged by a model that never saw it (out-of-sample predictions, as
confident learning uses them to find label errors: Northcutt, Jiang and Chuang, JAIR 2021).

Files: ``rounds/NN/judges/fold-K/model`` (a judge trained on every fold but K, which it
judges); a finished judge is loaded, not retrained.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from freemask.active.rounds import train_round
from freemask.config import RunConfig
from freemask.records import Sample
from freemask.segment import Segmenter
from freemask.storage import Storage
from freemask.tracking import Run

FOLDS = 2
JUDGE_TAG = "freemask.judge"


def fold_of(sample_id: str) -> int:
    """The fold a sample falls in: stable across runs and processes (a hash of its id)."""
    return int(hashlib.sha256(f"fold:{sample_id}".encode()).hexdigest(), 16) % FOLDS


def train_judges(
    config: RunConfig,
    samples: list[Sample],
    data: Storage,
    judges: Storage,
    start: Callable[[], Segmenter | None],
    parent: Run,
    round_index: int,
) -> list[tuple[Segmenter, list[Sample]]]:
    """(judge, the samples it judges) per non-empty fold of ``samples``: each judge trained on
    the other folds' samples under ``judges/fold-K/model``, fine-tuning what ``start`` returns
    (None: a fresh model). A fold whose complement is empty (every candidate in one fold)
    cannot be cross-fitted: it is left out, for the caller to judge otherwise."""
    pairs = []
    for fold in range(FOLDS):
        judged = [sample for sample in samples if fold_of(sample.id) == fold]
        learnt = [sample for sample in samples if fold_of(sample.id) != fold]
        if not judged or not learnt:
            continue
        name = f"{round_index}.{fold}"
        with parent.child_with_tag(JUDGE_TAG, name, f"round-{round_index}-judge-{fold}") as run:
            model = judges.child(f"fold-{fold}/model")
            pairs.append((train_round(config, learnt, data, model, run, start()), judged))
    return pairs
