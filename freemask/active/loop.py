"""The active-learning loop: pseudo-label, filter, retrain, evaluate, until the stop rule says stop.

Round 0 is the unfiltered pool, trained on and validated like every round: the exported
dataset is the candidate that validates best, so the loop never ships a set that validates
worse than the pool. Round k: a judge pseudo-labels round k-1's kept set (round 1: the pool);
samples whose
generated mask disagrees with it are discarded (kept for inspection, never deleted); with
``active.ignore_disputed`` a kept sample's contradicted classes become ignore, and with
``active.relabel`` the kept samples that agree closely take the prediction as their mask; the
judge's successor is fine-tuned on the kept ones and evaluated on the validation set; round k
is logged to MLflow as a nested run. ``should_continue`` decides whether round k+1 runs; the
Kubeflow pipeline calls the same function. With ``active.max_rounds`` 0 (the default) no round
runs after round 0 and the pool is the dataset. Round 1's judge is the independent checkpoint in
``segment.labeller`` (its labels mapped onto the run's), or, when it is unset, a segmenter
trained on the whole pool first (round 0); round k's judges are cross-fitted on round k-1's
kept set (``freemask.active.cross_fit``), or round k-1's segmenter
(``active.later_judges: previous_round``).

Under the output prefix: ``images/`` and ``masks/`` (the pool's files), ``pool.jsonl`` and
``validation.jsonl``, per round ``rounds/NN/{pseudo/, judges/, disputed/, relabel/,
filter.json, kept.jsonl, discarded.jsonl, trained_from.json, model/, summary.json}`` (the
summary last: a finished round is not run again), then ``manifest.jsonl`` (the best
candidate's kept samples) and
``_SUCCESS``. This module drives the steps (``freemask.active.steps``) in one process; the stop
rule is ``freemask.active.stop_rule``.
"""

from __future__ import annotations

import time

from freemask.active import steps
from freemask.active.settings import guard_settings
from freemask.active.stop_rule import should_continue
from freemask.config import RunConfig
from freemask.stage_output import StageResult
from freemask.storage import open_storage
from freemask.tracking import NullRun, Run


def run_active(
    config: RunConfig, inputs: str, outputs: str, *, run: Run | None = None
) -> StageResult:
    """Run the loop on the samples under ``inputs``; write rounds and the final manifest.

    Finished rounds (with a summary) are not run again, so a killed loop resumes. A prefix
    whose rounds were made with other settings is refused (``guard_settings``).
    """
    started = time.monotonic()
    run = run or NullRun()
    out = open_storage(outputs)
    guard_settings(config, out)
    steps.prepare(config, inputs, out)
    steps.bootstrap(config, out, run)
    shipped = steps.finish_without_rounds(config, out, run, time.monotonic() - started)
    if shipped is not None:
        return shipped
    round_index = 1
    while True:
        if not out.exists(f"{steps.round_folder(round_index)}/summary.json"):
            steps.pseudo(config, out, round_index, run)
            steps.select(config, out, round_index)
            steps.train(config, out, round_index, run)
        steps.close(config, out, round_index, run)
        go_on, reason = should_continue(steps.history(out, round_index), config.active)
        if not go_on:
            return steps.finish(config, out, run, reason, time.monotonic() - started)
        round_index += 1
