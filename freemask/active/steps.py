"""The active-learning loop as separate steps over one output prefix.

Every step reads what it needs from files under the prefix, so the local loop and the Kubeflow
pipeline (one task per step, in separate processes) run the very same code:
``prepare`` (pool and validation), ``bootstrap`` (round 0: the unfiltered pool as a candidate,
a segmenter trained on all of it and evaluated like every round; it judges round 1 when no
``segment.labeller`` is set), then per round ``pseudo``, ``select``, ``train`` and ``close``
(evaluate, log the nested MLflow run, write ``rounds/NN/summary.json``), and ``finish`` (the
candidate that validates best, the pool included, becomes the dataset: the loop never ships a
set that validates worse than what it was given).

Rounds are cumulative: round k judges round k-1's kept set (round 1: the pool) and fine-tunes
round k-1's segmenter on what it keeps (round 1: the labeller when it predicts the run's labels,
else a fresh model). Round 1's judge is the labeller (or round 0's segmenter); a later round's
judge is chosen by ``active.later_judges`` (``freemask.active.cross_fit``).
"""

from __future__ import annotations

import hashlib
import math
from functools import partial
from typing import Any

import numpy as np

from freemask.active.carry import (
    CARRIED_JUDGE,
    carried_samples,
    carry_judge,
    kept_by,
    with_provenance,
)
from freemask.active.cross_fit import train_judges
from freemask.active.disputed import ignore_disputed
from freemask.active.relabel import relabel_samples
from freemask.active.report import log_kept, log_pictures
from freemask.active.rounds import (
    SCORE,
    filter_samples,
    pseudo_label,
    split_validation,
    train_round,
)
from freemask.config import RunConfig
from freemask.errors import DegenerateResultError, FreemaskError, WriteConflictError
from freemask.quality import discard_precision, dispute_precision
from freemask.record_checks import require_usable
from freemask.records import Sample, read_manifest, serialize_samples, write_manifest
from freemask.segment import (
    MODEL_MARKER,
    Segmenter,
    evaluate,
    load_labeller,
    load_trained,
    predicts_run_labels,
)
from freemask.stage_output import SUCCESS, StageResult, read_finished_manifest, write_success
from freemask.storage import Storage, open_storage, read_json, write_json
from freemask.tracking import NullRun, Run

STAGE = "active"
JUDGE = "judge.json"  # round 1's judge in a growing dataset: this version's or the carried one
POOL = "pool.jsonl"
VALIDATION = "validation.jsonl"
ROUND_TAG = "freemask.round"
POOL_ROUND = 0  # the unfiltered pool, a candidate like every round
SPLIT_WARNING = (
    "validation is a 1-in-10 split of the generated pool: val_miou scores against synthetic "
    "labels, not truth; set segment.validation to a truly labelled prefix"
)


def round_folder(round_index: int) -> str:
    """The folder of round ``round_index`` under the loop's prefix (``rounds/NN``)."""
    return f"rounds/{round_index:02d}"


def prepare(config: RunConfig, inputs: str, out: Storage) -> None:
    """Copy the labelled samples' files (every file a record names, so the final manifest is
    valid where it lies) under ``out``; write the pool and validation lists."""
    if out.exists(POOL):
        return
    if config.segment.validation:
        validation_of(config, out)  # a bad validation prefix fails before any training
    source = open_storage(inputs)
    samples = [
        sample
        for sample in read_finished_manifest(source, "the active loop's input")
        if sample.semantic_mask
    ]
    if not samples:
        raise FreemaskError(f"{source.uri}: no labelled samples for the active-learning loop")
    require_usable(source, samples, config.classes, f"{source.uri}/manifest.jsonl")
    for sample in samples:
        for path in sample.files():
            if not out.exists(path):
                out.write_bytes(path, source.read_bytes(path))
    version = config.kubeflow.dataset_version
    if version:  # a dataset version: its draws, and in a growing dataset what the last one kept
        drawn = {sample.id for sample in samples}
        carried = [s for s in carried_samples(config, out) if s.id not in drawn]
        samples = with_provenance(samples, version) + carried
        carry_judge(config, out)
    pool, validation = (samples, []) if config.segment.validation else split_validation(samples)
    out.write_bytes(VALIDATION, serialize_samples(validation))
    out.write_bytes(POOL, serialize_samples(pool))  # written last: the prefix is prepared


