"""CLI commands of the learning stages: the active loop and its steps, and round comparison.

``freemask active`` runs the whole loop; ``pseudo-label``, ``filter``, ``train`` and
``evaluate`` run one step of a round each (the Kubeflow pipeline's tasks call these);
``start-run`` and ``end-run`` open and close a pipeline run's parent MLflow run;
``compare`` prints a pipeline run's rounds side by side, or an experiment's refreshes over time.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from freemask.cli.options import CheckOption, ConfigOption, load_run_config, out, report_check
from freemask.config import load_config
from freemask.errors import FreemaskError
from freemask.records import MANIFEST, read_manifest, serialize_samples
from freemask.redact import redact
from freemask.storage import open_storage, write_json

ROUND_STEPS = ("prepare", "bootstrap", "pseudo-label", "filter", "train", "close")
DataOption = Annotated[
    str, typer.Option("--in", help="Prefix holding the samples and their files.")
]


def register(app: typer.Typer) -> None:
    """Add the learning commands to the ``freemask`` app."""
    app.command("active")(active)
    app.command("pseudo-label")(pseudo_label_command)
    app.command("filter")(filter_command)
    app.command("train")(train_command)
    app.command("evaluate")(evaluate_command)
    app.command("compare")(compare)
    app.command("start-run")(start_run)
    app.command("end-run")(end_run)
    app.command("publish")(publish)
    app.command("round")(round_step)


def active(
    config: ConfigOption,
    inputs: Annotated[
        str | None, typer.Option("--in", help="Samples [default: <workdir>/harmonize].")
    ] = None,
    outputs: Annotated[
        str | None, typer.Option("--out", help="Output [default: <workdir>/active].")
    ] = None,
) -> None:
    """Stage 6-7: the active-learning loop (pseudo-label, filter, retrain, evaluate) to the end."""
    from freemask.active import run_active

    run_config = load_config(config)
    workdir = run_config.workdir.rstrip("/")
    result = run_active(
        run_config, inputs or f"{workdir}/harmonize", outputs or f"{workdir}/active"
    )
    out.print(
        f"active: {result.written} kept of {result.written + result.dropped}; {result.summary['stop_reason']}"
    )


def _usable(data, samples: list, classes: list[str], where: str | None = None) -> list:
    """``samples`` once each fits its files under ``data`` and the run's classes (see
    ``freemask.record_checks``); ManifestError naming ``where`` (the manifest) otherwise."""
    from freemask.record_checks import require_usable

    require_usable(data, samples, classes, where or f"{data.uri}/{MANIFEST}")
    return samples


def _segmenter(run_config, model: str | None):
    from freemask.segment import load_segmenter, load_trained

    if model:
        return load_trained(open_storage(model), run_config.segment)
    return load_segmenter(run_config.segment, run_config.classes, trainable=False)


def pseudo_label_command(
    config: ConfigOption,
    inputs: DataOption,
    outputs: Annotated[str, typer.Option("--out", help="Where the pseudo-label PNGs go.")],
    model: Annotated[
        str | None,
        typer.Option(help="A trained model prefix [default: segment.model_id, pretrained]."),
    ] = None,
) -> None:
    """Pseudo-label every sample with a segmenter (skips labels already written)."""
    from freemask.active import pseudo_label

    run_config = load_config(config)
    data = open_storage(inputs)
    samples = _usable(data, read_manifest(data), run_config.classes)
    pseudo_label(_segmenter(run_config, model), samples, data, open_storage(outputs))
    out.print(f"pseudo-labelled {len(samples)} samples -> {outputs}")


def filter_command(
    config: ConfigOption,
    inputs: DataOption,
    pseudo: Annotated[str, typer.Option(help="The pseudo-label prefix.")],
    outputs: Annotated[str, typer.Option("--out", help="Where kept.jsonl and discarded.jsonl go.")],
    round_index: Annotated[int, typer.Option("--round", min=1, help="The round number.")] = 1,
) -> None:
    """Score samples against their pseudo-labels; write the kept and discarded manifests."""
    from freemask.active import filter_samples

    run_config = load_config(config)
    data = open_storage(inputs)
    selection = filter_samples(
        _usable(data, read_manifest(data), run_config.classes),
        data,
        open_storage(pseudo),
        run_config.active,
        round_index,
    )
    kept, discarded = selection.kept, selection.discarded
    target = open_storage(outputs)
    target.write_bytes("kept.jsonl", serialize_samples(kept))
    target.write_bytes("discarded.jsonl", serialize_samples(discarded))
    fraction = len(kept) / max(1, len(kept) + len(discarded))
    write_json(
        target,
        "filter.json",
        {
            "kept": len(kept),
            "discarded": len(discarded),
            "kept_fraction": fraction,
            "keep_rule_used": selection.rule,
        },
    )
    out.print(f"kept {len(kept)}, discarded {len(discarded)} -> {outputs}")


def train_command(
    config: ConfigOption,
    inputs: DataOption,
    outputs: Annotated[str, typer.Option("--out", help="The model prefix (checkpoints, weights).")],
    samples: Annotated[
        str | None,
        typer.Option(help="A manifest of the samples to train on [default: <in>/manifest.jsonl]."),
    ] = None,
) -> None:
    """Train (or resume training) the segmenter on a manifest's samples."""
    from freemask.segment import load_segmenter, train_segmenter

    run_config = load_config(config)
    data = open_storage(inputs)
    if samples:
        parent, _, name = samples.rstrip("/").rpartition("/")
        chosen = read_manifest(open_storage(parent or "."), name)
    else:
        chosen = read_manifest(data, MANIFEST)
    _usable(data, chosen, run_config.classes, samples)
    segmenter = load_segmenter(run_config.segment, run_config.classes, trainable=True)
    result = train_segmenter(
        segmenter, chosen, data, open_storage(outputs), run_config.segment, seed=run_config.seed
    )
    out.print(f"trained {result.steps} steps (resumed from {result.resumed_from}) -> {outputs}")


