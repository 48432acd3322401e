"""The compiled pipeline run in its built images: kfp.local's DockerRunner executes the real
component specs (each task's ``image``, ``command`` and ``args`` from the IR) in the images that
``make images`` built, as the images' user, with what a cluster gives a task: the work directory
on gs:// (the GCS emulator, over the host network), MLflow as a server on 127.0.0.1 and the model
cache mounted where the pipeline mounts its volume.

Run by ``make images-check`` (marker ``containers``; it needs a Docker engine and the images).
``FREEMASK_CHECK_CONFIG`` names the run config (default: a tiny one, two classes and two
rounds); ``make images-check`` runs configs/demo.yaml. ``FREEMASK_IMAGES_LOCK`` (default
images/images.lock.json, when it exists; empty: none) pins the images by digest. CI builds the
cpu and client images and runs their part (``-k "imports and (cpu or client)"``).

Where kfp.local differs from a cluster, the runner is set up as Kubernetes runs a pod (see
``docker_runner``); what it cannot do is listed in the README (Containers, "kfp.local and a
cluster").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from test_images import family_commands

from freemask.records import read_manifest
from freemask.storage import open_storage
from images.imports import command_imports
from pipelines.freemask_pipeline import MODEL_CACHE_PATH
from pipelines.ir import executor_task, load_ir

pytestmark = [
    pytest.mark.slow,
    pytest.mark.containers,
    # kfp.local says, per task, that it ignores resource requests and limits (a cluster's).
    pytest.mark.filterwarnings("ignore:Task .* no effect in the current local runner:UserWarning"),
]

ROOT = Path(__file__).resolve().parents[2]
IMAGES = json.loads((ROOT / "components" / "images.json").read_text())
FREEMASK = str(Path(sys.executable).with_name("freemask"))  # this environment's CLI
IMAGE_USER = "10001"  # images/Dockerfile: USER 10001
TINY = {
    "name": "images-check",
    "classes": ["ball", "box"],
    "generate": {
        "model_id": "builtin:tiny-sd",
        "reject_implausible": False,  # random weights: meaningless attention
        "images_per_class": 2,
        "height": 64,
        "width": 64,
        "num_inference_steps": 1,
    },
    "compose": {"images": 4, "backgrounds_per_scene": 1, "objects_per_image": [1, 2]},
    "refine": {"method": "guided_filter"},
    "segment": {
        "model_id": "builtin:tiny-mask2former",
        "image_size": 64,
        "train_steps": 2,
        "checkpoint_every": 2,
    },
    # Percentile keeps the better half even when a judge's scores tie: round 2 always runs.
    "active": {"max_rounds": 2, "keep_rule": "percentile", "iou_threshold": 0.0},
    "kubeflow": {"shards": 2, "parallelism": 2},
}


def docker(*args: str) -> str:
    return subprocess.run(
        ["docker", *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def check_config() -> tuple[dict, Path | None]:
    """The run config's settings and the file they came from (None for the tiny one)."""
    chosen = os.environ.get("FREEMASK_CHECK_CONFIG")
    if not chosen:
        return json.loads(json.dumps(TINY)), None
    path = (ROOT / chosen).resolve()
    return yaml.safe_load(path.read_text()), path


def images_lock() -> Path | None:
    """FREEMASK_IMAGES_LOCK's file; set but empty: none (images by tag); unset: the repository's
    lock when there is one."""
    chosen = os.environ.get("FREEMASK_IMAGES_LOCK")
    if chosen is not None:
        return Path(chosen) if chosen else None
    default = ROOT / "images" / "images.lock.json"
    return default if default.exists() else None


def docker_runner(gcs_url: str, model_cache: Path):
    """kfp.local's DockerRunner set up the way Kubernetes runs a pipeline pod.

    - ``entrypoint=[""]``: a container's ``command`` replaces the image's ENTRYPOINT in
      Kubernetes (Pod ``containers[].command``, "Define a Command and Arguments for a
      Container"), and the KFP argo compiler puts the component's command there; kfp.local passes
      it as Docker's CMD instead, which would run ``freemask freemask ...``. An empty entrypoint
      gives Kubernetes' behaviour.
    - ``network_mode="host"``: the pod reaches GCS and MLflow by address; here they listen on
      127.0.0.1 (the engine from images/engine.sh has no bridge).
    - the model cache: the pipeline mounts an emptyDir at MODEL_CACHE_PATH in every task that
      loads a model (kfp.local ignores Kubernetes platform settings); a host folder owned by the
      image's user plays it.
    - no ``user``: the tasks run as the image's own USER, as a pod with no securityContext does.
    """
    from docker.types import Mount
    from kfp import local

    return local.DockerRunner(
        entrypoint=[""],
        network_mode="host",
        environment={"STORAGE_EMULATOR_HOST": gcs_url, "GOOGLE_CLOUD_PROJECT": "images-check"},
        mounts=[Mount(target=MODEL_CACHE_PATH, source=str(model_cache), type="bind")],
    )