def pool_of(out: Storage) -> list[Sample]:
    """The samples the loop starts from (what round 1 filters)."""
    return read_manifest(out, POOL)


def validation_of(config: RunConfig, out: Storage) -> tuple[list[Sample], Storage]:
    """(validation samples, their storage): ``segment.validation``'s, else the pool split's."""
    if not config.segment.validation:
        return read_manifest(out, VALIDATION), out
    store = open_storage(config.segment.validation)
    samples = (
        [s for s in read_manifest(store) if s.semantic_mask]
        if store.exists("manifest.jsonl")
        else []
    )
    if not samples:
        raise FreemaskError(
            f"segment.validation {config.segment.validation!r}: no labelled samples "
            "(expected a manifest.jsonl whose samples have a semantic_mask)"
        )
    return samples, store


def needs_bootstrap(config: RunConfig) -> bool:
    """True when no ``segment.labeller`` is set: round 0's segmenter judges round 1."""
    return config.segment.labeller is None


def bootstrap(config: RunConfig, out: Storage, parent: Run) -> dict[str, Any]:
    """Round 0, the unfiltered pool as a candidate: its kept set is the whole pool, its
    segmenter is trained on all of it (from the same starting point as round 1's) and closed
    like every round. Returns its summary; nothing runs again once it is written."""
    folder = round_folder(POOL_ROUND)
    if not out.exists(f"{folder}/kept.jsonl"):
        pool = pool_of(out)
        labels = len(config.classes) + 1
        report = {
            "keep_rule_used": "none (the unfiltered pool)",
            "discard_precision": discard_precision(out, pool, [], labels),
            "disputed_ignored": 0,
            "relabelled": 0,
        }
        write_json(out, f"{folder}/filter.json", report)
        out.write_bytes(f"{folder}/discarded.jsonl", b"")
        out.write_bytes(f"{folder}/kept.jsonl", serialize_samples(pool))  # last: "filtered"
    train(config, out, POOL_ROUND, parent)
    return close(config, out, POOL_ROUND, parent)


def candidate_name(round_index: int) -> str:
    """A finished candidate in words: ``round k``, or the pool for round 0."""
    return "the unfiltered pool (round 0)" if round_index == POOL_ROUND else f"round {round_index}"


def judge_of(config: RunConfig, round_index: int, out: Storage | None = None) -> str:
    """Who pseudo-labels round ``round_index``, in words (the round summary's ``judge``)."""
    if round_index == 1 and out is not None and out.exists(JUDGE):
        choice = read_json(out, JUDGE)
        if choice["chosen"] == "carried":
            origin = read_json(out, f"{CARRIED_JUDGE}/from.json")
            return (
                f"the segmenter of version {origin['version']} round {origin['round']} "
                f"(validation mIoU {choice['validation_miou']})"
            )
    if round_index == POOL_ROUND:
        return "none: the unfiltered pool"
    if round_index > 1:
        return later_judge_of(config, round_index)
    if config.segment.labeller:
        return f"labeller {config.segment.labeller} (independent checkpoint)"
    return "bootstrap: round 0 segmenter trained on the whole pool (not independent)"


def labeller(config: RunConfig, out: Storage, round_index: int) -> Segmenter:
    """The segmenter that pseudo-labels round ``round_index`` (see ``judge_of``)."""
    if round_index == 1 and not needs_bootstrap(config):
        return carried_or(config, out, load_labeller(config.segment, config.classes))
    previous = out.child(f"{round_folder(round_index - 1)}/model")
    if not previous.exists("model.safetensors"):
        raise FreemaskError(f"{previous.uri}: no trained segmenter to judge round {round_index}")
    trained = load_trained(previous, config.segment)
    return carried_or(config, out, trained) if round_index == 1 else trained


