"""deploy-check: the overlays as shipped keep placeholders, which it refuses naming the variable
to set in the overlay's settings.yaml; once the settings hold real values every field they fill
carries them, and it passes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from test_manifests import ROOT, render

from freemask.cli import main
from freemask.deploy_check import check_stream

MANIFESTS = ROOT / "manifests"
# What each overlay as shipped asks for (dev carries the project's own values).
LEFT = {
    "standalone": {"BUCKET", "RUNNER_GSA", "MLFLOW_GSA"},
    "multi-user": {"BUCKET", "RUNNER_GSA", "MLFLOW_GSA", "PROFILE_OWNER"},
    "prod": {"MLFLOW_HOST"},
}
VALUES = {
    "BUCKET": "acme-ml-data",
    "RUNNER_GSA": "freemask-runner@acme-ml.iam.gserviceaccount.com",
    "MLFLOW_GSA": "freemask-mlflow@acme-ml.iam.gserviceaccount.com",
    "PROFILE_OWNER": "ml-lead@acme.io",
    "MLFLOW_HOST": "mlflow.acme.io",
}


def errors(capsys: pytest.CaptureFixture[str]) -> list[str]:
    lines = capsys.readouterr().err.splitlines()
    assert all(line.startswith("error: ") for line in lines), lines
    return [line.removeprefix("error: ") for line in lines]


@pytest.mark.parametrize("overlay", sorted(LEFT))
def test_shipped_overlay_is_refused_naming_each_variable_to_set(
    overlay: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["deploy-check", overlay, "--manifests", str(MANIFESTS)]) == 2
    *found, summary = errors(capsys)
    settings = f"{MANIFESTS}/overlays/{overlay}/settings.yaml"
    variables = {line.rsplit(": set ", 1)[1].removesuffix(f" in {settings}") for line in found}
    assert variables == LEFT[overlay]
    assert summary.startswith(f"{len(found)} placeholder(s) left: set ")
    assert f"{', '.join(sorted(LEFT[overlay]))} in {settings}" in summary


def test_each_line_names_the_resource_field_and_placeholder(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["deploy-check", "standalone", "--manifests", str(MANIFESTS)]) == 2
    found = errors(capsys)
    settings = f"{MANIFESTS}/overlays/standalone/settings.yaml"
    # The runner account in kubeflow, where standalone KFP runs the pipeline's pods.
    assert (
        f"{MANIFESTS}/overlays/standalone: ServiceAccount kubeflow/freemask-runner "
        'metadata.annotations["iam.gke.io/gcp-service-account"] = '
        "'freemask-runner@PROJECT_ID.iam.gserviceaccount.com' holds the placeholder PROJECT_ID, "
        f"your Google Cloud project's id: set RUNNER_GSA in {settings}"
    ) in found
    assert any(
        "CronJob freemask/dataset-refresh spec.jobTemplate.spec.template.spec.containers[0]"
        ".args[8] = 'config_uri=gs://BUCKET/configs/run.yaml' holds the placeholder BUCKET"
        in line
        and line.endswith(f"set BUCKET in {settings}")
        for line in found
    )


def test_dev_passes_as_shipped(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deploy-check", "dev", "--manifests", str(MANIFESTS)]) == 0
    assert capsys.readouterr().out == "ok: no placeholder left in dev\n"


@pytest.mark.parametrize("overlay", sorted(LEFT))
def test_overlay_passes_once_its_settings_hold_real_values(
    overlay: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifests = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, manifests)
    settings = manifests / "overlays" / overlay / "settings.yaml"
    data = yaml.safe_load(settings.read_text(encoding="utf-8"))
    data["data"] = {key: VALUES[key] for key in data["data"]}
    settings.write_text(yaml.safe_dump(data), encoding="utf-8")

    assert main(["deploy-check", overlay, "--manifests", str(manifests)]) == 0, (
        capsys.readouterr().err
    )
    # Every field a setting fills carries it, in every namespace the object is in.
    objects = render(str(manifests / "overlays" / overlay))
    values = {key: value for key, value in VALUES.items() if key in data["data"]}
    for item in objects:
        name, annotations = item["metadata"]["name"], item["metadata"].get("annotations", {})
        if item["kind"] == "ServiceAccount":
            account = {"freemask-runner": "RUNNER_GSA", "mlflow": "MLFLOW_GSA"}[name]
            assert annotations["iam.gke.io/gcp-service-account"] == values[account]
        if item["kind"] == "ConfigMap" and name == "mlflow-config":
            destination = f"gs://{values['BUCKET']}/mlflow-artifacts"
            assert item["data"]["artifacts-destination"] == destination
        if item["kind"] == "CronJob":
            args = item["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
            config = f"gs://{values['BUCKET']}/configs/run.yaml"
            assert args[args.index("--config") + 1] == config
            assert f"config_uri={config}" in args
        if item["kind"] == "Profile":
            assert item["spec"]["owner"]["name"] == values["PROFILE_OWNER"]
            assert item["spec"]["plugins"][0]["spec"]["gcpServiceAccount"] == values["RUNNER_GSA"]
        if item["kind"] == "Ingress":
            assert item["spec"]["rules"][0]["host"] == values["MLFLOW_HOST"]
        if item["kind"] == "ManagedCertificate":
            assert item["spec"]["domains"] == [values["MLFLOW_HOST"]]
    if "MLFLOW_HOST" in values:
        (config,) = [o for o in objects if o["metadata"]["name"] == "mlflow-config"]
        assert config["data"]["extra-allowed-hosts"] == f"{values['MLFLOW_HOST']},"
    # The settings ConfigMap is local-config: read by kustomize, never applied.
    assert not [o for o in objects if o["metadata"]["name"] == "freemask-settings"]


def test_a_rendered_stream_is_refused_with_the_variable_its_field_takes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = tmp_path / "rendered.yaml"
    stream.write_text(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: freemask-runner\n"
        "  namespace: team-a\n  annotations:\n"
        "    iam.gke.io/gcp-service-account: freemask-runner@PROJECT_ID.iam.gserviceaccount.com\n"
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\n"
        "data:\n  where: gs://BUCKET/elsewhere\n",
        encoding="utf-8",
    )
    assert main(["deploy-check", "-f", str(stream), "--manifests", str(MANIFESTS)]) == 2
    account, extra, summary = errors(capsys)
    assert account.startswith(f"{stream}: ServiceAccount team-a/freemask-runner ")
    assert account.endswith("set RUNNER_GSA in the overlay's settings.yaml")
    # A field no setting fills is fixed where it is declared.
    assert extra.startswith(f"{stream}: ConfigMap extra data.where = 'gs://BUCKET/elsewhere'")
    assert extra.endswith("replace it in the manifest that declares the object")
    assert "replace BUCKET in the manifests" in summary


def test_the_hf_token_example_is_a_template_it_refuses(capsys: pytest.CaptureFixture[str]) -> None:
    example = MANIFESTS / "examples" / "hf-token-secret.yaml"
    assert main(["deploy-check", "-f", str(example), "--manifests", str(MANIFESTS)]) == 2
    namespace, token, _ = errors(capsys)
    assert "metadata.namespace = 'RUN_NAMESPACE' holds the placeholder RUN_NAMESPACE" in namespace
    assert "stringData.token = 'HF_TOKEN' holds the placeholder HF_TOKEN" in token


def test_real_values_that_resemble_placeholders_pass() -> None:
    stream = yaml.safe_dump(
        {
            "kind": "ConfigMap",
            "metadata": {"name": "real"},
            "data": {
                "env": "S3_BUCKET_NAME",
                "uri": "gs://bucket-7/configs",
                "host": "mlflow.example.company.io",
                "project": "my-project-id",
            },
        }
    )
    assert check_stream(stream, source="real.yaml", manifests=MANIFESTS) == []


def test_an_unknown_overlay_is_refused_naming_the_known_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["deploy-check", "staging", "--manifests", str(MANIFESTS)]) == 2
    (line,) = errors(capsys)
    assert "staging: no such overlay" in line and "dev, multi-user, prod, standalone" in line
