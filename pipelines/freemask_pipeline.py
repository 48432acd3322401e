"""The freemask Kubeflow pipeline: every stage a task, active-learning rounds as sub-pipelines.

``build_pipeline(tasks, settings)`` wires the tasks, the container components in
``components/`` (their command lines from ``freemask.commands.task_argv``); the tests run the
compiled pipeline in the built images (tests/kubeflow/test_container_run.py). The data flows generate -> refine -> compose (with
relate's backgrounds) -> harmonize -> the active-learning rounds -> publish (the COCO, VOC and Hugging Face
exports and the run report, as ``freemask run`` ends).
KFP v2 cannot call a pipeline from itself at run time, so rounds are unrolled at compile time:
the sub-pipeline of round k runs the round and, under ``dsl.If`` on its close step's decision,
calls the sub-pipeline of round k+1, down to ``active.max_rounds`` from the compile-time config
(the depth). A run's ``active.max_rounds`` above the depth, or 0 under a depth above 0, is
refused by ``freemask submit`` and, at run time, by the first task. At depth 0 (the default:
no filtering round) bootstrap ships the pool and publish follows it. Only parameters cross
round boundaries.

The config file at ``config_uri`` is the truth: the other parameters default to "" (unset) and
override it only when a run sets them. Every task gets the KFP run id as its dataset version, so
each run writes under its own ``<workdir>/versions/<run id>``; caching is off for every task, as
every task writes to MLflow or to shared storage (a cache hit would skip a refresh).
The run's tasks form one nested pipeline (``freemask-body``) inside a ``dsl.ExitHandler``, so
the handler's group holds no loop. ``publish``, the last real task, ends the parent MLflow run
FINISHED itself; the exit task (``end-run``) ends it FAILED or KILLED when the run failed or
was cancelled (its ``PipelineTaskFinalStatus``), and decides by publish's marker when the
backend passes a state that ends nothing (RUNNING: backends 2.14 to 2.16 always, 2.17 when the
loop stops before its last compiled round). Tasks also output
KFP artifacts for the UI: a Markdown link to the MLflow run, a Dataset per joined stage, relate,
the pool and each round's kept set, a Model per trained network, Metrics per round, and the
exported dataset with the report's page (HTML).
Compile: ``python -m pipelines.freemask_pipeline --config configs/default.yaml --out FILE``.
"""

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfp import compiler, dsl

from freemask.commands import gpu_tasks
from freemask.config import KubeflowConfig, RunConfig, SecretEnv, load_config
from freemask.errors import FreemaskError
from pipelines.ir import lint, load_ir

SHM_VOLUME = "dshm"
MODEL_CACHE_VOLUME = "model-cache"
MODEL_CACHE_PATH = "/var/cache/freemask"
# The tasks that load a model (their commands' stages read a model id or weights).
MODEL_TASKS = frozenset(
    {
        "generate",
        "backgrounds",
        "relate",
        "compose",
        "refine-train",
        "refine",
        "harmonize",
        "bootstrap",
        "pseudo-label",
        "train",
        "close",
    }
)
# The KFP run id; the open-source driver substitutes it only as a task input's whole constant
# value (backend/src/v2/driver/resolve.go), so tasks take it as an input, never inside a string.
RUN_ID = dsl.PIPELINE_JOB_ID_PLACEHOLDER
# The runtime parameters every task takes: each overrides the config file's value when set.
OVERRIDES = ("classes", "images_per_class", "iou_threshold", "max_rounds", "tracking_uri")


def run_overrides(parameters: dict[str, Any]) -> dict[str, Any]:
    """The tasks' ``config`` (the pipeline's ``config_uri``) and override inputs, from a
    pipeline function's parameters."""
    config = parameters["config_uri"] if "config_uri" in parameters else parameters["config"]
    return {"config": config, **{name: parameters[name] for name in OVERRIDES}}


@dataclass(frozen=True)
class Tasks:
    """The component for every task of the pipeline."""

    start_run: Any
    generate: Any
    join: Any
    relate: Any
    backgrounds: Any
    compose: Any
    refine_train: Any
    refine: Any
    harmonize: Any
    prepare: Any
    bootstrap: Any
    pseudo_label: Any
    filter_round: Any
    train: Any
    close: Any
    publish: Any
    end_run: Any


def production_tasks() -> Tasks:
    """The container components."""
    import components

    return Tasks(**{name: getattr(components, name) for name in Tasks.__dataclass_fields__})