def family_image(family: str) -> str:
    """The family's image: by digest from the lock when there is one, else by tag."""
    lock = images_lock()
    if lock:
        return json.loads(lock.read_text())["images"][family]
    return f"{IMAGES['registry']}/{IMAGES['families'][family]}:{IMAGES['tag']}"


@pytest.mark.parametrize("family", sorted(set(IMAGES["tasks"].values()) | {"client"}))
def test_each_image_imports_what_its_commands_import(family: str) -> None:
    """The static check (test_images) read from the sources, run for real: every third-party
    package that the family's commands can import imports in its image, with no network, and
    every command starts."""
    image = family_image(family)
    packages = sorted(command_imports(family_commands(family)))
    code = "import importlib, sys\nfor name in sys.argv[1:]: importlib.import_module(name)"
    docker(
        "run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c", code, *packages
    )
    for command in family_commands(family):
        assert "Usage: freemask" in docker(
            "run", "--rm", "--network", "none", image, command, "--help"
        )


def resolve_channel_as_the_driver_does(original):
    """kfp.local (2.17.3, ``kfp/local/orchestrator/enhanced_dag_orchestrator.py``,
    ``ConditionEvaluator._resolve_pipeline_channel``) resolves a ``dsl.If`` channel as a task
    output only when it is named ``<task>-Output`` (a Python component's return value) or
    ``<task>--<key>``; the IR names a container's output file ``pipelinechannel--<task>-<key>``
    (``close-decision``), which it looks up as a parent input, fails to find, and so evaluates
    the condition as false: the next round is skipped silently. The open-source driver resolves
    that channel by its producer task and output key (the DAG task's ``taskOutputParameter``,
    backend/src/v2/driver/resolve.go). This does the same: the first ``<task>-<key>`` split that
    names a task output, else kfp.local's own rule."""

    def resolve(channel_ref: str, io_store) -> object:
        name = channel_ref.removeprefix("pipelinechannel--")
        for cut in (index for index, char in enumerate(name) if char == "-"):
            try:
                return io_store.get_task_output(name[:cut], name[cut + 1 :])
            except (KeyError, ValueError):
                continue
        return original(channel_ref, io_store)

    return staticmethod(resolve)


def upload_tree(folder: Path, uri: str) -> None:
    target = open_storage(uri)
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            target.write_bytes(path.relative_to(folder).as_posix(), path.read_bytes())


