"""The open-source KFP v2 backend's rules for running a compiled pipeline (IR), written down so
that tests resolve each pod's command line, and follow a run's states, as a real cluster would.
``backend`` picks the version (2.14.0 to 2.17.0; "2.16" is 2.16.0) where the rules differ.
Rule 1's CEL is modelled in kfp_cel.py, rule 4's values as text in kfp_values.py.

Upstream: kubeflow/pipelines at tag 2.17.0 unless another tag is named, paths under
backend/src/v2/. Rule by rule:

1. Conditions (driver/dag.go:84-91, driver/container.go:88-95; expression/expression.go:128-162):
   a task's ``triggerPolicy.condition`` is CEL over its resolved inputs
   (``inputs.parameter_values['x']``). When false, the driver records the task CANCELED
   (metadata/client.go:659-665) and Argo skips it (compiler/argocompiler/dag.go:278-279): nothing
   under it runs, nor anything after it (``dep.Succeeded``, dag.go:713-726). A condition that
   cel-go cannot compile or evaluate, or that is no bool, fails the driver: kfp_cel.py models
   the CEL the KFP SDK writes.
2. Inputs and defaults (driver/resolve.go resolveInputs, 102-369): a ``componentInputParameter``
   takes the parent DAG's value (an optional input whose value is null is skipped, 333-347), a
   ``taskOutputParameter`` the producer's output; a missing one fails the driver. Defaults: the
   root's unset inputs get their ``defaultValue``, or null when optional, at run creation
   (compiler/argocompiler/argo.go:96-107); a nested DAG's driver does the same for its unset
   optional inputs (resolve.go:304-322); a container's driver leaves an unset optional input
   out (194-200), sets an unset required STRING with a ``defaultValue`` to "" (187-193, then
   202-217 with metadata/converter.go:19-21: a nil value's text; the default is not used) and
   fails for any other unset required input. A STRING input given another type gets its text
   (PbValueToText); other types must match (218-253). Only the launcher adds a container's
   defaults, before it compiles the command line (component/launcher_v2.go:422-431,
   addDefaultParams 1309-1331): on 2.17 the driver, which resolves arguments first (rule 3),
   fails on an argument naming an optional input left unset.
3. Command and arguments: the pod runs ``command + args`` (driver/driver.go:307-319). On 2.17 the
   driver resolves both lists alike (driver/util.go resolveContainerArgs, 263-288): an element
   holding ``$.outputs`` is left to the launcher; ``{"IfPresent": ...}`` becomes its Then or Else
   (211-261); in any other, each ``{{$.inputs.parameters['x']}}`` becomes the value's text, and
   an ``x`` the executor input lacks fails the driver (168-179). Before 2.17 the driver passes
   both unchanged (2.16.0 driver/driver.go:282-284). The launcher takes the first element as the
   command and the rest as arguments (launcher_v2.go:113-127); compileCmdAndArgs (1051-1074)
   replaces ``{{$}}`` in all of them and the other placeholders only in the arguments (the
   command's replacements are computed and dropped). So a placeholder in ``command[1:]`` is
   resolved like an argument, one in ``command[0]`` by the 2.17 driver only. A ``Concat``, and an
   IfPresent before 2.17, reaches the container as literal JSON (kubeflow/pipelines#9486).
4. Values as text (kfp_values.py): the 2.17 driver writes a whole number with ``%d``, any other
   with ``%g``; the launcher with ``FormatFloat(f, 'f', -1, 64)``; lists and structs as Go JSON;
   the executor input ``{{$}}`` as protojson.
5. Outputs (driver/driver.go provisionOutputs, 741-810): an output parameter's file is
   ``/tmp/kfp/outputs/<name>`` (794-797); an output artifact's URI is
   ``<run root>/<task>/<uuid>/<name>`` (775, 786), the run root being ``<pipeline root>/<pipeline
   name>/<run id>`` (metadata/client.go:420, GenerateOutputURI 391-406); the executor output
   file is ``output_metadata.json`` under the task root's local path (800-807), on 2.14
   ``/tmp/kfp_outputs/output_metadata.json`` with artifacts that have no ``name`` (2.14.0
   driver/driver.go:483-518). Logs are published by default (cmd/driver/main.go:102): an
   ``executor-logs`` artifact is added (755-768), and from 2.16.1 (kubeflow/pipelines#13334) the
   launcher gives its URI the attempt's ``-0`` suffix before it compiles the command line
   (qualifyExecutorLogsForRetry, launcher_v2.go:420 and 569-598; 2.16.1 launcher_v2.go:389 and
   538-567). The launcher resolves ``{{$.outputs.parameters['x'].output_file}}``,
   ``{{$.outputs.artifacts['x'].uri}}`` and ``.path`` (LocalPathForURI, 1239-1253: ``gs://b/k``
   -> ``/gcs/b/k``; also ``s3://``, ``minio://``). There is no ``.metadata`` placeholder: an
   artifact's metadata (what the UI shows) comes only from the executor output file,
   ``{"artifacts": {"x": {"artifacts": [{"metadata": {...}}]}}}`` (mergeRuntimeArtifacts,
   1188-1206). A ``uri`` there replaces the artifact's, but the launcher then uploads to it and
   fails unless it lies under the run's root (uploadOutputArtifacts), so the data's own gs://
   prefix goes into the metadata. A missing output file is only logged (getExecutorOutputFile).
6. Pipeline root (driver/root_dag.go:97-114): the run's ``pipeline_root``, else the
   ``kfp-launcher`` ConfigMap's ``defaultPipelineRoot``, else ``minio://mlpipeline/v2/artifacts``
   (config/env.go:38, 86-92). The IR's ``defaultPipelineRoot`` is not read.
7. Runtime constants (resolve.go:422-454): a string constant input whose whole value is
   ``{{$.pipeline_job_name}}`` (the run's display name), ``{{$.pipeline_job_resource_name}}``
   (its Argo workflow), ``{{$.pipeline_job_uuid}}`` (run id), ``{{$.pipeline_task_name}}``,
   ``{{$.pipeline_task_uuid}}`` (the parent DAG's MLMD execution id),
   ``{{$.pipeline_job_create_time_utc}}`` or ``{{$.pipeline_job_schedule_time_utc}}`` (RFC 3339;
   a manual run's schedule time is its creation time, cmd/driver/main.go:262-285) is replaced;
   embedded in a longer string they stay literal. ``{{$.workspace_path}}`` is replaced anywhere in
   the string by ``/kfp-workspace`` (component/constants.go:32). 2.14 has the first five (2.14.0
   resolve.go:393-406), 2.15 adds the workspace (2.15.0 resolve.go:414-415), 2.16 the times
   (2.16.0 resolve.go:438-441).
8. Exit handlers (resolve.go:458-493; argocompiler/dag.go:124-132): the exit task
   (``ALL_UPSTREAM_TASKS_COMPLETED``) runs as an exit hook of its producer, whatever its outcome;
   its ``taskFinalStatus`` input is ``{"error": {}, "pipelineJobResourceName": <workflow>,
   "pipelineTaskName": <producer>, "state": <the producer's MLMD state then>}``. States: a driver
   records its execution RUNNING, or CANCELED (rule 1); a container's launcher records COMPLETE or
   FAILED, then updates its parent DAG (launcher_v2.go:220-230; UpdateDAGExecutionsState,
   metadata/client.go:800-878): COMPLETE when its children that are COMPLETE, CACHED or CANCELED
   number its ``total_dag_tasks`` (on 2.17 a loop's ``iteration_count``), else FAILED if one
   FAILED, else unchanged. From 2.17.0 (PR 13322, commit 5d44be17a2) a DAG that so ends updates
   its parent in turn; on 2.14 to 2.16 (2.16.0 metadata/client.go:746-786) only a container's own
   parent is updated, so a DAG whose children are DAGs (loops, conditions, nested pipelines)
   stays RUNNING. No container ends after a CANCELED child, so a DAG whose last task is a
   condition not taken stays RUNNING on 2.17 too, and so do its ancestors. Argo's failFast: after
   a failure no new task starts; exit hooks still run.

Any placeholder left in an element, and any struct placeholder, makes ``command_line`` raise:
the pod would get literal text. Not modelled: caching, retries, input artifacts, DAG outputs,
parameter expression selectors, literal constraints, protojson's random spaces.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
from collections.abc import Container, Iterator, Mapping
from dataclasses import dataclass, field
from graphlib import TopologicalSorter
from typing import Any

from kfp_cel import CelError, condition_holds
from kfp_values import as_text, go_json, keys_sorted, launcher_text

INPUT_PARAMETER = re.compile(r"\{\{\$\.inputs\.parameters\['(.+?)'\]\}\}")
EXECUTOR_INPUT = "{{$}}"
DEFAULT_PIPELINE_ROOT = "minio://mlpipeline/v2/artifacts"
WORKSPACE_PATH = "/kfp-workspace"
OUTPUT_PARAMETER_DIR = "/tmp/kfp/outputs"
LEGACY_OUTPUT_FILE = "/tmp/kfp_outputs/output_metadata.json"
CREATE_TIME = "2026-01-01T00:00:00Z"  # the model run's creation (and schedule) time
DONE_STATES = ("COMPLETE", "CACHED", "CANCELED")


class UnresolvedArgument(AssertionError):
    """Where the open-source backend would fail a task, or hand its pod unintended text."""


def backend_version(backend: str) -> tuple[int, int, int]:
    """``(2, 16, 1)`` for "2.16.1", ``(2, 17, 0)`` for "2.17" or "2.17.0"; ValueError for other
    text, or outside the modelled 2.14.0 to 2.17.0."""
    match = re.fullmatch(r"(\d+)\.(\d+)(?:\.(\d+))?", backend)
    if match is None:
        raise ValueError(f"backend {backend!r}: give a KFP version, such as 2.17 or 2.16.1")
    version = (int(match[1]), int(match[2]), int(match[3] or 0))
    if not (2, 14, 0) <= version <= (2, 17, 0):
        raise ValueError(f"backend {backend!r}: the model follows KFP 2.14.0 to 2.17.0")
    return version


def local_path(uri: str) -> str:
    """The launcher's LocalPathForURI: where a gs://, s3://, minio:// or oci:// URI is read and
    written in the pod."""
    for scheme, root in (("gs", "/gcs"), ("s3", "/s3"), ("minio", "/minio")):
        if uri.startswith(f"{scheme}://"):
            return f"{root}/{uri.removeprefix(f'{scheme}://')}"
    if uri.startswith("oci://"):
        return f"/oci/{uri.removeprefix('oci://').replace('/', '_')}/models"
    raise UnresolvedArgument(f"{uri}: no local path for this storage scheme")


# Rules 1, 2, 7 and 8: a run, driver by driver.


@dataclass(frozen=True)
class Execution:
    """One pod: where in the DAG it runs, its task and executor, its inputs as the driver
    resolved them, its component and executor input (outputs provisioned), the backend."""

    path: str
    task: str
    executor: str
    inputs: dict[str, Any]
    component: dict[str, Any]
    document: dict[str, Any]
    backend: tuple[int, int, int]


@dataclass
class _Record:
    """One MLMD execution: a DAG's or a container's, under its parent DAG, with its state."""

    id: int
    parent: int
    path: str
    task: str
    state: str
    total: int = 0  # total_dag_tasks: a DAG component's task count
    iterations: int | None = None  # iteration_count: a loop's item count


def executions(
    spec: dict[str, Any],
    arguments: Mapping[str, Any],
    outputs: Mapping[str, Any],
    run_id: str = "run-0001",
    *,
    backend: str = "2.17",
    pipeline_root: str = DEFAULT_PIPELINE_ROOT,
    failed: Container[str] = (),
    states: dict[str, str] | None = None,
) -> Iterator[Execution]:
    """Every pod of a run of ``spec`` with root ``arguments`` on KFP ``backend``, in an order its
    DAGs allow. ``outputs`` gives task output parameters by key, ``failed`` the task names or
    paths whose pods fail; both are read lazily, so a caller that runs each execution can fill
    them in between. ``states``, when given, gets every MLMD execution's state by path as the run
    goes. Raises UnresolvedArgument where a driver fails."""
    run = _Run(spec, backend_version(backend), run_id, pipeline_root, outputs, failed)
    if states is not None:
        run.states = states
    yield from run.root(dict(arguments))


def _parameters(component: Mapping[str, Any]) -> dict[str, Any]:
    return component.get("inputDefinitions", {}).get("parameters", {})


_TYPES = {
    "NUMBER_INTEGER": (int, float),
    "NUMBER_DOUBLE": (int, float),
    "BOOLEAN": (bool,),
    "LIST": (list,),
    "STRUCT": (dict,),
    "TASK_FINAL_STATUS": (dict,),
    "TASK_CONFIG": (dict,),
}


def _checked(component, values, where, skip=frozenset(), nil=frozenset()) -> dict[str, Any]:
    """A driver's type validation and conversion of resolved inputs (resolve.go:169-256)."""
    for name, definition in _parameters(component).items():
        kind = definition["parameterType"]
        if name in skip:
            continue
        if name not in values:
            if definition.get("isOptional"):
                continue  # left out: the launcher alone adds its default
            if "defaultValue" not in definition or kind != "STRING":
                raise UnresolvedArgument(f"{where}: required input {name!r} has no value")
            values[name] = ""  # a nil value's text; the default is not used
        elif kind == "STRING":
            if not isinstance(values[name], str) and name not in nil:
                values[name] = launcher_text(values[name])
        elif values[name] is None:
            if name not in nil:
                raise UnresolvedArgument(f"{where}: got null for input parameter {name!r}")
        elif isinstance(values[name], bool) != (kind == "BOOLEAN") or not isinstance(
            values[name], _TYPES[kind]
        ):
            raise UnresolvedArgument(f"{where}: input {name!r} is no {kind}: {values[name]!r}")
    return values