def evaluate_command(
    config: ConfigOption,
    model: Annotated[str, typer.Option(help="A trained model prefix.")],
    inputs: DataOption,
) -> None:
    """Print mIoU and per-class IoU of a trained model on a labelled manifest, as JSON."""
    from freemask.segment import evaluate, load_trained

    run_config = load_config(config)
    data = open_storage(inputs)
    scores = evaluate(
        load_trained(open_storage(model), run_config.segment),
        _usable(data, read_manifest(data), run_config.classes),
        data,
        run_config.classes,
    )
    sys.stdout.write(json.dumps(scores, sort_keys=True) + "\n")


def compare(
    run_id: Annotated[
        str | None, typer.Argument(help="The pipeline's parent MLflow run id.")
    ] = None,
    experiment: Annotated[
        str | None,
        typer.Option(
            help="Compare the experiment's pipeline runs (refreshes) over time instead "
            "[default: compare RUN_ID's rounds]."
        ),
    ] = None,
    last: Annotated[int, typer.Option(min=1, help="--experiment: the latest N runs.")] = 10,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            help="MLflow tracking URI [default: the config's store with --config, else "
            "MLFLOW_TRACKING_URI, else the one store under ./runs/].",
        ),
    ] = None,
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            "-c",
            help="A run config: read its tracking.uri, else the sqlite store in its workdir "
            "[default: none].",
        ),
    ] = None,
) -> None:
    """Print a pipeline run's active-learning rounds side by side, or with ``--experiment`` the
    experiment's pipeline runs over time (dataset version, KFP run, kept count, best mIoU).

    Reads only: an MLflow server must answer (5 s at most), a local store must exist; nothing
    is created."""
    if (run_id is None) == (experiment is None):
        raise FreemaskError("compare takes either a RUN_ID or --experiment NAME")
    uri = reading_tracking_uri(tracking_uri, config)
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    if experiment is not None:
        return out.print(refreshes_table(client, experiment, last))
    try:
        parent = client.get_run(run_id)
    except MlflowException:
        where = redact(client.tracking_uri)
        raise FreemaskError(f"MLflow run {run_id!r} not found at {where}") from None
    rounds = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'"
    )
    rounds = sorted(
        (r for r in rounds if r.data.tags.get("freemask.round", "0") != "0"),
        key=lambda r: int(r.data.tags["freemask.round"]),
    )
    if not rounds:
        raise FreemaskError(f"MLflow run {run_id!r} has no active-learning rounds")
    metrics = sorted({key for r in rounds for key in r.data.metrics if key != "train.lr"})
    table = Table(title=f"rounds of {parent.info.run_name} ({run_id})")
    table.add_column("metric")
    for r in rounds:
        table.add_column(f"round {r.data.tags['freemask.round']}", justify="right")
    for key in metrics:
        table.add_row(
            key, *(f"{r.data.metrics[key]:.4f}" if key in r.data.metrics else "-" for r in rounds)
        )
    table.add_row(
        "dataset version", *(r.data.tags.get("freemask.dataset_version", "-") for r in rounds)
    )
    out.print(table)


