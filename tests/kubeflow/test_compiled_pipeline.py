"""The production pipeline's IR: tasks, images, GPUs, fan-out, rounds, parameters, lint."""

from __future__ import annotations

import copy
import re

import pytest
from kfp import components

from freemask.commands import ARTIFACTS, OVERRIDES, gpu_tasks
from freemask.config import MAX_ROUNDS, RunConfig
from freemask.errors import FreemaskError
from pipelines.freemask_pipeline import compile_pipeline
from pipelines.ir import (
    ARGO_MAX_STACK_DEPTH,
    IR_BUDGET_BYTES,
    argo_stack_depth,
    canonical,
    executor_task,
    lint,
    load_ir,
)

STAGE_IMAGES = {
    "generate": "freemask-generate",
    "backgrounds": "freemask-generate",
    "relate": "freemask-generate",
    "compose": "freemask-segment",
    "refine-train": "freemask-segment",
    "refine": "freemask-segment",
    "harmonize": "freemask-segment",
    "pseudo-label": "freemask-segment",
    "train": "freemask-segment",
}


def config(**kubeflow) -> RunConfig:
    return RunConfig.model_validate(
        {
            "classes": ["cat", "dog"],
            "active": {"max_rounds": 3},
            "kubeflow": {
                "shards": 4,
                "parallelism": 2,
                "secrets": [{"secret": "mlflow", "key": "token", "env": "MLFLOW_TRACKING_TOKEN"}],
                **kubeflow,
            },
        }
    )


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    path = compile_pipeline(config(), tmp_path_factory.mktemp("ir") / "pipeline.yaml")
    return path, *load_ir(path)


def handler_dag(spec: dict) -> dict:
    """The DAG of the exit handler's group."""
    handler = spec["root"]["dag"]["tasks"]["exit-handler-1"]
    return spec["components"][handler["componentRef"]["name"]]["dag"]


def run_dag(spec: dict) -> dict:
    """The run's body, the exit handler's one task: every task of the run but the exit task."""
    (body,) = handler_dag(spec)["tasks"].values()
    return spec["components"][body["componentRef"]["name"]]["dag"]


def test_every_stage_runs_in_its_own_image(compiled) -> None:
    _, spec, _ = compiled
    executors = spec["deploymentSpec"]["executors"].values()
    tasks = {executor_task(e): e["container"]["image"] for e in executors}
    assert set(tasks) == {
        *STAGE_IMAGES,
        "join",
        "start-run",
        "prepare",
        "bootstrap",
        "filter",
        "close",
        "publish",
        "end-run",
    }
    for task, name in STAGE_IMAGES.items():
        assert re.fullmatch(rf"ghcr\.io/freemask/{name}:\d+\.\d+\.\d+", tasks[task]), task
    assert all(e["container"]["command"] == ["freemask"] for e in executors)


# With the default methods (guided filter, no harmonization) refine and harmonize run no network.
DEFAULT_GPU_TASKS = {"generate", "backgrounds", "bootstrap", "pseudo-label", "train", "close"}


def test_gpu_tasks_follow_what_each_command_runs() -> None:
    assert gpu_tasks(config()) == DEFAULT_GPU_TASKS
    learned = RunConfig.model_validate(
        {
            "classes": ["cat"],
            "refine": {"method": "affinity"},
            "harmonize": {"method": "pctnet", "weights": "pctnet"},
        }
    )
    assert gpu_tasks(learned) == DEFAULT_GPU_TASKS | {"refine-train", "refine", "harmonize"}
    on_cpu = learned.model_copy(
        update={
            "refine": learned.refine.model_copy(update={"device": "cpu"}),
            "segment": learned.segment.model_copy(update={"device": "cpu"}),
        }
    )
    assert gpu_tasks(on_cpu) == {"generate", "backgrounds", "harmonize"}
    judged = RunConfig.model_validate(
        {"classes": ["cat"], "segment": {"labeller": "org/model"}, "compose": {"backgrounds": "bg"}}
    )
    # With a labeller, bootstrap still trains: round 0, the unfiltered pool's candidate.
    assert gpu_tasks(judged) == {"generate", "bootstrap", "pseudo-label", "train", "close"}


