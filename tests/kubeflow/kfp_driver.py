"""The open-source KFP v2 backend's rules for turning a compiled pipeline (IR) into the command
line of each pod, written down so that tests resolve the IR as a real cluster would.

Upstream sources (kubeflow/pipelines, master as of KFP 2.17), rule by rule:

1. Task inputs (backend/src/v2/driver/resolve.go, resolveInputParameter): a
   ``componentInputParameter`` takes the parent DAG's value; a ``taskOutputParameter`` takes the
   producer's output; a ``runtimeValue.constant`` is used as is, except that a constant whose
   *whole* value is one of ``{{$.pipeline_job_uuid}}``, ``{{$.pipeline_job_name}}``, ... is
   replaced by the run's id, name, ... (``switch valStr``: an embedded one stays literal).
   A parameter left unset falls back to the component's ``defaultValue``.
2. Loops (driver/dag.go with util.go getItems): ``parameterIterator.items.raw`` is a JSON list;
   each item becomes the ``itemInput`` parameter of one iteration.
3. Container arguments (driver/util.go, resolveContainerArgs): an argument that contains
   ``$.outputs`` is left to the launcher; one starting with ``{"IfPresent":`` is a condition
   clause; every other argument has each ``{{$.inputs.parameters['x']}}`` replaced by the value
   as text (pbValueToString: strings as is, whole numbers without a decimal point). Nothing
   else is resolved: a ``{"Concat": [...]}`` struct reaches the container as literal JSON
   (kubeflow/pipelines#9486).
4. The launcher (backend/src/v2/component/launcher_v2.go, compileCmdAndArgs/getPlaceholders)
   replaces ``{{$.outputs.parameters['x'].output_file}}`` with the output file's path and the
   input parameters again (numbers via FormatFloat 'f', -1). The command list gets only
   ``{{$}}`` replaced (its other replacements are computed and dropped), so a command must hold
   no placeholders.
5. Output artifacts (driver/driver.go provisionOutputs, metadata/client.go GenerateOutputURI and
   GetPipeline's pipeline_root): each output artifact gets the URI
   ``<pipeline root>/<pipeline name>/<run id>/<task>/<uuid>/<name>`` and the executor output file
   is ``LocalPathForURI(<pipeline root>/<pipeline name>/<run id>/<task>/<uuid>)/output_metadata.json``.
   The launcher (getPlaceholders, compileCmdAndArgs) substitutes, as substrings of any argument,
   ``{{$}}`` (the executor input JSON: ``inputs.parameterValues``, ``outputs.artifacts``,
   ``outputs.parameters``, ``outputs.outputFile``), ``{{$.outputs.artifacts['x'].uri}}`` and
   ``{{$.outputs.artifacts['x'].path}}`` (LocalPathForURI: ``gs://b/k`` -> ``/gcs/b/k``; also
   ``s3://``, ``minio://``). There is no ``.metadata`` placeholder: an artifact's metadata (what
   the UI shows, e.g. a Metrics artifact's scalars, MLMD custom properties) comes only from the
   executor output file, ``{"artifacts": {"x": {"artifacts": [{"metadata": {...}}]}}}``, merged
   into the artifact (mergeRuntimeArtifacts). A ``uri`` there replaces the artifact's URI, but
   the launcher then uploads to it and fails the task unless it lies under the run's root
   (uploadOutputArtifacts -> objectstore Config.KeyFromURI), so the data's own gs:// prefix
   goes into the metadata, not the URI. A missing local file is only a warning (the artifact is
   recorded without content).
6. Exit handlers (driver/resolve.go, TaskFinalStatus case; compiler/argocompiler/dag.go): the
   exit task (``triggerPolicy.strategy: ALL_UPSTREAM_TASKS_COMPLETED``) runs as an exit hook of
   its producer DAG whatever that DAG's outcome; its ``taskFinalStatus`` input is the struct
   ``{"error": {}, "pipelineJobResourceName": <run>, "pipelineTaskName": <producer>, "state":
   <MLMD state: COMPLETE, FAILED, CANCELED, ...>}``, written into an argument as JSON with sorted
   keys (pbValueToString marshals a struct like the launcher's json.Marshal of a map).

Any placeholder that survives these rules, any IfPresent (this project's own rule: the compiled
IR holds no struct placeholder at all) and any Concat makes ``resolve_args`` raise.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from graphlib import TopologicalSorter
from typing import Any

INPUT_PARAMETER = re.compile(r"\{\{\$\.inputs\.parameters\['(.+?)'\]\}\}")
OUTPUT_FILE = re.compile(r"\{\{\$\.outputs\.parameters\['(.+?)'\]\.output_file\}\}")
OUTPUT_ARTIFACT = re.compile(r"\{\{\$\.outputs\.artifacts\['(.+?)'\]\.(uri|path)\}\}")
EXECUTOR_INPUT = "{{$}}"
PIPELINE_ROOT = "gs://kfp-artifacts/root"
RUN_PLACEHOLDERS = ("{{$.pipeline_job_uuid}}", "{{$.pipeline_job_name}}")


class UnresolvedArgument(AssertionError):
    """An executor argument the open-source backend would not turn into the intended text."""


@dataclass(frozen=True)
class Execution:
    """One pod: where in the DAG it runs, its executor label and its resolved inputs."""

    path: str
    executor: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]  # the component's outputDefinitions
    task: str = ""


def as_text(value: Any) -> str:
    """A parameter value as the driver writes it into an argument (pbValueToString)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"), sort_keys=isinstance(value, dict))
    return "" if value is None else str(value)