def reading_tracking_uri(option: str | None, config: str | None) -> str:
    """The tracking store a reading command uses, checked before MLflow is asked anything
    (so an unreachable server is one line in seconds, and nothing is created): ``option``,
    else ``config``'s (its tracking.uri, MLFLOW_TRACKING_URI, or its workdir's sqlite file),
    else MLFLOW_TRACKING_URI, else the one ``runs/*/mlflow.db`` under this folder."""
    import os

    from freemask.preflight import tracking_uri_problem
    from freemask.tracking import resolve_tracking_uri, use_credentials

    if option:
        uri, origin = use_credentials(option), "--tracking-uri"
    elif config:
        run_config = load_config(config)
        tracking = run_config.tracking
        uri = resolve_tracking_uri(
            tracking.uri, run_config.workdir, credentials=tracking.credentials, create=False
        )
        origin = f"{config}: " + ("tracking.uri" if tracking.uri else "the store of workdir")
    elif os.environ.get("MLFLOW_TRACKING_URI"):
        uri, origin = use_credentials(os.environ["MLFLOW_TRACKING_URI"]), "MLFLOW_TRACKING_URI"
    else:
        found = sorted(Path("runs").glob("*/mlflow.db"))
        if len(found) != 1:
            there = f"stores here: {', '.join(map(str, found))}" if found else "store under ./runs/"
            raise FreemaskError(
                f"which MLflow store? {'several' if found else 'no'} {there}; name it with "
                "--config RUN.yaml (its workdir's store), --tracking-uri (a server's URL or "
                "sqlite:///PATH/mlflow.db) or MLFLOW_TRACKING_URI"
            )
        uri, origin = f"sqlite:///{found[0].resolve()}", "the store found"
        print(f"reading the MLflow store {found[0]}", file=sys.stderr)
    problem = tracking_uri_problem(uri, read_only=True, origin=origin)
    if problem:
        raise FreemaskError(problem)
    return uri


def refreshes_table(client, experiment: str, last: int) -> Table:
    """The ``last`` parent runs of ``experiment``, oldest first: when, status, dataset version,
    KFP run id, rounds, the best round's kept count and validation mIoU (what the run kept as
    its dataset), and both against the refresh before."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        where = redact(client.tracking_uri)
        raise FreemaskError(f"MLflow experiment {experiment!r} not found at {where}")
    runs = client.search_runs(
        [found.experiment_id], order_by=["attributes.start_time DESC"], max_results=1000
    )
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags][:last]
    if not parents:
        raise FreemaskError(f"MLflow experiment {experiment!r} has no pipeline runs")
    table = Table(title=f"refreshes of {experiment} (latest {len(parents)})")
    for column in ("started (UTC)", "status", "dataset version", "KFP run"):
        table.add_column(column)
    for column in ("rounds", "kept", "best val mIoU", "best round", "Δ kept", "Δ mIoU"):
        table.add_column(column, justify="right")
    previous: tuple[float, float] | None = None  # the refresh before: (kept, best mIoU)
    for parent in reversed(parents):
        tags, run_id = parent.data.tags, parent.info.run_id
        mious = {m.step: m.value for m in client.get_metric_history(run_id, "val_miou")}
        kept = {m.step: m.value for m in client.get_metric_history(run_id, "kept")}
        best = max(mious, key=lambda step: mious[step]) if mious else None
        started = datetime.fromtimestamp(parent.info.start_time / 1000, tz=UTC)
        table.add_row(
            started.strftime("%Y-%m-%d %H:%M"),
            parent.info.status,
            tags.get("freemask.dataset_version", "-"),
            tags.get("kfp.run_id", "-"),
            str(len(mious)),
            f"{kept[best]:.0f}" if best in kept else "-",
            f"{mious[best]:.4f}" if best is not None else "-",
            str(best) if best is not None else "-",
            *_deltas(previous, (kept[best], mious[best]) if best in kept else None),
        )
        previous = (kept[best], mious[best]) if best in kept else previous
    return table


def _deltas(before: tuple[float, float] | None, now: tuple[float, float] | None) -> list[str]:
    """A refresh's kept count and best mIoU against the refresh before it, as table cells."""
    if before is None or now is None:
        return ["-", "-"]
    return [f"{now[0] - before[0]:+.0f}", f"{now[1] - before[1]:+.4f}"]