def carried_or(config: RunConfig, out: Storage, first: Segmenter) -> Segmenter:
    """Round 1's judge in a growing dataset: the previous version's segmenter when one was
    carried and it scores higher than ``first`` on the validation set, else ``first``. The
    choice is written once (``JUDGE``), so a resumed round judges as it began."""
    if not out.exists(f"{CARRIED_JUDGE}/{MODEL_MARKER}"):
        return first
    carried = load_trained(out.child(CARRIED_JUDGE), config.segment)
    if not out.exists(JUDGE):
        samples, store = validation_of(config, out)
        scores = {
            "first": evaluate(first, samples, store, config.classes)["miou"],
            "carried": evaluate(carried, samples, store, config.classes)["miou"],
        }
        chosen = "carried" if scores["carried"] > scores["first"] else "first"
        write_json(out, JUDGE, {"chosen": chosen, "validation_miou": scores})
    return carried if read_json(out, JUDGE)["chosen"] == "carried" else first


def candidates(out: Storage, round_index: int) -> list[Sample]:
    """What round ``round_index`` filters: round k-1's kept set (round 1: the pool)."""
    if round_index == 1:
        return pool_of(out)
    previous = f"{round_folder(round_index - 1)}/kept.jsonl"
    if not out.exists(previous):
        raise FreemaskError(f"{out.uri}/{previous}: round {round_index - 1} has not been filtered")
    return read_manifest(out, previous)


def pseudo(config: RunConfig, out: Storage, round_index: int, parent: Run | None = None) -> None:
    """Pseudo-label round ``round_index``'s candidates (nothing to load when there are none):
    round 1 by its judge, a later round as ``active.later_judges`` says (cross-fitted judges
    are trained here first, their runs nested under ``parent``)."""
    samples = candidates(out, round_index)
    if not samples:
        return
    target = out.child(f"{round_folder(round_index)}/pseudo")
    if round_index > 1 and config.active.later_judges == "cross_fit":
        for judge_model, judged in cross_fit_judges(config, out, round_index, samples, parent):
            pseudo_label(judge_model, judged, out, target)
        return
    pseudo_label(labeller(config, out, round_index), samples, out, target)


def cross_fit_judges(
    config: RunConfig, out: Storage, round_index: int, samples: list[Sample], parent: Run | None
) -> list[tuple[Segmenter, list[Sample]]]:
    """(judge, the samples it judges) for a later round under ``active.later_judges:
    cross_fit``: judges trained on one fold of the candidates each, from round 1's starting
    point (the labeller, or a fresh model: never a segmenter that learnt these labels); a
    fold that cannot be cross-fitted is judged by round k-1's segmenter."""
    folder = out.child(f"{round_folder(round_index)}/judges")

    def start() -> Segmenter | None:
        return starting_point(config, out, 1)[0]

    pairs = train_judges(config, samples, out, folder, start, parent or NullRun(), round_index)
    judged = {sample.id for _, fold in pairs for sample in fold}
    rest = [sample for sample in samples if sample.id not in judged]
    if rest:
        pairs.append((labeller(config, out, round_index), rest))
    return pairs


def later_judge_of(config: RunConfig, round_index: int) -> str:
    """Who judges round ``round_index`` >= 2, in words (``active.later_judges``)."""
    previous = round_index - 1
    if config.active.later_judges == "cross_fit":
        return (
            f"two judges cross-fitted on round {previous}'s kept set (each trained on one half, "
            "judging the other)"
        )
    return f"round {previous} segmenter (trained on round {previous}'s kept set: not independent)"