def local_path(uri: str) -> str:
    """The launcher's LocalPathForURI: where a gs://, s3:// or minio:// URI is read and written."""
    for scheme in ("gs", "s3", "minio"):
        if uri.startswith(f"{scheme}://"):
            return f"/{'gcs' if scheme == 'gs' else scheme}/{uri.removeprefix(f'{scheme}://')}"
    raise UnresolvedArgument(f"{uri}: no local path for this storage scheme")


def executor_input(execution: Execution, run_id: str, pipeline_root: str = PIPELINE_ROOT) -> str:
    """The executor input JSON the driver gives ``execution``'s launcher (rule 5)."""
    task_root = f"{pipeline_root}/freemask/{run_id}/{execution.task}/0000-uuid"
    artifacts = {
        name: {
            "artifacts": [
                {"name": name, "type": definition["artifactType"], "uri": f"{task_root}/{name}"}
            ]
        }
        for name, definition in execution.outputs.get("artifacts", {}).items()
    }
    parameters = {
        name: {"outputFile": f"/tmp/kfp/outputs/{name}"}
        for name in execution.outputs.get("parameters", {})
    }
    document = {
        "inputs": {"parameterValues": execution.inputs},
        "outputs": {
            "artifacts": artifacts,
            "parameters": parameters,
            "outputFile": f"{local_path(task_root)}/output_metadata.json",
        },
    }
    return json.dumps(document, separators=(",", ":"))


def resolve_args(
    args: list[str],
    inputs: Mapping[str, Any],
    output_files: Mapping[str, str],
    executor_json: str = "",
):
    """The container's arguments as the pod receives them (rules 3, 4 and 5)."""
    artifacts = json.loads(executor_json)["outputs"]["artifacts"] if executor_json else {}

    def artifact(match: re.Match) -> str:
        if match.group(1) not in artifacts:
            raise UnresolvedArgument(f"no output artifact {match.group(1)!r}")
        uri = artifacts[match.group(1)]["artifacts"][0]["uri"]
        return uri if match.group(2) == "uri" else local_path(uri)

    resolved = []
    for arg in args:
        if arg.lstrip().startswith('{"'):  # a JSON object: Concat, IfPresent, ...
            raise UnresolvedArgument(f"struct placeholder reaches the container as JSON: {arg}")
        missing = set(INPUT_PARAMETER.findall(arg)) - set(inputs)
        if missing:
            raise UnresolvedArgument(f"{arg}: no input parameter {sorted(missing)}")
        text = INPUT_PARAMETER.sub(lambda match: as_text(inputs[match.group(1)]), arg)
        if "$.outputs" in arg:
            text = OUTPUT_FILE.sub(lambda match: output_files[match.group(1)], text)
            text = OUTPUT_ARTIFACT.sub(artifact, text)
        if EXECUTOR_INPUT in text:
            if not executor_json:
                raise UnresolvedArgument(f"{arg}: no executor input given for {EXECUTOR_INPUT}")
            text = text.replace(EXECUTOR_INPUT, executor_json)
        elif "{{$" in text:
            raise UnresolvedArgument(f"placeholder left unresolved: {arg}")
        resolved.append(text)
    return resolved


