"""The compiled pipeline's task pods against each overlay's LimitRange and ResourceQuota, by the
API server's admission rules: a pod that any rule rejects never starts, and KFP shows only a
pending task."""

import itertools

import pytest
from kubernetes.utils.quantity import parse_quantity
from test_manifests import ROOT, RUN_NAMESPACES, render

from freemask.config import load_config
from pipelines.freemask_pipeline import compile_pipeline
from pipelines.ir import load_ir

# Containers KFP adds to every task pod, as its Argo compiler writes them
# (backend/src/v2/compiler/argocompiler/argo.go: launcherResources): the launcher init
# container; Argo's wait sidecar names no resources (KFP's workflow-controller-configmap sets
# none for the executor), so the LimitRange defaults fill it in.
LAUNCHER = {"limits": {"cpu": "0.5", "memory": "256Mi"}, "requests": {"cpu": "0.1"}}
WAIT: dict = {}
# Per-overlay compile-time settings (dev's quota is sized for one shard at a time).
KUBEFLOW = {"overlays/dev": {"parallelism": 1}}
# Standalone KFP runs the pipeline's pods in its own namespace, beside its own pods, which the
# quota counts and the LimitRange fills in: KFP 2.5.0's platform-agnostic install, one container
# per pod (kubeflow/pipelines manifests/kustomize/env/platform-agnostic, rendered; later
# releases request no more per container).
KFP_PODS = {
    "cache-deployer-deployment": {},
    "cache-server": {},
    "metadata-envoy-deployment": {},
    "metadata-grpc-deployment": {},
    "metadata-writer": {},
    "minio": {"requests": {"cpu": "20m", "memory": "100Mi"}},
    "ml-pipeline": {"requests": {"cpu": "250m", "memory": "500Mi"}},
    "ml-pipeline-persistenceagent": {"requests": {"cpu": "120m", "memory": "500Mi"}},
    "ml-pipeline-scheduledworkflow": {},
    "ml-pipeline-ui": {"requests": {"cpu": "10m", "memory": "70Mi"}},
    "ml-pipeline-viewer-crd": {},
    "ml-pipeline-visualizationserver": {"requests": {"cpu": "30m", "memory": "500Mi"}},
    "mysql": {"requests": {"cpu": "100m", "memory": "800Mi"}},
    "workflow-controller": {"requests": {"cpu": "100m", "memory": "500Mi"}},
}
NEIGHBOURS = {"overlays/standalone": KFP_PODS}
RESOURCES = ("cpu", "memory", "nvidia.com/gpu")


def admitted(container: dict, limit_range: dict) -> dict:
    """A container's requests and limits after admission, or AssertionError with the reason.

    Rules (k8s.io/kubernetes plugin/pkg/admission/limitranger/admission.go and the core API's
    defaulting): a limit without a request sets the request to the limit; a missing limit takes
    the LimitRange default, a missing request its defaultRequest; then request <= limit and
    limit <= max, each resource on its own.
    """
    requests = dict(container.get("requests", {}))
    limits = dict(container.get("limits", {}))
    for name, value in limits.items():
        requests.setdefault(name, value)
    for name, value in limit_range.get("default", {}).items():
        limits.setdefault(name, value)
    for name, value in limit_range.get("defaultRequest", {}).items():
        requests.setdefault(name, value)
    for name in sorted(set(requests) | set(limits)):
        if name in requests and name in limits:
            assert parse_quantity(requests[name]) <= parse_quantity(limits[name]), (
                f"{name}: request {requests[name]} above limit {limits[name]}"
            )
        if name in limit_range.get("max", {}) and name in limits:
            assert parse_quantity(limits[name]) <= parse_quantity(limit_range["max"][name]), (
                f"{name}: limit {limits[name]} above the LimitRange max {limit_range['max'][name]}"
            )
    return {"requests": requests, "limits": limits}


def task_container(resources: dict) -> dict:
    """A task's container resources as the KFP driver sets them from the IR."""
    requests, limits = {}, {}
    if "resourceCpuRequest" in resources:
        requests["cpu"] = resources["resourceCpuRequest"]
    if "resourceMemoryRequest" in resources:
        requests["memory"] = resources["resourceMemoryRequest"]
    if "resourceCpuLimit" in resources:
        limits["cpu"] = resources["resourceCpuLimit"]
    if "resourceMemoryLimit" in resources:
        limits["memory"] = resources["resourceMemoryLimit"]
    accelerator = resources.get("accelerator")
    if accelerator:
        limits[accelerator["resourceType"]] = accelerator["resourceCount"]
    return {"requests": requests, "limits": limits}