@dataclass
class _Run:
    """A run in progress: each task's driver, and the launcher's state updates, over MLMD."""

    spec: dict[str, Any]
    backend: tuple[int, int, int]
    run_id: str
    pipeline_root: str
    outputs: Mapping[str, Any]
    failed: Container[str]
    states: dict[str, str] = field(default_factory=dict)
    records: list[_Record] = field(default_factory=list)
    stopped: bool = False  # Argo's failFast: after a failure no new task starts

    @property
    def pipeline_name(self) -> str:
        return self.spec.get("pipelineInfo", {}).get("name", "pipeline")

    @property
    def run_root(self) -> str:
        """The run's root for artifacts (metadata/client.go:420, GenerateOutputURI)."""
        return f"{self.pipeline_root.rstrip('/')}/{self.pipeline_name}/{self.run_id}"

    @property
    def workflow(self) -> str:
        """The run's Argo workflow (``{{$.pipeline_job_resource_name}}``)."""
        return f"{self.pipeline_name}-{self.run_id}"

    def record(self, parent: int, path: str, task: str, state: str, **dag: Any) -> _Record:
        self.records.append(_Record(len(self.records) + 1, parent, path, task, state, **dag))
        self.states[path] = state
        return self.records[-1]

    def set_state(self, record: _Record, state: str) -> None:
        record.state = self.states[record.path] = state

    def root(self, values: dict[str, Any]) -> Iterator[Execution]:
        """Rule 2: the root's unset inputs get their default, or null when optional."""
        for name, definition in _parameters(self.spec["root"]).items():
            if name not in values and "defaultValue" in definition:
                values[name] = definition["defaultValue"]
            elif name not in values and definition.get("isOptional"):
                values[name] = None
        yield from self.dag(self.spec["root"], self.record(0, "root", "", "RUNNING"), values)

    def dag(self, component, record: _Record, values) -> Iterator[Execution]:
        """One DAG's tasks in an order their dependencies allow; returns "Failed" when Argo's
        node for the DAG fails."""
        tasks = component["dag"]["tasks"]
        order = TopologicalSorter({n: t.get("dependentTasks", []) for n, t in tasks.items()})
        outcomes: dict[str, str] = {}
        for name in order.static_order():
            task, after = tasks[name], tasks[name].get("dependentTasks", [])
            if task.get("triggerPolicy", {}).get("strategy") == "ALL_UPSTREAM_TASKS_COMPLETED":
                ready = all(dependency in outcomes for dependency in after)  # an exit hook
            else:
                ready = not self.stopped and all(outcomes.get(d) == "Succeeded" for d in after)
            if ready:
                outcomes[name] = yield from self.task(name, task, record, values)
        return "Failed" if "Failed" in outcomes.values() else "Succeeded"

    def task(self, name: str, task, parent: _Record, values) -> Iterator[Execution]:
        """A task's driver, then its container or DAG; returns Argo's outcome for it."""
        path = f"{parent.path}/{name}"
        component = self.spec["components"][task["componentRef"]["name"]]
        inputs = self.inputs(task, component, parent, values, path)
        condition = task.get("triggerPolicy", {}).get("condition")
        try:
            holds = not condition or condition_holds(condition, inputs)
        except CelError as error:
            raise UnresolvedArgument(f"{path}: {error}") from None
        state = "RUNNING" if holds else "CANCELED"
        if "dag" not in component:
            return (yield from self.container(name, path, component, parent, inputs, state))
        if state == "RUNNING" and "parameterIterator" in task:
            return (yield from self.loop(name, path, task, component, parent, inputs))
        record = self.record(parent.id, path, name, state, total=len(component["dag"]["tasks"]))
        if state == "CANCELED":
            return "Skipped"
        return (yield from self.dag(component, record, inputs))

    def container(self, name, path, component, parent: _Record, inputs, state):
        """A container's driver (its outputs provisioned) and launcher (its end recorded, its
        parent DAG updated); returns Argo's outcome for it."""
        record = self.record(parent.id, path, name, state)
        if state == "CANCELED":
            return "Skipped"
        document = {
            "inputs": {"parameterValues": keys_sorted(inputs)},
            "outputs": self.provisioned(record, component),
        }
        executor = component["executorLabel"]
        yield Execution(path, name, executor, inputs, component, document, self.backend)
        failed = path in self.failed or name in self.failed
        self.set_state(record, "FAILED" if failed else "COMPLETE")
        self.update(self.records[parent.id - 1])
        self.stopped = self.stopped or failed
        return "Failed" if failed else "Succeeded"

    def loop(self, name, path, task, component, parent: _Record, inputs):
        """A loop's driver, then one iteration's driver and DAG per item (dag.go:163-200; raw
        items join the loop's inputs under the item's name, 192)."""
        iterator = task["parameterIterator"]
        items_input = iterator["items"].get("inputParameter", iterator["itemInput"])
        if "raw" in iterator["items"]:
            inputs[items_input] = json.loads(iterator["items"]["raw"])
        items = inputs.get(items_input)
        items = json.loads(items) if isinstance(items, str) else items  # getItems
        if not isinstance(items, list):
            raise UnresolvedArgument(f"{path}: loop items are no list: {items!r}")
        total = len(component["dag"]["tasks"])
        head = self.record(parent.id, path, name, "RUNNING", total=total, iterations=len(items))
        outcome = "Succeeded"
        for index, item in enumerate(items):
            if self.stopped:
                break
            values = {key: value for key, value in inputs.items() if key != items_input}
            values[iterator["itemInput"]] = item
            skip = {iterator["items"].get("inputParameter")}
            values = _checked(component, values, f"{path}[{index}]", skip)
            record = self.record(head.id, f"{path}[{index}]", name, "RUNNING", total=total)
            if (yield from self.dag(component, record, values)) == "Failed":
                outcome = "Failed"
        return outcome

    def inputs(self, task, component, parent: _Record, values, path: str) -> dict[str, Any]:
        """A driver's resolveInputs (rule 2)."""
        given = task.get("inputs", {}).get("parameters", {})
        definitions = _parameters(component)
        resolved, nil = {}, set()
        if "dag" in component:  # a nested DAG's driver fills its unset optional inputs
            for name, definition in definitions.items():
                if name not in given and definition.get("isOptional"):
                    resolved[name] = definition.get("defaultValue")
                    nil |= set() if "defaultValue" in definition else {name}
        for name, source in given.items():
            value = self.input(source, task, parent, values, path)
            if value is None and "componentInputParameter" in source:
                if definitions.get(name, {}).get("isOptional"):
                    continue  # a null for an optional input: left out
                raise UnresolvedArgument(f"{path}: input {name!r} resolves to null")
            resolved[name] = value
        iterator = task.get("parameterIterator")
        skip = {iterator["itemInput"]} if iterator else set()
        return _checked(component, resolved, path, skip, nil)

    def input(self, source, task, parent: _Record, values, path: str) -> Any:
        """resolveInputParameter: one input from its source."""
        if "componentInputParameter" in source:
            name = source["componentInputParameter"]
            if name not in values:
                raise UnresolvedArgument(f"{path}: the parent DAG has no input {name!r}")
            return values[name]
        if "taskOutputParameter" in source:
            key = source["taskOutputParameter"]["outputParameterKey"]
            if key not in self.outputs:
                raise UnresolvedArgument(f"{path}: no output {key!r} given")
            return self.outputs[key]
        if "taskFinalStatus" in source:
            return self.final_status(task, parent)
        return self.constant(source["runtimeValue"]["constant"], path, parent)

    def constant(self, value: Any, path: str, parent: _Record) -> Any:
        """Rule 7: the runtime constants the driver substitutes."""
        if not isinstance(value, str):
            return value
        if self.backend >= (2, 15, 0) and "{{$.workspace_path}}" in value:
            return value.replace("{{$.workspace_path}}", WORKSPACE_PATH)
        constants = {
            "{{$.pipeline_job_name}}": f"run {self.run_id}",
            "{{$.pipeline_job_resource_name}}": self.workflow,
            "{{$.pipeline_job_uuid}}": self.run_id,
            "{{$.pipeline_task_name}}": path.rsplit("/", 1)[-1],  # the IR task key
            "{{$.pipeline_task_uuid}}": str(parent.id),
        }
        if self.backend >= (2, 16, 0):
            constants["{{$.pipeline_job_create_time_utc}}"] = CREATE_TIME
            constants["{{$.pipeline_job_schedule_time_utc}}"] = CREATE_TIME
        return constants.get(value, value)

    def final_status(self, task, parent: _Record) -> dict[str, Any]:
        """Rule 8: the producer's MLMD state when the exit task's driver runs."""
        producer = task["dependentTasks"][0]
        (record,) = (r for r in self.records if r.parent == parent.id and r.task == producer)
        return {
            "error": {},
            "pipelineJobResourceName": self.workflow,
            "pipelineTaskName": producer,
            "state": record.state,
        }

    def update(self, dag: _Record) -> None:
        """UpdateDAGExecutionsState after a container ends (rule 8)."""
        expected = dag.total
        if self.backend >= (2, 17, 0):
            expected = dag.total if dag.iterations is None else dag.iterations
            if expected == 0 and dag.iterations is None:
                return  # the root: its state is Argo's and the API server's
        children = [record.state for record in self.records if record.parent == dag.id]
        if sum(state in DONE_STATES for state in children) == expected:
            self.set_state(dag, "COMPLETE")
        elif "FAILED" in children:
            self.set_state(dag, "FAILED")
        else:
            return
        if self.backend >= (2, 17, 0) and dag.parent:
            self.update(self.records[dag.parent - 1])

    def provisioned(self, record: _Record, component) -> dict[str, Any]:
        """provisionOutputs: output files, artifact URIs and the executor output file (rule 5)."""
        outputs = component.get("outputDefinitions", {})
        salt = f"00000000-0000-4000-8000-{record.id:012d}"  # uuid.NewString(), one per execution
        task_root = f"{self.run_root}/{record.task}/{salt}"
        types = {name: a["artifactType"] for name, a in outputs.get("artifacts", {}).items()}
        types["executor-logs"] = {"schemaTitle": "system.Artifact"}
        artifacts = {
            name: {"artifacts": [{"name": name, "type": types[name], "uri": f"{task_root}/{name}"}]}
            for name in sorted(types)
        }
        output_file = LEGACY_OUTPUT_FILE  # on 2.14, and for a root of an unknown scheme
        if self.backend < (2, 15, 0):
            for listed in artifacts.values():
                del listed["artifacts"][0]["name"]
        else:
            with contextlib.suppress(UnresolvedArgument):
                output_file = f"{local_path(task_root)}/output_metadata.json"
        return {
            "parameters": {
                name: {"outputFile": f"{OUTPUT_PARAMETER_DIR}/{name}"}
                for name in sorted(outputs.get("parameters", {}))
            },
            "artifacts": artifacts,
            "outputFile": output_file,
        }


