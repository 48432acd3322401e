"""The compiled IR resolved by the open-source KFP driver's rules (kfp_driver.py): every executor's
command line is plain text the real CLI accepts, and the host twins run the very same argv."""

import json
from pathlib import Path

import pytest
import yaml
from kfp import compiler, dsl
from kfp_driver import (
    UnresolvedArgument,
    command_line,
    executions,
    executor_input,
    local_path,
)
from kfp_values import as_text

from freemask.cli import main
from freemask.commands import task_argv
from freemask.config import RunConfig
from pipelines.freemask_pipeline import compile_pipeline
from pipelines.ir import executor_task, load_ir

SETTINGS = {
    "name": "resolution",
    "workdir": "gs://freemask-data/work",
    "classes": ["cat", "dog"],
    "active": {"max_rounds": 3},
    "tracking": {"uri": "http://mlflow.freemask.svc.cluster.local:5000"},
    "kubeflow": {"shards": 3, "parallelism": 2},
}
OUTPUTS = {"run_id": "0123456789abcdef", "decision": "true"}  # "true": every round runs


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[dict, Path]:
    root = tmp_path_factory.mktemp("resolution")
    config_path = root / "run.yaml"
    config_path.write_text(yaml.safe_dump(SETTINGS))
    spec, _ = load_ir(compile_pipeline(RunConfig.model_validate(SETTINGS), root / "ir.yaml"))
    return spec, config_path


def referenced_executors(spec: dict) -> set[str]:
    """The executors of every component some DAG task runs (KFP's compiler can leave unused
    executors behind when nested pipelines share a component: comp-train-2 vs comp-train-2-2)."""
    dags = [spec["root"], *spec["components"].values()]
    names = {
        t["componentRef"]["name"] for d in dags for t in d.get("dag", {}).get("tasks", {}).values()
    }
    return {
        spec["components"][n]["executorLabel"]
        for n in names
        if "executorLabel" in spec["components"][n]
    }


def resolved(spec: dict, arguments: dict, backend: str = "2.17") -> list[tuple[str, list[str]]]:
    """(executor label, argv after ``freemask``) of every pod of a run with ``arguments``."""
    containers = spec["deploymentSpec"]["executors"]
    pods = []
    for execution in executions(spec, arguments, OUTPUTS, run_id="kfp-run-7", backend=backend):
        command, *argv = command_line(containers[execution.executor]["container"], execution)
        assert command == "freemask"
        pods.append((execution.executor, argv))
    return pods


@pytest.mark.parametrize("backend", ["2.14", "2.17"])
@pytest.mark.parametrize(
    "overrides",
    [{}, {"classes": "[cat, dog, bird]", "max_rounds": "2", "iou_threshold": "0.7"}],
    ids=["config-file-only", "parameters-set"],
)
def test_every_executor_resolves_to_a_command_line_the_cli_accepts(
    compiled, overrides, backend
) -> None:
    spec, config_path = compiled
    pods = resolved(spec, {"config_uri": str(config_path), **overrides}, backend)
    assert {label for label, _ in pods} == referenced_executors(spec)
    for label, argv in pods:
        assert main([*argv, "--check"]) == 0, f"{label}: freemask {' '.join(argv)}"
    versions = {arg for _, argv in pods for arg in argv if arg.startswith("kubeflow.dataset_")}
    assert versions == {"kubeflow.dataset_version=kfp-run-7"}  # every task: this run's version


def test_unset_parameters_leave_the_config_file_in_charge(compiled, capsys) -> None:
    spec, config_path = compiled
    pods = dict(resolved(spec, {"config_uri": str(config_path)}))
    argv = next(
        argv
        for label, argv in pods.items()
        if executor_task({"container": {"args": argv}}) == "relate"
    )
    assert "classes=" in argv and "active.max_rounds=" in argv
    assert main([*argv, "--check"]) == 0
    assert (
        "2 classes, workdir gs://freemask-data/work/versions/kfp-run-7" in capsys.readouterr().out
    )


def test_a_run_asking_for_more_rounds_than_compiled_fails_at_its_first_task(
    compiled, capsys
) -> None:
    spec, config_path = compiled
    pods = resolved(spec, {"config_uri": str(config_path), "max_rounds": "4"})
    (start,) = [argv for _, argv in pods if "start-run" in argv]
    assert main([*start, "--check"]) == 2
    assert "above the 3 rounds compiled into the pipeline" in capsys.readouterr().err