def select(config: RunConfig, out: Storage, round_index: int) -> tuple[int, int]:
    """Filter the round's candidates against their pseudo-labels (ignoring the kept ones'
    disputed classes where ``active.ignore_disputed``, relabelling where ``active.relabel``);
    write ``filter.json``, then the discarded and kept manifests; return (kept, discarded)."""
    folder = round_folder(round_index)
    pseudo_store = out.child(f"{folder}/pseudo")
    selection = filter_samples(
        candidates(out, round_index), out, pseudo_store, config.active, round_index
    )
    labels = len(config.classes) + 1
    report: dict[str, Any] = {
        "keep_rule_used": selection.rule,
        "discard_precision": discard_precision(
            out, selection.kept, selection.discarded, labels, score_key=SCORE
        ),
        "disputed_ignored": 0,
        "relabelled": 0,
    }
    kept = selection.kept
    if config.active.ignore_disputed:
        before_ignoring = {sample.id: sample for sample in kept}
        kept, changed = ignore_disputed(kept, out, folder, config.active)
        report["disputed_ignored"] = len(changed)
        report["dispute_precision"] = dispute_precision(
            out,
            [before_ignoring[sample.id] for sample in changed],
            [[i.class_id for i in sample.instances if i.disputed] for sample in changed],
        )
    if config.active.relabel:
        kept, relabelled = relabel_samples(kept, out, pseudo_store, folder, config.active)
        report["relabelled"] = len(relabelled)
        changed = {sample.id for sample in relabelled}
        before_relabel = [s for s in selection.kept if s.id in changed]
        report.update(true_iou_change(out, before_relabel, relabelled, "relabel", labels))
    write_json(out, f"{folder}/filter.json", report)
    out.write_bytes(f"{folder}/discarded.jsonl", serialize_samples(selection.discarded))
    out.write_bytes(f"{folder}/kept.jsonl", serialize_samples(kept))  # last: the round is filtered
    return len(kept), len(selection.discarded)


def true_iou_change(
    out: Storage, before: list[Sample], after: list[Sample], step: str, labels: int
) -> dict[str, dict[str, float | None]]:
    """``{<step>_true_iou: {before, after}}``: the changed samples' mean true label IoU before
    and after a step changed their masks (nothing without truth or without changes)."""
    then = discard_precision(out, before, [], labels)
    now = discard_precision(out, after, [], labels)
    if not (then and now):
        return {}
    return {f"{step}_true_iou": {"before": then["kept_true_iou"], "after": now["kept_true_iou"]}}


def starting_point(
    config: RunConfig, out: Storage, round_index: int
) -> tuple[Segmenter | None, str]:
    """(the segmenter round ``round_index`` fine-tunes, or None for a fresh one; in words):
    round k-1's model; for rounds 0 and 1 the labeller when it predicts the run's labels (round
    1 does not start from round 0's model: it learnt the whole pool, the discarded samples
    too)."""
    previous = out.child(f"{round_folder(round_index - 1)}/model")
    if round_index > 1 and previous.exists("model.safetensors"):
        segmenter = load_trained(previous, config.segment)
        origin = f"round {round_index - 1} segmenter"
    elif round_index in (POOL_ROUND, 1) and not needs_bootstrap(config):
        segmenter = load_labeller(config.segment, config.classes)
        if not predicts_run_labels(segmenter, config.classes):
            return None, f"fresh {config.segment.model_id} (the labeller has other labels)"
        origin = f"labeller {config.segment.labeller}"
    else:
        return None, f"fresh {config.segment.model_id}"
    segmenter.image_size = config.segment.image_size
    return segmenter, origin


def train(config: RunConfig, out: Storage, round_index: int, parent: Run) -> None:
    """Train round ``round_index``'s segmenter on its kept samples, fine-tuning its starting
    point (nothing when none was kept or the model is finished)."""
    folder = round_folder(round_index)
    kept = read_manifest(out, f"{folder}/kept.jsonl")
    model = out.child(f"{folder}/model")
    if not kept or model.exists("model.safetensors"):
        return
    start, origin = starting_point(config, out, round_index)
    write_json(out, f"{folder}/trained_from.json", {"trained_from": origin})
    with parent.child_with_tag(ROUND_TAG, str(round_index), f"round-{round_index}") as run:
        train_round(config, kept, out, model, run, start)