def task_settings(config: RunConfig) -> KubeflowConfig:
    """The Kubernetes settings of every task: ``kubeflow``'s, plus the hub token's Secret as
    ``HF_TOKEN`` when ``models.hf_token_secret`` names one, and the MLflow server's user and
    password as ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` (which MLflow's client
    reads) when ``tracking.credentials_secret`` names one: references, never the values."""
    models, tracking = config.models, config.tracking
    secrets = list(config.kubeflow.secrets)
    if models.hf_token_secret:
        secrets.append(
            SecretEnv(secret=models.hf_token_secret, key=models.hf_token_key, env="HF_TOKEN")
        )
    if tracking.credentials_secret:
        secrets += [
            SecretEnv(secret=tracking.credentials_secret, key=key, env=env)
            for key, env in (
                (tracking.username_key, "MLFLOW_TRACKING_USERNAME"),
                (tracking.password_key, "MLFLOW_TRACKING_PASSWORD"),
            )
        ]
    if len(secrets) == len(config.kubeflow.secrets):
        return config.kubeflow
    return config.kubeflow.model_copy(update={"secrets": secrets})


class Scheduling(KubeflowConfig):
    """The tasks' Kubernetes settings plus which tasks get a GPU (``gpu_tasks``: derived from
    the stages' settings at compile time)."""

    gpu_tasks: frozenset[str]

    @classmethod
    def of(cls, config: RunConfig, settings: KubeflowConfig) -> "Scheduling":
        return cls(**dict(settings), gpu_tasks=gpu_tasks(config))


def configure(task: Any, name: str, settings: Scheduling) -> Any:
    """Caching off, and for the cluster: retries, resource requests and limits, secrets and,
    for GPU tasks, the accelerator, node pool and /dev/shm."""
    from kfp import kubernetes

    task.set_caching_options(False)

    task.set_retry(num_retries=settings.retries, backoff_duration="30s", backoff_factor=2.0)
    task.set_cpu_request(settings.cpu_request).set_cpu_limit(settings.cpu_limit)
    for secret in settings.secrets:
        kubernetes.use_secret_as_env(task, secret.secret, {secret.key: secret.env})
    if name in MODEL_TASKS:
        # Models are fetched once per pod into a volume, not into the container's layer.
        kubernetes.empty_dir_mount(
            task, MODEL_CACHE_VOLUME, MODEL_CACHE_PATH, size_limit=settings.model_cache_size
        )
        task.set_env_variable("FREEMASK_MODEL_CACHE", f"{MODEL_CACHE_PATH}/models")
        task.set_env_variable("HF_HOME", f"{MODEL_CACHE_PATH}/huggingface")
    if name not in settings.gpu_tasks:
        task.set_memory_request(settings.memory_request).set_memory_limit(settings.memory_limit)
        return task
    task.set_memory_request(settings.gpu_memory_request)
    task.set_memory_limit(settings.gpu_memory_limit)
    task.set_accelerator_type(settings.accelerator_type)
    task.set_accelerator_limit(settings.accelerator_count)
    for key, value in settings.gpu_node_selector.items():
        kubernetes.add_node_selector(task, key, value)
    for toleration in settings.gpu_tolerations:
        kubernetes.add_toleration(
            task,
            key=toleration.key,
            operator=toleration.operator,
            value=toleration.value,
            effect=toleration.effect,
        )
    kubernetes.empty_dir_mount(
        task, SHM_VOLUME, "/dev/shm", medium="Memory", size_limit=settings.shm_size
    )
    return task


def build_rounds(tasks: Tasks, depth: int, settings: Scheduling) -> Any:
    """The sub-pipeline of round 1; round k calls round k+1 under a condition on its close
    step's decision, down to ``depth`` (built deepest first: a pipeline is defined before the
    one that calls it); None for depth 0."""
    next_round = None
    for round_index in range(depth, 0, -1):
        next_round = _round_pipeline(tasks, round_index, settings, depth, next_round)
    return next_round


def _round_pipeline(
    tasks: Tasks, round_index: int, settings: Scheduling, depth: int, next_round: Any
) -> Any:
    @dsl.pipeline(name=f"active-round-{round_index}")
    def active_round(
        config: str,
        classes: str,
        images_per_class: str,
        iou_threshold: str,
        max_rounds: str,
        tracking_uri: str,
        parent_run_id: str,
    ):
        overrides = run_overrides(locals())
        common = {
            **overrides,
            "dataset_version": RUN_ID,
            "round_index": round_index,
            "parent_run_id": parent_run_id,
        }
        pseudo = configure(tasks.pseudo_label(**common), "pseudo-label", settings)
        selected = configure(tasks.filter_round(**common).after(pseudo), "filter", settings)
        trained = configure(tasks.train(**common).after(selected), "train", settings)
        closed = configure(tasks.close(**common, depth=depth).after(trained), "close", settings)
        if next_round is not None:
            with dsl.If(
                closed.outputs["decision"] == "true", name=f"continue-after-round-{round_index}"
            ):
                next_round(**overrides, parent_run_id=parent_run_id).set_caching_options(False)

    return active_round