def pod_usage(task: dict, limit_range: dict) -> dict[str, float]:
    """What a task pod counts against a quota: its containers' sum (the init container runs
    alone first, so the pod counts the larger of the two)."""
    main = admitted(task, limit_range)
    wait = admitted(WAIT, limit_range)
    init = admitted(LAUNCHER, limit_range)
    usage = {}
    for kind in ("requests", "limits"):
        for name in RESOURCES:
            running = sum(parse_quantity(c[kind].get(name, 0)) for c in (main, wait))
            usage[f"{kind}.{name}"] = max(running, parse_quantity(init[kind].get(name, 0)))
    return usage


def widest_fan_out(
    spec: dict, usage: dict[str, dict[str, float]], parallelism: int, dag: dict | None = None
) -> dict:
    """The most a DAG's tasks (the root's by default) can hold at once, per resource: the
    heaviest set of tasks none of which waits for another (a loop counts ``parallelism`` times
    its body's widest, any other sub-DAG, such as the exit handler's or a round, its widest)."""
    tasks = (dag or spec["root"]["dag"])["tasks"]
    needs = {name: set(task.get("dependentTasks", [])) for name, task in tasks.items()}

    def upstream(name: str) -> set[str]:
        seen = set(needs[name])
        for parent in needs[name]:
            seen |= upstream(parent)
        return seen

    before = {name: upstream(name) for name in tasks}
    weights = {name: _weight(spec, task, usage, parallelism) for name, task in tasks.items()}
    widest: dict[str, float] = {}
    for size in range(1, len(tasks) + 1):
        for group in itertools.combinations(tasks, size):
            if any(a in before[b] or b in before[a] for a, b in itertools.combinations(group, 2)):
                continue
            for key in weights[group[0]]:
                total = sum(weights[name][key] for name in group)
                widest[key] = max(widest.get(key, 0), total)
    return widest


def _weight(spec, task, usage, parallelism) -> dict[str, float]:
    component = spec["components"][task["componentRef"]["name"]]
    if "executorLabel" in component:
        return usage[component["executorLabel"]]
    widest = widest_fan_out(spec, usage, parallelism, component["dag"])
    factor = parallelism if "parameterIterator" in task else 1
    return {key: value * factor for key, value in widest.items()}


@pytest.mark.parametrize(
    "overlay", ["overlays/dev", "overlays/prod", "overlays/multi-user", "overlays/standalone"]
)
def test_every_task_pod_is_admitted_and_the_quota_covers_the_widest_fan_out(
    overlay: str, tmp_path
) -> None:
    namespace = RUN_NAMESPACES[overlay]
    objects = [o for o in render(overlay) if o["metadata"].get("namespace") == namespace]
    (limit_range,) = [o["spec"]["limits"][0] for o in objects if o["kind"] == "LimitRange"]
    (quota,) = [o["spec"]["hard"] for o in objects if o["kind"] == "ResourceQuota"]
    config = load_config(ROOT / "configs" / "default.yaml", environ={})
    settings = config.kubeflow.model_copy(update=KUBEFLOW.get(overlay, {}))
    config = config.model_copy(update={"kubeflow": settings})
    spec, _ = load_ir(compile_pipeline(config, tmp_path / "ir.yaml"))
    usage = {
        label: pod_usage(task_container(executor["container"].get("resources", {})), limit_range)
        for label, executor in spec["deploymentSpec"]["executors"].items()
    }
    # Quota admission refuses a pod that does not name every resource the quota tracks.
    for label, pod in usage.items():
        for key in quota:
            assert key in pod, f"{label}: names no {key}"
    widest = widest_fan_out(spec, usage, settings.parallelism)
    # Pods already in the namespace take their share of the quota first; quota admission
    # refuses one that names no CPU or memory request and limit, so the LimitRange fills them.
    for name, container in NEIGHBOURS.get(overlay, {}).items():
        pod = admitted(container, limit_range)
        for key in quota:
            kind, _, resource = key.partition(".")
            assert resource in pod[kind] or resource not in ("cpu", "memory"), f"{name}: {key}"
            widest[key] += parse_quantity(pod[kind].get(resource, 0))
    for key, hard in quota.items():
        assert widest[key] <= parse_quantity(hard), f"{overlay}: {key} {widest[key]} > {hard}"
    assert widest["requests.nvidia.com/gpu"] == 2 * settings.parallelism


def test_yesterdays_limit_range_rejected_every_task() -> None:
    old_defaults = {"default": {"cpu": "1", "memory": "2Gi"}}
    task = {"requests": {"cpu": "2", "memory": "8Gi"}}  # requests and no limits, as before
    with pytest.raises(AssertionError, match="cpu: request 2 above limit 1"):
        admitted(task, old_defaults)
    admitted(LAUNCHER, old_defaults)  # the launcher alone passes either LimitRange