def test_accelerators_on_exactly_the_gpu_stages(compiled) -> None:
    _, spec, platform = compiled
    executors = spec["deploymentSpec"]["executors"]
    with_gpu = {
        executor_task(e)
        for e in executors.values()
        if e["container"].get("resources", {}).get("accelerator")
    }
    assert with_gpu == DEFAULT_GPU_TASKS
    kubernetes = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name, executor in executors.items():
        settings = kubernetes.get(name, {})
        gpu = executor_task(executor) in DEFAULT_GPU_TASKS
        assert (
            bool(settings.get("tolerations")) == gpu and bool(settings.get("nodeSelector")) == gpu
        )
        mounts = {m["mountPath"] for m in settings.get("emptyDirMounts", [])}
        assert ("/dev/shm" in mounts) == gpu
        assert mounts <= {
            "/dev/shm",
            "/var/cache/freemask",
        }  # the model cache: see test_model_secrets
        assert settings["secretAsEnv"][0]["keyToEnv"][0]["envVar"] == "MLFLOW_TRACKING_TOKEN"


def test_sharded_stages_fan_out_with_the_configured_parallelism(compiled) -> None:
    _, spec, _ = compiled
    loops = [
        body
        for body in run_dag(spec)["tasks"].values()
        if "iterator" in body or "parameterIterator" in body
    ]
    assert len(loops) == 5
    for loop in loops:
        iterator = loop["parameterIterator"]
        assert iterator["items"]["raw"] == "[0, 1, 2, 3]"
        assert loop["iteratorPolicy"]["parallelismLimit"] == 2


def test_rounds_are_nested_sub_pipelines_gated_by_the_previous_decision(compiled) -> None:
    _, spec, _ = compiled
    components_by_name = spec["components"]
    rounds = sorted(
        name for name in components_by_name if re.fullmatch(r"comp-active-round-\d", name)
    )
    assert rounds == ["comp-active-round-1", "comp-active-round-2", "comp-active-round-3"]
    for index, name in enumerate(rounds, start=1):
        tasks = components_by_name[name]["dag"]["tasks"]
        conditions = [task for task in tasks.values() if "triggerPolicy" in task]
        if index < 3:
            (condition,) = conditions
            assert "== 'true'" in condition["triggerPolicy"]["condition"]
            branch = components_by_name[condition["componentRef"]["name"]]["dag"]["tasks"]
            assert [task["componentRef"]["name"] for task in branch.values()] == [
                f"comp-active-round-{index + 1}"
            ]
        else:
            assert conditions == []


def test_parameters_default_to_unset_so_the_config_file_decides(compiled) -> None:
    _, spec, _ = compiled
    parameters = dict(spec["root"]["inputDefinitions"]["parameters"])
    assert parameters.pop("config_uri") == {"parameterType": "STRING"}
    assert set(parameters) == set(OVERRIDES)
    for parameter in parameters.values():
        assert parameter == {"defaultValue": "", "isOptional": True, "parameterType": "STRING"}


def test_caching_is_off_for_every_task(compiled) -> None:
    _, spec, _ = compiled
    dags = [spec["root"], *spec["components"].values()]
    tasks = [task for body in dags for task in body.get("dag", {}).get("tasks", {}).values()]
    containers = [task for task in tasks if "cachingOptions" in task]
    assert len(containers) > 20  # every container task has caching options ...
    assert all(not task["cachingOptions"].get("enableCache") for task in containers)  # ... off


def test_ir_loads_back_and_compiles_the_same_way_twice(compiled, tmp_path) -> None:
    path, spec, _ = compiled
    assert components.load_component_from_file(str(path)).name == "freemask"
    again = load_ir(compile_pipeline(config(), tmp_path / "again.yaml"))[0]
    assert canonical(again) == canonical(spec)