# Rules 3, 4 and 5: the pod's command line.


def _launcher_view(execution: Execution) -> dict[str, Any]:
    """The executor input the launcher compiles the command line with: the component's
    defaults added for inputs the driver left out (addDefaultParams) and, from 2.16.1, the logs
    artifact named for the first attempt (qualifyExecutorLogsForRetry)."""
    document = copy.deepcopy(execution.document)
    values = document["inputs"]["parameterValues"]
    for name, definition in _parameters(execution.component).items():
        if name not in values and "defaultValue" in definition:
            values[name] = definition["defaultValue"]
    document["inputs"] = {"parameterValues": keys_sorted(values)} if values else {}
    if execution.backend >= (2, 16, 1):
        document["outputs"]["artifacts"]["executor-logs"]["artifacts"][0]["uri"] += "-0"
    document["outputs"] = {key: value for key, value in document["outputs"].items() if value}
    return document


def executor_input(execution: Execution) -> str:
    """``{{$}}``: the launcher's executor input as protojson writes it (rule 4)."""
    return go_json(_launcher_view(execution), escape_html=False)


def _driver_resolved(elements: list[str], inputs: Mapping[str, Any]) -> list[str]:
    """The 2.17 driver's resolveContainerArgs over command and args (rule 3)."""

    def substituted(text: str) -> str:
        def value(match: re.Match) -> str:
            if match[1] not in inputs:
                raise UnresolvedArgument(
                    f"{text}: parameter {match[1]!r} not found in executor input (the 2.17 "
                    "driver fails; an unset optional input gets its default only later)"
                )
            return as_text(inputs[match[1]])

        return INPUT_PARAMETER.sub(value, text)

    resolved = []
    for element in elements:
        if "$.outputs" in element:
            resolved.append(element)
        elif element.lstrip().startswith('{"IfPresent":'):
            clause = json.loads(element)["IfPresent"]
            present = inputs.get(clause["InputName"]) is not None  # null counts as absent
            chosen = clause.get("Then" if present else "Else") or []
            resolved += [
                substituted(item) for item in ([chosen] if isinstance(chosen, str) else chosen)
            ]
        else:
            resolved.append(substituted(element))
    return resolved