def _tracker(run_config):
    from freemask.tracking import MlflowTracker
    from freemask.versions import project_tracking_uri

    return MlflowTracker(project_tracking_uri(run_config), run_config.tracking.experiment)


def check_depth(run_config, depth: int | None) -> None:
    """Refuse ``active.max_rounds`` above the rounds compiled into the pipeline (``depth``), or 0
    in a pipeline compiled with rounds: its round 1 runs whatever the run's setting."""
    problem = depth_problem(run_config.active.max_rounds, depth)
    if problem:
        raise FreemaskError(problem)


def depth_problem(max_rounds: int, depth: int | None) -> str | None:
    """Why a run of ``max_rounds`` cannot run in a pipeline compiled with ``depth`` rounds, or
    None when it can (or ``depth`` is unknown)."""
    if depth is None:
        return None
    if max_rounds > depth:
        return (
            f"active.max_rounds={max_rounds} is above the {depth} rounds compiled into the "
            "pipeline; recompile with a larger active.max_rounds"
        )
    if max_rounds == 0 and depth > 0:
        return (
            f"active.max_rounds=0 in a pipeline compiled with {depth} rounds, whose round 1 runs "
            "whatever the run's setting; compile with active.max_rounds: 0 to ship the pool"
        )
    return None


def start_run(
    config: ConfigOption,
    run_id_file: Annotated[Path, typer.Option(help="Where to write the new run's id.")],
    depth: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Rounds compiled into the pipeline [default: unchecked against "
            "active.max_rounds].",
        ),
    ] = None,
    mlflow_link: Annotated[
        Path | None,
        typer.Option(
            help="Where to write a Markdown link to the MLflow run (a KFP artifact) "
            "[default: none written]."
        ),
    ] = None,
    check: CheckOption = False,
) -> None:
    """Create the pipeline's parent MLflow run (rounds nest under it); write its id (and a
    Markdown link to it), and keep the run's resolved config as ``<workdir>/config.yaml``."""
    import yaml

    from freemask.run_description import DESCRIPTION_TAG, describe_run, source_tags
    from freemask.tracking import run_page_url

    run_config = load_run_config(config)
    check_depth(run_config, depth)
    if check:
        return report_check("start-run", run_config, run_id_file=run_id_file)
    version = run_config.kubeflow.dataset_version
    tags = {"freemask.runner": "kubeflow", "freemask.dataset_version": version or "-"}
    if version:
        tags["kfp.run_id"] = version
    snapshot = yaml.safe_dump(run_config.model_dump(mode="json"), sort_keys=False)
    open_storage(run_config.workdir).write_bytes("config.yaml", redact(snapshot).encode())
    tracker = _tracker(run_config)
    run = tracker.start_run(run_config.name, tags=tags)
    run.log_params(run_config.model_dump(mode="json"))
    run.set_tags(
        {**source_tags("freemask pipeline", "JOB"), DESCRIPTION_TAG: describe_run(run_config)}
    )
    run_id_file.parent.mkdir(parents=True, exist_ok=True)
    run_id_file.write_text(run.run_id)
    url = run_page_url(run_config.tracking.ui_url, tracker.client.tracking_uri, run)
    shown = f"[{run_config.name}: {run.run_id}]({url})" if url else f"`{run.run_id}`"
    if mlflow_link is not None:
        mlflow_link.parent.mkdir(parents=True, exist_ok=True)
        mlflow_link.write_text(
            f"# MLflow run\n\n{shown} in `{redact(tracker.client.tracking_uri)}`\n\n"
            f"Dataset version `{version or '-'}` under `{run_config.workdir}`.\n"
        )
    out.print(f"MLflow run {run.run_id}: {redact(url or tracker.client.tracking_uri)}")