def test_lint_finds_dangling_references_unpinned_images_and_untolerated_gpus(compiled) -> None:
    _, spec, platform = compiled
    assert lint(spec, platform) == []
    broken, bare = copy.deepcopy(spec), copy.deepcopy(platform)
    executors = broken["deploymentSpec"]["executors"]
    executors["exec-relate"]["container"]["image"] = "ghcr.io/freemask/freemask-relate:latest"
    del broken["components"]["comp-relate"]
    gpu = next(name for name, e in executors.items() if executor_task(e) == "train")
    del bare["platforms"]["kubernetes"]["deploymentSpec"]["executors"][gpu]["tolerations"]
    problems = "\n".join(lint(broken, bare))
    assert "component 'comp-relate' is not defined" in problems
    assert "freemask-relate:latest' is not pinned" in problems
    assert f"{gpu}: requests a GPU without the GPU pool's toleration" in problems


def test_compile_refuses_a_pipeline_the_lint_rejects(tmp_path) -> None:
    with pytest.raises(FreemaskError, match="without the GPU pool's toleration"):
        compile_pipeline(config(gpu_tolerations=[]), tmp_path / "bad.yaml")


def test_compiled_ir_reads_nothing_from_the_compiling_environment(tmp_path, monkeypatch) -> None:
    first = canonical(load_ir(compile_pipeline(config(), tmp_path / "a.yaml"))[0])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://elsewhere:5000")
    monkeypatch.setenv("FREEMASK__GENERATE__IMAGES_PER_CLASS", "7")
    assert canonical(load_ir(compile_pipeline(config(), tmp_path / "b.yaml"))[0]) == first