def close(config: RunConfig, out: Storage, round_index: int, parent: Run) -> dict[str, Any]:
    """Evaluate and log round ``round_index``; write and return its summary."""
    from freemask.run_description import DESCRIPTION_TAG
    from freemask.segment.mlflow_model import save_segmenter_model
    from freemask.tracking import log_dataset_input

    folder = round_folder(round_index)
    if out.exists(f"{folder}/summary.json"):
        return read_json(out, f"{folder}/summary.json")
    kept = read_manifest(out, f"{folder}/kept.jsonl")
    discarded = read_manifest(out, f"{folder}/discarded.jsonl")
    filtered = read_json(out, f"{folder}/filter.json")
    judged = len(kept) + len(discarded)
    # The pool's candidate (round 0) is judged by nobody: its samples carry no agreement.
    agreement = [s.scores[SCORE] for s in [*kept, *discarded] if SCORE in s.scores]
    version = (
        hashlib.sha256(",".join(sorted(s.id for s in kept)).encode()).hexdigest()[:12]
        if kept
        else "empty"
    )
    trained_from = (
        read_json(out, f"{folder}/trained_from.json")["trained_from"]
        if out.exists(f"{folder}/trained_from.json")
        else None
    )
    summary: dict[str, Any] = {
        "round": round_index,
        "judge": judge_of(config, round_index, out),
        "trained_from": trained_from,
        "candidates": judged,
        "kept": len(kept),
        "discarded": len(discarded),
        "kept_fraction": round(len(kept) / max(judged, 1), 6),
        "pool_fraction": round(len(kept) / max(len(pool_of(out)), 1), 6),
        "mean_iou_vs_pseudo": round(float(np.mean(agreement)) if agreement else 0.0, 6),
        **filtered,
        "validation": config.segment.validation or "1-in-10 split of the pool",
        "warnings": [] if config.segment.validation else [SPLIT_WARNING],
        "val_miou": 0.0,
        "per_class_iou": {},
        "dataset_version": version,
        "model_version": None,
    }
    with parent.child_with_tag(ROUND_TAG, str(round_index), f"round-{round_index}") as run:
        run.set_tags({"freemask.dataset_version": version})
        if config.kubeflow.dataset_version:  # a pipeline run: link the round to the KFP run
            run.set_tags({"kfp.run_id": config.kubeflow.dataset_version})
        log_dataset_input(
            run, f"round-{round_index}-kept", f"{out.uri}/{folder}/kept.jsonl", version, len(kept)
        )
        run.log_params(
            {
                "iou_threshold": config.active.iou_threshold,
                "keep_rule": config.active.keep_rule,
                "candidates": judged,
                "judge": summary["judge"],
            }
        )
        model = out.child(f"{folder}/model")
        if kept and model.exists("model.safetensors"):
            segmenter = load_trained(model, config.segment)
            validation, store = validation_of(config, out)
            scores = evaluate(segmenter, validation, store, config.classes)
            summary["val_miou"] = round(float(scores["miou"]), 6)
            summary["per_class_iou"] = scores["per_class_iou"]
            # An MLflow pyfunc model (freemask.segment.mlflow_model): the registry serves it.
            summary["model_version"] = run.log_mlflow_model(
                partial(save_segmenter_model, model, segmenter=segmenter),
                "segmenter",
                registered_name=f"{config.name}-segmenter",
            )
        run.log_metrics(round_metrics(summary), step=round_index)
        if round_index == POOL_ROUND:  # judged by nobody: no scores, no pseudo-labels
            log_kept(run, kept)
        else:
            threshold = config.active.iou_threshold
            log_pictures(run, out, folder, kept, discarded, threshold, round_index)
        run.set_tags({DESCRIPTION_TAG: round_description(summary)})
        summary["run_id"] = run.run_id
    # The parent's charts tell the rounds' story: one point per round (step = round).
    parent.log_metrics(
        {
            "val_miou": summary["val_miou"],
            "kept_fraction": summary["kept_fraction"],
            "kept": summary["kept"],
        },
        step=round_index,
    )
    try:
        # Write-once: a close run twice at the same moment keeps the first summary, whole.
        write_json(out, f"{folder}/summary.json", summary, write_once=True)
    except WriteConflictError:
        return read_json(out, f"{folder}/summary.json")
    return summary