def build_pipeline(tasks: Tasks, config: RunConfig):
    """The whole pipeline for ``config``'s compile-time settings (shards, parallelism, rounds,
    Kubernetes scheduling); the runtime parameters other than ``config_uri`` default to ""
    (the file at ``config_uri`` decides) and override it when set."""
    settings = Scheduling.of(config, task_settings(config))
    shards = list(range(config.kubeflow.shards))
    parallelism = config.kubeflow.parallelism
    depth = config.active.max_rounds
    first_round = build_rounds(tasks, depth, settings)

    @dsl.pipeline(name="freemask-body")
    def body(
        config: str,
        classes: str,
        images_per_class: str,
        iou_threshold: str,
        max_rounds: str,
        tracking_uri: str,
    ):
        """Every task of the run but the exit handler's: a pipeline of its own, so that the
        exit handler's group holds one task and no loop (a ParallelFor directly inside an
        ExitHandler fails at run time on backend 2.14.3: kubeflow/pipelines#12390)."""
        # Only pipeline parameters, constants and loop items enter ParallelFor bodies (task
        # outputs there are not resolved by every runner).
        overrides = run_overrides(locals())
        runtime = {**overrides, "dataset_version": RUN_ID}
        started = configure(tasks.start_run(**runtime, depth=depth), "start-run", settings)

        def sharded(stage: str, *after: Any) -> Any:
            """The stage over every shard (at most ``parallelism`` at once), then its join."""
            with dsl.ParallelFor(shards, parallelism=parallelism, name=f"{stage}-shards") as shard:
                task = getattr(tasks, stage)(**runtime, shard=shard, shards=len(shards))
                configure(task.after(started, *after), stage, settings)
            joined = tasks.join(**runtime, stage=stage, shards=len(shards)).after(task)
            return configure(joined, "join", settings)

        generated = sharded("generate")
        refine_trained = configure(
            tasks.refine_train(**runtime).after(generated), "refine-train", settings
        )
        refined = sharded("refine", refine_trained)
        related = configure(tasks.relate(**runtime).after(started), "relate", settings)
        drawn = sharded("backgrounds", related)
        composed = sharded("compose", refined, drawn)
        harmonized = sharded("harmonize", composed)
        run_id = started.outputs["run_id"]
        prepared = configure(
            tasks.prepare(**runtime, parent_run_id=run_id).after(harmonized), "prepare", settings
        )
        booted = configure(
            tasks.bootstrap(**runtime, parent_run_id=run_id).after(prepared), "bootstrap", settings
        )
        last = booted  # with no rounds compiled (depth 0) bootstrap ships the pool
        if first_round is not None:
            last = first_round(**overrides, parent_run_id=run_id).after(booted)
            last.set_caching_options(False)
        configure(tasks.publish(**runtime, parent_run_id=run_id).after(last), "publish", settings)

    @dsl.pipeline(name="freemask", description="Synthetic segmentation data with no manual labels.")
    def freemask(
        config_uri: str,
        classes: str = "",
        images_per_class: str = "",
        iou_threshold: str = "",
        max_rounds: str = "",
        tracking_uri: str = "",
    ):
        overrides = run_overrides(locals())
        ended = configure(tasks.end_run(**overrides, dataset_version=RUN_ID), "end-run", settings)
        with dsl.ExitHandler(ended, name="freemask-run"):
            body(**overrides).set_caching_options(False)

    return freemask


def compile_pipeline(config: RunConfig, out: str | Path) -> Path:
    """Compile the production pipeline to Kubeflow IR YAML at ``out``; refuse one that the IR
    lint finds problems in (FreemaskError listing them)."""
    if config.tracking.credentials is not None:
        raise FreemaskError(
            "tracking.uri holds a user and password: a pipeline's tasks take them from the "
            "Kubernetes Secret named by tracking.credentials_secret; give the uri without them"
        )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(production_tasks(), config), str(out))
    problems = lint(*load_ir(out))
    if problems:
        raise FreemaskError(f"{out}: the compiled pipeline has problems:\n" + "\n".join(problems))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Compile the freemask Kubeflow pipeline.")
    parser.add_argument("--config", default="configs/default.yaml", help="compile-time settings")
    parser.add_argument("--out", default="build/freemask_pipeline.yaml")
    args = parser.parse_args(argv)
    print(compile_pipeline(load_config(args.config), args.out))


if __name__ == "__main__":
    main()