def test_an_exit_handler_ends_the_mlflow_run_whatever_the_outcome(compiled) -> None:
    _, spec, _ = compiled
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {"exit-handler-1", "end-run"}
    assert tasks["exit-handler-1"]["taskInfo"]["name"] == "freemask-run"
    assert "start-run" in run_dag(spec)["tasks"]
    end = tasks["end-run"]
    assert end["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert end["dependentTasks"] == ["exit-handler-1"]
    status = end["inputs"]["parameters"]["status"]
    assert status == {"taskFinalStatus": {"producerTask": "exit-handler-1"}}


def test_the_most_rounds_a_run_may_have_compile_within_argos_limits(tmp_path) -> None:
    """``active.max_rounds`` is bounded (each round adds two DAG levels and 18.9 kB of IR): at
    the bound the IR fits its budget and the deepest pod nests within Argo's stack depth, and
    one round more is refused before any compile."""
    settings = config().model_dump()
    at_bound = RunConfig.model_validate({**settings, "active": {"max_rounds": MAX_ROUNDS}})
    path = compile_pipeline(at_bound, tmp_path / "bound.yaml")
    spec, _ = load_ir(path)
    assert path.stat().st_size <= IR_BUDGET_BYTES
    assert argo_stack_depth(spec) == 2 * MAX_ROUNDS + 5 <= ARGO_MAX_STACK_DEPTH
    rounds = {name for name in spec["components"] if re.fullmatch(r"comp-active-round-\d+", name)}
    assert len(rounds) == MAX_ROUNDS
    with pytest.raises(ValueError, match="less than or equal to 10"):
        RunConfig.model_validate({**settings, "active": {"max_rounds": MAX_ROUNDS + 1}})


def test_every_run_draws_its_own_samples_from_its_run_id(compiled) -> None:
    """The stages that draw (generate, backgrounds, compose) take the KFP run id as their
    dataset version, which becomes the draw (``load_run_config``): a runtime value that every
    run, a recurring run's each, has anew, and that a retry of the run keeps."""
    _, spec, _ = compiled
    drawn = {}
    for component in spec["components"].values():
        for name, task in component.get("dag", {}).get("tasks", {}).items():
            stage = name.split("-")[0]
            if stage in ("generate", "backgrounds", "compose"):
                drawn[stage] = task["inputs"]["parameters"]["dataset_version"]
    assert set(drawn) == {"generate", "backgrounds", "compose"}
    run_id = {"runtimeValue": {"constant": "{{$.pipeline_job_uuid}}"}}
    assert all(value == run_id for value in drawn.values()), drawn


def test_no_loop_sits_directly_in_the_exit_handler(compiled) -> None:
    """A ParallelFor directly inside an ExitHandler fails at run time on backend 2.14.3
    (kubeflow/pipelines#12390): the handler's group holds the run's body, one plain task."""
    _, spec, _ = compiled
    (body,) = handler_dag(spec)["tasks"].values()
    assert "parameterIterator" not in body and "iteratorPolicy" not in body
    assert sum("parameterIterator" in task for task in run_dag(spec)["tasks"].values()) == 5


def test_tasks_output_datasets_models_metrics_and_the_mlflow_link(compiled) -> None:
    _, spec, _ = compiled
    executors = spec["deploymentSpec"]["executors"]
    outputs: dict[str, dict[str, str]] = {}
    for component in spec["components"].values():
        if "executorLabel" in component:
            artifacts = component.get("outputDefinitions", {}).get("artifacts", {})
            task = executor_task(executors[component["executorLabel"]])
            outputs[task] = {n: a["artifactType"]["schemaTitle"] for n, a in artifacts.items()}
    expected = {
        task: {name: f"system.{kind.capitalize()}" for name, (kind, _) in artifacts.items()}
        for task, artifacts in ARTIFACTS.items()
    }
    expected["start-run"] = {"mlflow_run": "system.Markdown"}
    expected["publish"]["report"] = "system.HTML"
    assert {task: found for task, found in outputs.items() if found} == expected
    for executor in executors.values():
        args = executor["container"]["args"]
        if executor_task(executor) in ARTIFACTS:  # the launcher's {{$}} reaches kfp-outputs
            assert args[args.index("--executor-input") + 1] == "{{$}}"


def test_a_digest_lock_names_every_image_by_digest(compiled, tmp_path) -> None:
    """``freemask compile --images-lock``: each executor runs its family's pushed digest, and
    nothing else in the IR changes."""
    import json
    import shutil

    from components._spec import IMAGES_FILE, digest_images
    from pipelines.ir import pin_images

    path, spec, _ = compiled
    families = json.loads(IMAGES_FILE.read_text())["families"]
    digests = {family: f"{index:x}" * 64 for index, family in enumerate(families, start=1)}
    lock = tmp_path / "images.lock.json"
    lock.write_text(
        json.dumps(
            {"images": {f: f"reg.example/{n}@sha256:{digests[f]}" for f, n in families.items()}}
        )
    )
    pinned = pin_images(shutil.copy(path, tmp_path / "pipeline.yaml"), digest_images(lock))
    pinned_spec, platform = load_ir(pinned)
    images = {
        executor_task(e): e["container"]["image"]
        for e in pinned_spec["deploymentSpec"]["executors"].values()
    }
    assert images["generate"] == f"reg.example/freemask-generate@sha256:{digests['generate']}"
    assert images["train"] == f"reg.example/freemask-segment@sha256:{digests['segment']}"
    assert images["join"] == f"reg.example/freemask-cpu@sha256:{digests['cpu']}"
    assert all("@sha256:" in image for image in images.values())
    assert not lint(pinned_spec, platform)
    for executor in pinned_spec["deploymentSpec"]["executors"].values():
        executor["container"]["image"] = "x"
    unpinned = copy.deepcopy(spec)
    for executor in unpinned["deploymentSpec"]["executors"].values():
        executor["container"]["image"] = "x"
    assert canonical(pinned_spec) == canonical(unpinned)


def test_a_digest_lock_without_a_family_is_refused(tmp_path) -> None:
    from components._spec import digest_images

    lock = tmp_path / "images.lock.json"
    lock.write_text('{"images": {"generate": "reg.example/freemask-generate:0.1.0"}}')
    with pytest.raises(FreemaskError, match="no digest for family 'generate'"):
        digest_images(lock)