def round_description(summary: dict[str, Any]) -> str:
    """A round's run description (Markdown): who judged, what was kept, how it validated."""
    return (
        f"Round {summary['round']}: judged by {summary['judge']}; kept {summary['kept']} of "
        f"{summary['candidates']} candidates (fraction {summary['kept_fraction']:.3f}, mean "
        f"IoU vs pseudo-label {summary['mean_iou_vs_pseudo']:.3f}); trained from "
        f"{summary['trained_from'] or '-'}; validation mIoU {summary['val_miou']:.3f} "
        f"on {summary['validation']}."
    )


def round_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """A round summary's numbers as MLflow metrics (discard and dispute precision only where
    truth is)."""
    metrics = {
        "kept_fraction": summary["kept_fraction"],
        "pool_fraction": summary["pool_fraction"],
        "mean_iou_vs_pseudo": summary["mean_iou_vs_pseudo"],
        "relabelled": summary["relabelled"],
        "disputed_ignored": summary.get("disputed_ignored", 0),
        "val_miou": summary["val_miou"],
        **{f"val_iou.{name}": value for name, value in summary["per_class_iou"].items()},
    }
    for name in ("discard_precision", "dispute_precision"):
        for key, value in (summary.get(name) or {}).items():
            if value is not None:
                metrics[f"{name}.{key}"] = value
    return metrics


def history(out: Storage, up_to: int | None = None) -> list[dict[str, Any]]:
    """The summaries of the finished rounds 1, 2, ... (up to ``up_to``), in order."""
    summaries, round_index = [], 1
    while out.exists(f"{round_folder(round_index)}/summary.json") and (
        up_to is None or round_index <= up_to
    ):
        summaries.append(read_json(out, f"{round_folder(round_index)}/summary.json"))
        round_index += 1
    return summaries


def finished_candidates(out: Storage) -> list[dict[str, Any]]:
    """The summaries of every finished candidate: the pool (round 0, when closed), then the
    rounds 1, 2, ... in order."""
    pool = f"{round_folder(POOL_ROUND)}/summary.json"
    return ([read_json(out, pool)] if out.exists(pool) else []) + history(out)


def choice(rounds: list[dict[str, Any]], margin: float = 0.0) -> dict[str, Any]:
    """The candidate to ship: the best validation mIoU, the earlier on a tie, and a filtered
    round only when it validates above the pool by more than ``margin`` (a smaller gain is the
    validation set's noise: filtering must earn its place). ``summary`` is it, ``reason`` says
    which and by how much it beat the pool and the runner-up."""
    best = max(rounds, key=lambda summary: summary["val_miou"])
    pool = next((r for r in rounds if r["round"] == POOL_ROUND), None)
    within = None
    if pool is not None and best is not pool and best["val_miou"] - pool["val_miou"] <= margin:
        best, within = pool, best
    others = [r for r in rounds if r is not best]
    said = f"{candidate_name(best['round'])}, validation mIoU {best['val_miou']:.3f}"
    if within is not None:
        gain = within["val_miou"] - pool["val_miou"]
        said += (
            f"; {candidate_name(within['round'])}'s {gain:+.3f} is within "
            f"active.min_miou_gain {margin}"
        )
    elif pool is not None and best is not pool:
        said += f", {best['val_miou'] - pool['val_miou']:+.3f} over the unfiltered pool"
    runner_up = max(others, key=lambda summary: summary["val_miou"], default=None)
    if within is None and runner_up is not None and runner_up is not pool:
        margin_over = best["val_miou"] - runner_up["val_miou"]  # the pool's margin is said once
        said += f", {margin_over:+.3f} over {candidate_name(runner_up['round'])}"
    gain_over_pool = None if pool is None else round(best["val_miou"] - pool["val_miou"], 6)
    return {"summary": best, "reason": said, "gain_over_pool": gain_over_pool}


