"""The hub token reaches pipeline tasks from a Kubernetes Secret, never as a value."""

from __future__ import annotations

import re

from freemask.config import RunConfig
from pipelines.freemask_pipeline import compile_pipeline
from pipelines.ir import load_ir

TOKEN = "hf_not_a_real_token_0123456789"


def config(**models) -> RunConfig:
    return RunConfig.model_validate(
        {
            "classes": ["cat"],
            "active": {"max_rounds": 1},
            "kubeflow": {"shards": 1},
            "models": models,
        }
    )


def token_sources(platform: dict) -> dict[str, list[tuple[str, str, str]]]:
    """Executor -> (secret, key, env) of each Secret it reads into its environment."""
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    return {
        name: [
            (item["secretName"], pair["secretKey"], pair["envVar"])
            for item in settings.get("secretAsEnv", [])
            for pair in item["keyToEnv"]
        ]
        for name, settings in executors.items()
    }


def test_the_hub_token_secret_is_wired_as_env_and_no_value_is_compiled(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # the compiling machine's own token stays out
    path = compile_pipeline(config(hf_token_secret="hf-token"), tmp_path / "pipeline.yaml")
    spec, platform = load_ir(path)
    sources = token_sources(platform)
    assert set(sources) == set(spec["deploymentSpec"]["executors"])
    assert all(("hf-token", "token", "HF_TOKEN") in secrets for secrets in sources.values())
    assert TOKEN not in path.read_text()


def test_without_a_token_secret_no_task_reads_hf_token(tmp_path) -> None:
    path = compile_pipeline(config(), tmp_path / "pipeline.yaml")
    sources = token_sources(load_ir(path)[1])
    assert not any(env == "HF_TOKEN" for secrets in sources.values() for *_, env in secrets)


def test_model_loading_tasks_cache_models_in_a_pod_volume(tmp_path) -> None:
    spec, platform = load_ir(compile_pipeline(config(), tmp_path / "pipeline.yaml"))
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    containers = spec["deploymentSpec"]["executors"]
    cached = set()
    for name in containers:
        settings = executors.get(name, {})
        mounts = {mount["mountPath"] for mount in settings.get("emptyDirMounts", [])}
        env = {item["name"]: item["value"] for item in containers[name]["container"].get("env", [])}
        if "/var/cache/freemask" in mounts:
            assert env["FREEMASK_MODEL_CACHE"] == "/var/cache/freemask/models"
            assert env["HF_HOME"] == "/var/cache/freemask/huggingface"
            cached.add(re.sub(r"^exec-|-\d+$", "", name))
        else:
            assert "FREEMASK_MODEL_CACHE" not in env
    # The tasks that load models have the cache; joins and MLflow bookkeeping do not.
    assert {
        "generate",
        "relate",
        "compose",
        "refine",
        "harmonize",
        "pseudo-label",
        "train",
    } <= cached
    assert not cached & {"join", "start-run", "end-run", "filter-round", "prepare"}
    assert {"join", "start-run"} <= {re.sub(r"^exec-|-\d+$", "", name) for name in containers}