@pytest.fixture(scope="module")
def container_run(tmp_path_factory, gcs_emulator, mlflow_server):
    """The compiled pipeline, run once in its images; yields what the checks read."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage
    from kfp import components, local

    root = tmp_path_factory.mktemp("images-check")
    bucket = "images-check"
    client_options = {"api_endpoint": gcs_emulator}
    storage.Client(
        "images-check", AnonymousCredentials(), client_options=client_options
    ).create_bucket(bucket)
    settings, source = check_config()
    max_rounds = settings["active"]["max_rounds"]
    settings.update(workdir=f"gs://{bucket}/work", tracking={"experiment": "images-check"})
    settings.setdefault("relate", {})["thesaurus"] = f"gs://{bucket}/config/demo_thesaurus.yaml"
    thesaurus = ROOT / "configs" / "demo_thesaurus.yaml"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
        config_store = open_storage(f"gs://{bucket}/config")
        config_store.write_bytes("demo_thesaurus.yaml", thesaurus.read_bytes())
        if source is not None:  # the demo's validation scenes, rendered as `make run` renders them
            scenes = root / "validation"
            subprocess.run(
                [FREEMASK, "toyworld", "scenes", "--config", str(source), "--out", str(scenes),
                 "--count", "100", "--seed", "7"],
                check=True,
            )  # fmt: skip
            upload_tree(scenes, f"gs://{bucket}/validation")
            settings["segment"]["validation"] = f"gs://{bucket}/validation"
        config_store.write_bytes("run.yaml", yaml.safe_dump(settings).encode())

        compiled_config = root / "compile.yaml"
        compiled_config.write_text(yaml.safe_dump({**settings, "workdir": str(root / "unused")}))
        ir = root / "pipeline.yaml"
        lock = images_lock()
        compile_argv = [FREEMASK, "compile", "--config", str(compiled_config), "--out", str(ir)]
        subprocess.run([*compile_argv, *(["--images-lock", str(lock)] if lock else [])], check=True)

        model_cache = root / "model-cache"
        model_cache.mkdir()
        os.chown(model_cache, int(IMAGE_USER), 0)
        kfp_root = root / "kfp-root"
        kfp_root.mkdir()
        kfp_root.chmod(0o1777)
        from kfp.local.orchestrator.enhanced_dag_orchestrator import ConditionEvaluator

        patch.setattr(
            ConditionEvaluator,
            "_resolve_pipeline_channel",
            resolve_channel_as_the_driver_does(ConditionEvaluator._resolve_pipeline_channel),
        )
        previous = os.umask(0)  # the task folders kfp.local makes are the containers' to write
        try:
            local.init(runner=docker_runner(gcs_emulator, model_cache), pipeline_root=str(kfp_root))
            pipeline = components.load_component_from_file(str(ir))
            pipeline(
                config_uri=f"gs://{bucket}/config/run.yaml",
                tracking_uri=mlflow_server,
                max_rounds=str(max_rounds),
            )
        finally:
            os.umask(previous)
        versions = open_storage(f"gs://{bucket}/work/versions")
        (version,) = {name.split("/")[0] for name in versions.list("")}
        yield {
            "root": root,
            "ir": ir,
            "lock": lock,
            "kfp_root": kfp_root,
            "work": open_storage(f"gs://{bucket}/work/versions/{version}"),
            "version": version,
            "mlflow": mlflow_server,
            "max_rounds": max_rounds,
            "classes": settings["classes"],
        }


def test_every_task_ran_in_its_family_image_as_the_image_user(container_run) -> None:
    spec, _ = load_ir(container_run["ir"])
    lock = container_run["lock"]
    pinned = json.loads(lock.read_text())["images"] if lock else {}
    for name, executor in spec["deploymentSpec"]["executors"].items():
        image = executor["container"]["image"]
        family = IMAGES["tasks"][executor_task(executor)]
        if pinned:
            assert image == pinned[family], name
        assert docker("image", "inspect", "--format", "{{.Config.User}}", image) == IMAGE_USER
    # Every file the tasks wrote into the pipeline root was written by the image's user.
    written = [path for path in container_run["kfp_root"].rglob("*") if path.is_file()]
    assert written
    assert {path.stat().st_uid for path in written} == {int(IMAGE_USER)}


def test_the_run_went_through_every_stage_and_round_to_the_exit_handler(container_run) -> None:
    work = container_run["work"]
    for stage in ("generate", "backgrounds", "refine", "compose", "harmonize", "active"):
        assert work.exists(f"{stage}/_SUCCESS"), stage
    generated = read_manifest(work.child("generate"))
    assert {sample.instances[0].class_name for sample in generated} <= set(container_run["classes"])
    rounds = sorted(name for name in work.list("active/rounds") if name.endswith("summary.json"))
    assert rounds, "no active round ran"
    # publish: the dataset in the formats users train on and the report, as `freemask run` ends.
    coco = json.loads(work.read_bytes("export/coco/annotations/instances.json"))
    assert coco["images"] and coco["annotations"]
    assert [c["name"] for c in coco["categories"]] == container_run["classes"]
    voc = work.child("export/voc").list()
    assert any(name.startswith("VOCdevkit/VOC2012/SegmentationClass/") for name in voc), voc[:5]
    hf = work.child("export/hf").list()
    assert "README.md" in hf and any(name.endswith(".parquet") for name in hf), hf[:5]
    summary = json.loads(work.read_bytes("report/summary.json"))
    assert len(summary["rounds"]) == len(rounds)
    # The KFP artifacts: the report's page (pictures inline) and the Dataset's metadata, which
    # the launcher merges from the executor output file, name the export under the version.
    (page,) = container_run["kfp_root"].rglob("publish/report")
    html = page.read_text()
    assert f"{work.uri}/export/coco" in html and 'src="data:image/png;base64,' in html
    published = [path for path in container_run["kfp_root"].rglob("*") if "publish" in str(path)]
    metadata = [path.read_text() for path in published if path.suffix == ".json"]
    assert any(f"{work.uri}/export/coco/annotations/instances.json" in text for text in metadata)
    client = MlflowClient(container_run["mlflow"])
    experiment = client.get_experiment_by_name("images-check").experiment_id
    linked = client.search_runs(
        [experiment], filter_string=f"tags.`kfp.run_id` = '{container_run['version']}'"
    )
    (parent,) = [run for run in linked if "mlflow.parentRunId" not in run.data.tags]
    # publish ended the parent run; the exit handler then ran in its image and kept that outcome.
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["kfp.final_status"] == "FINISHED"
    assert "kfp.exit_handler_state" in parent.data.tags
    # The loop ran until its stop rule said stop: no round was skipped by an unresolved condition.
    stop_reason = parent.data.tags["freemask.stop_reason"]
    if stop_reason.startswith("reached max_rounds"):
        assert len(rounds) == container_run["max_rounds"], stop_reason
    logged = {entry.path for entry in client.list_artifacts(parent.info.run_id, "report")}
    assert {f"report/{name}" for name in summary["files"]} <= logged