def finish(
    config: RunConfig, out: Storage, parent: Run, reason: str, seconds: float
) -> StageResult:
    """Make the candidate that validates best (the pool or a round) the dataset; alias its
    model ``best``."""
    rounds = finished_candidates(out)
    if not rounds:
        raise FreemaskError(f"{out.uri}: no finished round to choose from")
    chosen = choice(rounds, config.active.min_miou_gain)
    best = chosen["summary"]
    kept = read_manifest(out, f"{round_folder(best['round'])}/kept.jsonl")
    if config.kubeflow.dataset_version:
        kept = kept_by(kept, config.kubeflow.dataset_version)
    pool = len(pool_of(out))
    floor = max(1, math.ceil(config.active.min_dataset_fraction * pool))
    if len(kept) < floor:
        raise DegenerateResultError(degenerate_reason(out, best, len(kept), pool, floor))
    write_manifest(out, kept)
    if best.get("model_version"):
        parent.alias_model(f"{config.name}-segmenter", "best", best["model_version"])
    parent.set_tags(
        {
            "freemask.best_round": str(best["round"]),
            "freemask.chosen": chosen["reason"],
            "freemask.stop_reason": reason,
        }
    )
    result = StageResult(
        stage=STAGE,
        output=out.uri,
        written=len(kept),
        dropped=pool - len(kept),
        seconds=seconds,
        summary={
            "rounds": rounds,
            "best_round": best["round"],
            "chosen": chosen["reason"],
            "gain_over_pool": chosen["gain_over_pool"],
            "stop_reason": reason,
        },
    )
    write_success(out, SUCCESS, result.to_json())
    return result


def finish_without_rounds(
    config: RunConfig, out: Storage, parent: Run, seconds: float
) -> StageResult | None:
    """With ``active.max_rounds`` 0, ship the pool (round 0, bootstrapped) as the dataset and
    return the result; None when rounds follow."""
    if config.active.max_rounds:
        return None
    reason = "active.max_rounds is 0: the unfiltered pool is the only candidate"
    return finish(config, out, parent, reason, seconds)


def degenerate_reason(out: Storage, best: dict[str, Any], kept: int, pool: int, floor: int) -> str:
    """Why the loop's dataset is too small to ship, with what the rounds saw and what to try."""
    folder = round_folder(best["round"])
    judged = [
        *read_manifest(out, f"{folder}/kept.jsonl"),
        *read_manifest(out, f"{folder}/discarded.jsonl"),
    ]
    scores = sorted({round(s.scores.get(SCORE, 0.0), 3) for s in judged})
    seen = (
        f"every score tied at {scores[0]:.3f}"
        if len(scores) == 1
        else f"scores {scores[0]:.3f} to {scores[-1]:.3f}"
    )
    return (
        f"{out.uri}: the dataset would hold {kept} of the pool's {pool} samples, below the floor "
        f"of {floor} (active.min_dataset_fraction); the best round, {best['round']}, judged by "
        f"{best['judge']}, kept {best['kept']} of {best['candidates']} ({seen}, keep rule "
        f"{best.get('keep_rule_used', '?')}); check the judge (segment.labeller) or lower "
        "active.iou_threshold"
    )


def storage_of(config: RunConfig, outputs: str | None = None) -> Storage:
    """The loop's output prefix: ``outputs`` or ``<workdir>/active``."""
    return open_storage(outputs or f"{config.workdir.rstrip('/')}/active")