def test_a_run_without_rounds_in_a_pipeline_with_rounds_fails_at_its_first_task(
    compiled, capsys
) -> None:
    """Round 1 of a pipeline compiled with rounds runs whatever the run says: a run asking for
    none is refused before anything is drawn."""
    spec, config_path = compiled
    pods = resolved(spec, {"config_uri": str(config_path), "max_rounds": "0"})
    (start,) = [argv for _, argv in pods if "start-run" in argv]
    assert main([*start, "--check"]) == 2
    assert "active.max_rounds=0 in a pipeline compiled with 3 rounds" in capsys.readouterr().err


def test_task_argv_builds_the_argv_the_driver_resolves(compiled) -> None:
    """The components' command lines come from task_argv: given a task's inputs as the driver
    resolves them, it builds exactly the argument list the driver resolves from the IR."""
    spec, config_path = compiled
    containers = spec["deploymentSpec"]["executors"]
    arguments = {"config_uri": str(config_path), "classes": "[cat]", "tracking_uri": ""}
    for execution in executions(spec, arguments, OUTPUTS, run_id="kfp-run-7"):
        expected = command_line(containers[execution.executor]["container"], execution)[1:]
        task = executor_task({"container": {"args": expected}})
        # The task's inputs as Python values, its output file paths, its executor input (with
        # its artifacts' URIs) and its Markdown artifacts' paths.
        document = executor_input(execution)
        provisioned = json.loads(document)["outputs"]
        files = {name: p["outputFile"] for name, p in provisioned.get("parameters", {}).items()}
        outputs = provisioned["artifacts"]
        inputs = {**execution.inputs, **files, "executor_input": document}
        for markdown in ("mlflow_run", "report"):
            if markdown in outputs:
                inputs[markdown] = local_path(outputs[markdown]["artifacts"][0]["uri"])
        inputs = {
            key: int(value) if isinstance(value, float) and value.is_integer() else value
            for key, value in inputs.items()
        }
        if "status" in inputs:  # the final status as the driver writes it
            inputs["status"] = as_text(inputs["status"])
        assert task_argv(task, inputs) == expected, execution.path


@dsl.container_component
def _concat(name: str):
    return dsl.ContainerSpec(
        image="busybox:1.36", command=["echo"], args=[dsl.ConcatPlaceholder(["--name=", name])]
    )


@dsl.container_component
def _if_present(name: str = ""):
    return dsl.ContainerSpec(
        image="busybox:1.36",
        command=["echo"],
        args=[dsl.IfPresentPlaceholder(input_name="name", then=["--name", name])],
    )


def _single_pod(component, tmp_path, backend: str) -> list[str]:
    """The command line of the one pod of ``component`` compiled alone, with name "x"."""
    path = tmp_path / "component.yaml"
    compiler.Compiler().compile(component, str(path))
    spec = yaml.safe_load(path.read_text())
    (executor,) = spec["deploymentSpec"]["executors"].values()
    (execution,) = executions(spec, {"name": "x"}, {}, backend=backend)
    return command_line(executor["container"], execution)


@pytest.mark.parametrize(
    ("component", "backend"),
    [(_concat, "2.17"), (_concat, "2.14"), (_if_present, "2.16")],
    ids=["concat", "concat-2.14", "if-present-2.16"],
)
def test_struct_placeholders_are_refused(component, backend, tmp_path) -> None:
    with pytest.raises(UnresolvedArgument, match="struct placeholder"):
        _single_pod(component, tmp_path, backend)


def test_if_present_is_resolved_by_the_217_driver_only(tmp_path) -> None:
    """The reason the compiled IR holds none: older backends pass the JSON through."""
    assert _single_pod(_if_present, tmp_path, "2.17") == ["echo", "--name", "x"]


def test_a_run_id_placeholder_inside_a_longer_constant_stays_literal() -> None:
    spec = {
        "root": {
            "dag": {
                "tasks": {
                    "t": {
                        "componentRef": {"name": "comp-t"},
                        "inputs": {
                            "parameters": {
                                "whole": {"runtimeValue": {"constant": "{{$.pipeline_job_uuid}}"}},
                                "embedded": {
                                    "runtimeValue": {"constant": "v-{{$.pipeline_job_uuid}}"}
                                },
                            }
                        },
                    }
                }
            }
        },
        "components": {"comp-t": {"executorLabel": "exec-t"}},
    }
    (execution,) = executions(spec, {}, {}, run_id="r1")
    whole = {"command": ["echo"], "args": ["{{$.inputs.parameters['whole']}}"]}
    assert command_line(whole, execution) == ["echo", "r1"]
    embedded = {"command": ["echo"], "args": ["{{$.inputs.parameters['embedded']}}"]}
    with pytest.raises(UnresolvedArgument, match="left unresolved"):
        command_line(embedded, execution)
