"""Host-run twins of the container components, so that kfp.local (whose SubprocessRunner runs
only Python components) can execute the real pipeline in tests. Each twin builds its command line
with ``freemask.commands.task_argv``, the very function the container components call, from its
own inputs; test_ir_resolution proves those argument lists equal the ones the open-source KFP
driver resolves from the compiled IR for the same inputs. ``host_runtime.run_twin`` plays the
launcher's part for output artifacts (the twins import it in kfp.local's subprocesses, so they
need this folder on PYTHONPATH; test_local_run sets it)."""

from typing import NamedTuple

from kfp import dsl

# Unused by the subprocess runner (it runs this machine's Python), but named explicitly.
HOST_IMAGE = "python:3.11"


@dsl.component(base_image=HOST_IMAGE)
def start_run(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    depth: int,
    mlflow_run: dsl.Output[dsl.Markdown],
) -> NamedTuple("StartOutputs", run_id=str):
    # Returned rather than written to an output path: kfp.local resolves return values across
    # nested pipelines. The command line is the container's, with a local output file.
    values = dict(locals())
    import pathlib
    import tempfile

    from host_runtime import StartOutputs, run_twin

    values["run_id"] = str(pathlib.Path(tempfile.mkdtemp()) / "run_id")
    values["mlflow_run"] = mlflow_run.path
    run_twin("start-run", values)
    return StartOutputs(pathlib.Path(values["run_id"]).read_text())


@dsl.component(base_image=HOST_IMAGE)
def end_run(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    status: dsl.PipelineTaskFinalStatus,
):
    values = dict(locals())
    import json

    from host_runtime import run_twin

    # The open-source driver's JSON for the final status (kfp_driver.py, rule 6).
    final = {
        "error": {},
        "pipelineJobResourceName": status.pipeline_job_resource_name,
        "pipelineTaskName": status.pipeline_task_name,
        "state": status.state,
    }
    values["status"] = json.dumps(final, separators=(",", ":"), sort_keys=True)
    run_twin("end-run", values)


@dsl.component(base_image=HOST_IMAGE)
def generate(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    shard: int,
    shards: int,
):
    values = dict(locals())
    from host_runtime import run_twin

    run_twin("generate", values)


@dsl.component(base_image=HOST_IMAGE)
def refine(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    shard: int,
    shards: int,
):
    values = dict(locals())
    from host_runtime import run_twin

    run_twin("refine", values)


@dsl.component(base_image=HOST_IMAGE)
def backgrounds(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    shard: int,
    shards: int,
):
    values = dict(locals())
    from host_runtime import run_twin

    run_twin("backgrounds", values)


@dsl.component(base_image=HOST_IMAGE)
def compose(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    shard: int,
    shards: int,
):
    values = dict(locals())
    from host_runtime import run_twin

    run_twin("compose", values)


@dsl.component(base_image=HOST_IMAGE)
def harmonize(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    shard: int,
    shards: int,
):
    values = dict(locals())
    from host_runtime import run_twin

    run_twin("harmonize", values)


@dsl.component(base_image=HOST_IMAGE)
def relate(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    relations: dsl.Output[dsl.Dataset],
):
    values = dict(locals())
    from host_runtime import run_twin

    run_twin("relate", values, {"relations": relations})


@dsl.component(base_image=HOST_IMAGE)
def refine_train(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    affinity_net: dsl.Output[dsl.Model],
):
    values = dict(locals())
    from host_runtime import run_twin

    run_twin("refine-train", values, {"affinity_net": affinity_net})


@dsl.component(base_image=HOST_IMAGE)
def join(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    stage: str,
    shards: int,
    dataset: dsl.Output[dsl.Dataset],
):
    values = dict(locals())
    from host_runtime import run_twin

    run_twin("join", values, {"dataset": dataset})


@dsl.component(base_image=HOST_IMAGE)
def prepare(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    parent_run_id: str,
    pool: dsl.Output[dsl.Dataset],
):
    values = dict(locals())
    from host_runtime import run_twin

    run_twin("prepare", values, {"pool": pool})


@dsl.component(base_image=HOST_IMAGE)
def bootstrap(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    parent_run_id: str,
):
    values = dict(locals())
    from host_runtime import run_twin

    run_twin("bootstrap", values)


@dsl.component(base_image=HOST_IMAGE)
def pseudo_label(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    round_index: int,
    parent_run_id: str,
):
    values = dict(locals())
    from host_runtime import run_twin

    run_twin("pseudo-label", values)


@dsl.component(base_image=HOST_IMAGE)
def filter_round(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    round_index: int,
    parent_run_id: str,
    kept: dsl.Output[dsl.Dataset],
):
    values = dict(locals())
    from host_runtime import run_twin

    run_twin("filter", values, {"kept": kept})


@dsl.component(base_image=HOST_IMAGE)
def train(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    round_index: int,
    parent_run_id: str,
    segmenter: dsl.Output[dsl.Model],
):
    values = dict(locals())
    from host_runtime import run_twin

    run_twin("train", values, {"segmenter": segmenter})


@dsl.component(base_image=HOST_IMAGE)
def close(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    round_index: int,
    parent_run_id: str,
    depth: int,
    round_metrics: dsl.Output[dsl.Metrics],
) -> str:
    # A plain return value: kfp.local evaluates dsl.If only on one (not on a NamedTuple field).
    values = dict(locals())
    import pathlib
    import tempfile

    from host_runtime import run_twin

    values["decision"] = str(pathlib.Path(tempfile.mkdtemp()) / "decision")
    run_twin("close", values, {"round_metrics": round_metrics})
    return pathlib.Path(values["decision"]).read_text()