def _placeholders(document: dict[str, Any], path: str) -> dict[str, str]:
    """The launcher's getPlaceholders: output artifacts' URIs and local paths, input
    parameters' text, output parameters' files."""
    placeholders = {}
    for name, listed in document["outputs"].get("artifacts", {}).items():
        uri = listed["artifacts"][0]["uri"]
        placeholders[f"{{{{$.outputs.artifacts['{name}'].uri}}}}"] = uri
        placeholders[f"{{{{$.outputs.artifacts['{name}'].path}}}}"] = local_path(uri)
    for name, value in document["inputs"].get("parameterValues", {}).items():
        if value is None:
            raise UnresolvedArgument(f"{path}: the launcher fails on null input {name!r}")
        placeholders[f"{{{{$.inputs.parameters['{name}']}}}}"] = launcher_text(value)
    for name, output in document["outputs"].get("parameters", {}).items():
        placeholders[f"{{{{$.outputs.parameters['{name}'].output_file}}}}"] = output["outputFile"]
    return placeholders


def command_line(container: Mapping[str, Any], execution: Execution) -> list[str]:
    """The pod's command line, command then args, as driver and launcher resolve them (rules
    3 to 5); UnresolvedArgument where a driver fails or the pod would get unintended text."""
    elements = [*container.get("command", []), *container.get("args", [])]
    for element in elements:  # a JSON object: Concat, or an IfPresent the driver leaves alone
        resolved = element.lstrip().startswith('{"IfPresent":') and "$.outputs" not in element
        if element.lstrip().startswith('{"') and not (resolved and execution.backend >= (2, 17, 0)):
            raise UnresolvedArgument(f"struct placeholder reaches the container as JSON: {element}")
    if execution.backend >= (2, 17, 0):
        elements = _driver_resolved(elements, execution.inputs)
    if not elements:
        raise UnresolvedArgument(f"{execution.path}: command and arguments are empty")
    document = _launcher_view(execution)
    executor_json = go_json(document, escape_html=False)
    placeholders = _placeholders(document, execution.path)
    pod = []
    for position, element in enumerate(elements):
        # The launcher's compileCmdAndArgs: the command (first element) gets {{$}} only.
        text, probe = (
            element.replace(EXECUTOR_INPUT, executor_json),
            element.replace(EXECUTOR_INPUT, ""),
        )
        for placeholder, replacement in placeholders.items() if position else ():
            text, probe = (
                text.replace(placeholder, replacement),
                probe.replace(placeholder, replacement),
            )
        if "{{$" in probe:
            where = "in the command (only {{$}} is resolved there)" if not position else "in"
            raise UnresolvedArgument(f"placeholder left unresolved {where}: {element}")
        pod.append(text)
    return pod