# KFP's PipelineTaskFinalStatus.state -> MLflow run status, for the states that end a run.
FINAL_STATES = {
    "COMPLETE": "FINISHED",
    "SUCCEEDED": "FINISHED",
    "CANCELED": "KILLED",
    "CANCELLED": "KILLED",
    "FAILED": "FAILED",
    "SYSTEM_ERROR": "FAILED",
}


def final_state(status: str) -> str:
    """The ``state`` of a KFP ``PipelineTaskFinalStatus`` JSON (the open-source driver's
    COMPLETE, FAILED, CANCELED, ...; kfp.local's SUCCEEDED), upper case; FreemaskError if bad."""
    try:
        return str(json.loads(status)["state"]).upper()
    except (ValueError, TypeError, KeyError):
        raise FreemaskError(f"--status: not a KFP task final status: {status[:80]!r}") from None


def final_status(state: str, published: bool) -> str:
    """The MLflow status a run ends with. A state that ends a run decides it; any other (the
    RUNNING that backends 2.14 to 2.16 pass from a pipeline with loops, conditions or nested
    pipelines, and 2.17 when a condition not taken ends the loop early) says nothing, and the
    run's own evidence decides: FINISHED when its publish task completed, FAILED otherwise."""
    if state in FINAL_STATES:
        return FINAL_STATES[state]
    return "FINISHED" if published else "FAILED"


def end_run(
    config: ConfigOption,
    status: Annotated[str, typer.Option(help="KFP's PipelineTaskFinalStatus as JSON.")],
    check: CheckOption = False,
) -> None:
    """Exit handler: end this KFP run's parent MLflow run (found by its ``kfp.run_id`` tag)
    FINISHED, or FAILED (KILLED) when the pipeline failed (was cancelled); when the backend
    passes a state that ends nothing (RUNNING), by whether the publish task completed; safe to
    re-run."""
    from freemask.publish import is_published

    run_config = load_run_config(config)
    state = final_state(status)
    version = run_config.kubeflow.dataset_version
    if not version:
        raise FreemaskError("end-run: kubeflow.dataset_version (the KFP run id) is not set")
    if check:
        return report_check("end-run", run_config, status=state)
    published = state not in FINAL_STATES and is_published(open_storage(run_config.workdir))
    mlflow_status = final_status(state, published)
    tracker = _tracker(run_config)
    found = tracker.client.search_runs(
        [tracker.experiment_id], filter_string=f"tags.`kfp.run_id` = '{version}'"
    )
    parents = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    for parent in parents:
        tracker.client.set_tag(parent.info.run_id, "kfp.final_status", mlflow_status)
        tracker.client.set_tag(parent.info.run_id, "kfp.exit_handler_state", state)
        tracker.client.set_terminated(parent.info.run_id, status=mlflow_status)
    out.print(f"KFP run {version}: {len(parents)} MLflow run(s) ended {mlflow_status}")


def publish(
    config: ConfigOption,
    parent_run_id: Annotated[
        str,
        typer.Option(help="The parent MLflow run, which gets the report [default: '', none]."),
    ] = "",
    report_html: Annotated[
        Path | None,
        typer.Option(
            help="Where to copy the report's page, index.html (a KFP HTML artifact) "
            "[default: not copied]."
        ),
    ] = None,
    check: CheckOption = False,
) -> None:
    """The end of a run: export the final dataset (COCO, VOC) under <workdir>/export and write
    the run report under <workdir>/report, as `freemask run` does, then end the parent MLflow
    run FINISHED (the exit handler only marks failures); safe to re-run."""
    from freemask.local.report import REPORT
    from freemask.publish import log_report, publish_run
    from freemask.refresh_summary import finish_refresh
    from freemask.report_page import PAGE
    from freemask.tracking import run_page_url

    run_config = load_run_config(config)
    if check:
        return report_check("publish", run_config, report_html=report_html)
    workdir, version = open_storage(run_config.workdir), run_config.kubeflow.dataset_version
    top = open_storage(load_config(config).workdir)  # the versions' parent, with LATEST
    tracker = _tracker(run_config) if parent_run_id else None
    url = None
    if tracker is not None:
        run = tracker.resume_run(parent_run_id)
        url = run_page_url(run_config.tracking.ui_url, tracker.client.tracking_uri, run)
    published = publish_run(run_config, workdir, url)
    if tracker is not None:
        log_report(run, workdir, published.report["files"])
        # The run's last real task ended well: its outcome needs no exit handler's state.
        tracker.client.set_tag(parent_run_id, "kfp.final_status", "FINISHED")
        tracker.client.set_terminated(parent_run_id, status="FINISHED")
    if report_html is not None:
        report_html.parent.mkdir(parents=True, exist_ok=True)
        report_html.write_bytes(workdir.child(REPORT).read_bytes(PAGE))
    out.print(f"published {json.dumps(published.exports)} under {workdir.uri}")
    if version:  # a pipeline run: its summary, then it becomes LATEST (its model too), retention
        client = tracker.client if tracker is not None else None
        model = f"{run_config.name}-segmenter"
        keep = run_config.versions.keep
        latest, deleted = finish_refresh(top, version, keep, client, parent_run_id, model)
        out.print(f"LATEST: {latest}" + (f"; deleted {', '.join(deleted)}" if deleted else ""))


