"""Reading a compiled pipeline (Kubeflow IR YAML): which task each executor runs, a lint, and a
canonical form for comparing compiles (nested component names change between compiles)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from freemask.redact import has_userinfo, redact


def load_ir(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pipeline spec, platform spec) of a compiled pipeline; the platform spec may be empty."""
    documents = list(yaml.safe_load_all(Path(path).read_text()))
    return documents[0], documents[1] if len(documents) > 1 else {}


def executor_task(executor: dict[str, Any]) -> str:
    """The freemask task an executor runs, from its command line (after the --set overrides
    and, for tasks with output artifacts, the ``kfp-outputs TASK`` wrapper)."""
    args = executor["container"]["args"]
    index = 0
    while index < len(args) and args[index] == "--set":
        index += 2
    command = args[index]
    if command == "kfp-outputs":  # the wrapper that writes a task's artifacts names the task
        return args[index + 1]
    if command == "round":
        return args[index + 1]
    if command == "refine" and "--train-only" in args:
        return "refine-train"
    return command


# What one run's Argo workflow may hold: its templates and node status share Argo's
# MAX_WORKFLOW_SIZE (1 MiB, workflow/packer/packer.go), so the IR gets at most a third of it;
# and templates nest at most maxAllowedStackDepth deep (100, workflow/controller/controller.go).
IR_BUDGET_BYTES = 1024 * 1024 // 3
ARGO_MAX_STACK_DEPTH = 100


def argo_stack_depth(spec: dict[str, Any]) -> int:
    """How many Argo templates deep the deepest pod of ``spec`` runs once KFP's Argo compiler
    (backend/src/v2/compiler/argocompiler) has turned it into a workflow: the ``entrypoint``
    template, one DAG template per IR DAG level from ``root`` down, then the container's
    ``system-container-executor`` DAG and its ``system-container-impl`` pod (container.go)."""
    components = spec.get("components", {})

    def levels(dag: dict[str, Any]) -> int:
        nested = [
            components[task["componentRef"]["name"]]["dag"]
            for task in dag.get("tasks", {}).values()
            if "dag" in components.get(task["componentRef"]["name"], {})
        ]
        return 1 + max((levels(child) for child in nested), default=0)

    return 1 + levels(spec["root"]["dag"]) + 2


def _kubernetes_executors(platform: dict[str, Any]) -> dict[str, Any]:
    return (
        platform.get("platforms", {})
        .get("kubernetes", {})
        .get("deploymentSpec", {})
        .get("executors", {})
    )


def lint(spec: dict[str, Any], platform: dict[str, Any]) -> list[str]:
    """Problems in a compiled pipeline: dangling component or executor references, images
    without a pinned tag or digest, GPU requests without a toleration or node selector, a URI
    with a user and password anywhere (a default, a constant: credentials come from Secrets)."""
    problems = [
        f"holds a URI with a user and password ({redact(text)[:120]}); pipeline tasks take "
        "tracking credentials from the Secret tracking.credentials_secret"
        for text in _strings(spec, platform)
        if has_userinfo(text)
    ]
    components = spec.get("components", {})
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    dags = [("root", spec["root"]), *((name, body) for name, body in components.items())]
    for owner, body in dags:
        for task_name, task in body.get("dag", {}).get("tasks", {}).items():
            reference = task.get("componentRef", {}).get("name")
            if reference not in components:
                problems.append(f"{owner}.{task_name}: component {reference!r} is not defined")
    for name, component in components.items():
        label = component.get("executorLabel")
        if label and label not in executors:
            problems.append(f"{name}: executor {label!r} is not defined")
    kubernetes = _kubernetes_executors(platform)
    for name, executor in executors.items():
        image = executor["container"]["image"]
        tag = image.rsplit("/", 1)[-1]
        if "@sha256:" not in image and (":" not in tag or tag.endswith(":latest")):
            problems.append(f"{name}: image {image!r} is not pinned to a version or digest")
        if executor["container"].get("resources", {}).get("accelerator"):
            settings = kubernetes.get(name, {})
            if not settings.get("tolerations"):
                problems.append(f"{name}: requests a GPU without the GPU pool's toleration")
            if not settings.get("nodeSelector"):
                problems.append(f"{name}: requests a GPU without a node selector for the GPU pool")
    return problems


def _strings(*documents: Any) -> Iterator[str]:
    """Every string (keys too) in parsed YAML documents, walked with an explicit stack."""
    stack = list(documents)
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def pin_images(path: str | Path, images: dict[str, str]) -> Path:
    """Rewrite the compiled pipeline at ``path`` so that every executor names the image of its
    task in ``images`` (task -> ``registry/name@sha256:...``); the rest of the file is left
    byte for byte. Raises ValueError for a task without an image or two digests for one tag."""
    path = Path(path)
    spec, _ = load_ir(path)
    replacements: dict[str, str] = {}
    for name, executor in spec.get("deploymentSpec", {}).get("executors", {}).items():
        task = executor_task(executor)
        if task not in images:
            raise ValueError(f"{name}: no image for task {task!r}")
        old = executor["container"]["image"]
        if replacements.setdefault(old, images[task]) != images[task]:
            raise ValueError(f"{old}: two digests ({replacements[old]}, {images[task]})")
    text = path.read_text()
    for old, new in replacements.items():
        text = re.sub(rf"(\bimage: ){re.escape(old)}$", rf"\g<1>{new}", text, flags=re.MULTILINE)
    path.write_text(text)
    return path


def canonical(spec: dict[str, Any]) -> str:
    """The spec as text with generated names (``comp-x-2``, ``exec-x-2-2``, ``for-loop-4``,
    ``condition-5``) replaced by their order of first appearance, for golden comparisons."""
    text = yaml.safe_dump(spec, sort_keys=True)
    names: dict[str, str] = {}

    def rename(match: re.Match) -> str:
        return names.setdefault(match.group(0), f"{match.group(1)}-#{len(names)}")

    # The whole name with every numeric suffix: comp-pseudo-label-2-2 is one generated name.
    return re.sub(
        r"\b(comp|exec|for-loop|condition-branches|condition)(?:-[a-z][a-z0-9]*)*(?:-\d+)+\b",
        rename,
        text,
    )