def executions(
    spec: dict[str, Any],
    arguments: Mapping[str, Any],
    outputs: Mapping[str, Any],
    run_id: str = "run-0001",
    final_state: str = "COMPLETE",
) -> Iterator[Execution]:
    """Every pod of a run of ``spec`` with root ``arguments``, in an order its DAGs allow (rules
    1, 2 and 6). ``outputs`` gives task output parameters by key; it is read lazily, so a caller
    that runs each execution can fill it in between. Every branch of a condition is entered;
    exit tasks see ``final_state``."""
    run_values = {
        "{{$.pipeline_job_uuid}}": run_id,
        "{{$.pipeline_job_name}}": f"run {run_id}",
        "final_state": final_state,
    }
    yield from _walk(spec, spec["root"], dict(arguments), "root", outputs, run_values)


def _with_defaults(component: dict[str, Any], given: dict[str, Any], path: str) -> dict[str, Any]:
    values = dict(given)
    for name, definition in component.get("inputDefinitions", {}).get("parameters", {}).items():
        if name in values:
            continue
        if "defaultValue" in definition:
            values[name] = definition["defaultValue"]
        elif not definition.get("isOptional"):
            raise UnresolvedArgument(f"{path}: required input {name!r} is not set")
    return values


def _walk(spec, component, given, path, outputs, run_values) -> Iterator[Execution]:
    values = _with_defaults(component, given, path)
    if "executorLabel" in component:
        task = path.rsplit("/", 1)[-1].split("[", 1)[0]
        outputs_spec = component.get("outputDefinitions", {})
        yield Execution(path, component["executorLabel"], values, outputs_spec, task)
        return
    tasks = component["dag"]["tasks"]
    order = TopologicalSorter(
        {name: task.get("dependentTasks", []) for name, task in tasks.items()}
    )
    for name in order.static_order():
        task = tasks[name]
        inputs = {}
        for key, source in task.get("inputs", {}).get("parameters", {}).items():
            if "taskFinalStatus" in source:  # rule 6: the exit task's view of its producer
                inputs[key] = {
                    "error": {},
                    "pipelineJobResourceName": f"freemask-{run_values['{{$.pipeline_job_uuid}}']}",
                    "pipelineTaskName": source["taskFinalStatus"]["producerTask"],
                    "state": run_values["final_state"],
                }
                continue
            inputs[key] = _input(source, values, outputs, run_values, f"{path}/{name}")
        child = spec["components"][task["componentRef"]["name"]]
        iterator = task.get("parameterIterator")
        if iterator is None:
            yield from _walk(spec, child, inputs, f"{path}/{name}", outputs, run_values)
            continue
        for index, item in enumerate(json.loads(iterator["items"]["raw"])):
            item_inputs = {**inputs, iterator["itemInput"]: item}
            yield from _walk(
                spec, child, item_inputs, f"{path}/{name}[{index}]", outputs, run_values
            )


def _input(source, values, outputs, run_values, where) -> Any:
    if "componentInputParameter" in source:
        name = source["componentInputParameter"]
        if name not in values:
            raise UnresolvedArgument(f"{where}: parent has no parameter {name!r}")
        return values[name]
    if "taskOutputParameter" in source:
        return outputs[source["taskOutputParameter"]["outputParameterKey"]]
    constant = source["runtimeValue"]["constant"]
    return run_values.get(constant, constant) if isinstance(constant, str) else constant