def round_step(
    step: Annotated[
        str, typer.Argument(help="prepare, bootstrap, pseudo-label, filter, train or close.")
    ],
    config: ConfigOption,
    round_index: Annotated[int, typer.Option("--round", min=0, help="The round number.")] = 1,
    parent_run_id: Annotated[
        str, typer.Option(help="The parent MLflow run [default: '', none].")
    ] = "",
    max_rounds: Annotated[
        int | None,
        typer.Option(help="Runtime cap on rounds (close) [default: active.max_rounds]."),
    ] = None,
    depth: Annotated[
        int | None,
        typer.Option(help="Rounds compiled into the pipeline (close) [default: unbounded]."),
    ] = None,
    decision_file: Annotated[
        Path | None,
        typer.Option(
            help="close: write 'true' if another round should run, else 'false' "
            "[default: not written]."
        ),
    ] = None,
    inputs: Annotated[
        str | None, typer.Option("--in", help="prepare: samples [default: <workdir>/harmonize].")
    ] = None,
    check: CheckOption = False,
) -> None:
    """One step of one active-learning round, on <workdir>/active (what Kubeflow tasks run)."""
    import time

    if step not in ROUND_STEPS:
        raise FreemaskError(f"round step {step!r}: expected one of {', '.join(ROUND_STEPS)}")
    run_config = load_run_config(config)
    check_depth(run_config, depth)
    if depth is not None and round_index > depth:
        raise FreemaskError(f"--round {round_index}: the pipeline has only {depth} rounds")
    if check:
        return report_check(f"round {step}", run_config, round=str(round_index))
    from freemask.active import should_continue, steps
    from freemask.active.settings import guard_settings
    from freemask.tracking import NullRun

    out_storage = steps.storage_of(run_config)
    guard_settings(run_config, out_storage)
    parent = _tracker(run_config).resume_run(parent_run_id) if parent_run_id else NullRun()
    if step == "prepare":
        steps.prepare(
            run_config, inputs or f"{run_config.workdir.rstrip('/')}/harmonize", out_storage
        )
    elif step == "bootstrap":
        started = time.monotonic()
        steps.bootstrap(run_config, out_storage, parent)
        seconds = time.monotonic() - started
        if steps.finish_without_rounds(run_config, out_storage, parent, seconds) is not None:
            parent.finish()  # no round follows: the pool is the dataset
    elif step == "pseudo-label":
        steps.pseudo(run_config, out_storage, round_index, parent)
    elif step == "filter":
        steps.select(run_config, out_storage, round_index)
    elif step == "train":
        steps.train(run_config, out_storage, round_index, parent)
    else:
        started = time.monotonic()
        steps.close(run_config, out_storage, round_index, parent)
        limits = (max_rounds, depth, run_config.active.max_rounds)
        cap = min(value for value in limits if value is not None)
        rules = run_config.active.model_copy(update={"max_rounds": cap})
        go_on, reason = should_continue(steps.history(out_storage, round_index), rules)
        if not go_on:
            steps.finish(run_config, out_storage, parent, reason, time.monotonic() - started)
            parent.finish()
        if decision_file:
            decision_file.parent.mkdir(parents=True, exist_ok=True)
            decision_file.write_text("true" if go_on else "false")
        out.print(f"round {round_index}: {'continue' if go_on else 'stop'} ({reason})")
