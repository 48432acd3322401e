"""Models without the hub: ``freemask models mirror`` to a bucket (the GCS emulator), then
``gs://`` model ids loaded from a verified per-machine cache, offline."""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import freemask.model_cache as model_cache
import freemask.model_mirror as model_mirror
from freemask.cli.main import main
from freemask.config import GenerateConfig, RunConfig, load_config
from freemask.errors import FreemaskError
from freemask.gcs_storage import GCSStorage
from freemask.model_cache import MANIFEST, ModelIntegrityError, resolve_model_source
from freemask.model_mirror import MODEL_FIELDS, hub_snapshot, mirror_models, mirror_overlay
from freemask.models import load_sd_pipeline
from freemask.segment import build_tiny_mask2former, load_segmenter, predict, run_labels
from freemask.toyworld.model import TOY_SD_ID

CLASSES = ["ball", "box"]


@pytest.fixture
def bucket(gcs_emulator, gcs_bucket, monkeypatch, tmp_path) -> str:
    """An emulator bucket that the default client reaches (as a pod's would reach GCS), and a
    fresh model cache."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    monkeypatch.setenv(model_cache.CACHE_ENV, str(tmp_path / "cache"))
    return gcs_bucket


@pytest.fixture
def segmenter_folder(tmp_path) -> Path:
    """A tiny Mask2Former saved as a checkpoint folder (safetensors), seeded."""
    folder = tmp_path / "tiny-segmenter"
    build_tiny_mask2former(run_labels(CLASSES), seed=3).save_pretrained(folder)
    return folder


def write_config(tmp_path: Path, segmenter_folder: Path) -> Path:
    path = tmp_path / "run.yaml"
    settings = {
        "name": "mirror-test",
        "workdir": str(tmp_path / "work"),
        "classes": CLASSES,
        "generate": {
            "model_id": TOY_SD_ID,
            "device": "cpu",
            "images_per_class": 1,
            "batch_size": 1,
            "num_inference_steps": 2,
            "height": 64,
            "width": 64,
            "reject_implausible": False,
        },
        "segment": {"model_id": str(segmenter_folder), "image_size": 64},
    }
    path.write_text(yaml.safe_dump(settings))
    return path


def mirror_cli(config: Path, to: str, out: Path) -> int:
    only = ["--only", "generate.model_id", "--only", "segment.model_id"]
    return main(
        ["models", "mirror", "--config", str(config), "--to", to, "--write-config", str(out), *only]
    )


def count_downloads(monkeypatch) -> list[str]:
    """The names of the files the model cache downloads from the bucket from now on."""
    downloaded: list[str] = []
    real = GCSStorage.download_files

    def counting(store, files):
        downloaded.extend(files)
        real(store, files)

    monkeypatch.setattr(GCSStorage, "download_files", counting)
    return downloaded


def test_mirrored_models_load_from_the_bucket_offline(tmp_path, bucket, segmenter_folder) -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    config_path = write_config(tmp_path, segmenter_folder)
    mirrored = tmp_path / "mirrored.yaml"
    assert mirror_cli(config_path, f"gs://{bucket}/models", mirrored) == 0

    config = load_config(mirrored)
    assert config.generate.model_id.startswith(f"gs://{bucket}/models/builtin--toy-sd@sha-")
    assert config.segment.model_id.startswith(f"gs://{bucket}/models/local--tiny-segmenter@")
    pipe = load_sd_pipeline(config.generate)
    original = load_sd_pipeline(GenerateConfig(model_id=TOY_SD_ID, device="cpu"))
    for name, tensor in original.unet.state_dict().items():
        assert torch.equal(pipe.unet.state_dict()[name], tensor), name
    segmenter = load_segmenter(config.segment, CLASSES, trainable=False)
    reference = load_segmenter(
        config.segment.model_copy(update={"model_id": str(segmenter_folder)}),
        CLASSES,
        trainable=False,
    )
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert np.array_equal(predict(segmenter, [image])[0], predict(reference, [image])[0])


def test_a_generate_stage_runs_on_a_mirrored_model(tmp_path, bucket, segmenter_folder) -> None:
    config_path = write_config(tmp_path, segmenter_folder)
    mirrored = tmp_path / "mirrored.yaml"
    assert mirror_cli(config_path, f"gs://{bucket}/models", mirrored) == 0
    out = tmp_path / "generated"
    assert main(["generate", "--config", str(mirrored), "--out", str(out)]) == 0
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == len(CLASSES)
    assert all(record["model_id"].startswith(f"gs://{bucket}/models/") for record in records)


def test_a_whole_run_on_mirrored_models_needs_no_hub(tmp_path, bucket, segmenter_folder) -> None:
    # Every model the run uses (toy SD, the segmenter, relate's text embedder) is mirrored to
    # the bucket; the run then loads them from it, with the hub switched off.
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    config_path = write_config(tmp_path, segmenter_folder)
    raw = yaml.safe_load(config_path.read_text())
    raw["relate"] = {"thesaurus": str(Path(__file__).parents[1] / "configs/demo_thesaurus.yaml")}
    raw["compose"] = {"images": 4, "backgrounds_per_scene": 1, "objects_per_image": [1, 2]}
    raw["segment"].update(train_steps=2, checkpoint_every=2)
    raw["active"] = {"max_rounds": 1, "iou_threshold": 0.0}  # random weights agree little
    config_path.write_text(yaml.safe_dump(raw))
    mirrored = tmp_path / "mirrored.yaml"
    argv = ["models", "mirror", "--config", str(config_path), "--to", f"gs://{bucket}/models"]
    assert main([*argv, "--write-config", str(mirrored)]) == 0
    config = load_config(mirrored)
    assert config.generate.model_id.startswith("gs://")
    assert config.segment.model_id.startswith("gs://")
    assert main(["run", "--config", str(mirrored)]) == 0
    work = Path(config.workdir)
    assert (work / "active" / "_SUCCESS").exists()
    records = [
        json.loads(line) for line in (work / "generate/manifest.jsonl").read_text().splitlines()
    ]
    assert records and all(record["model_id"] == config.generate.model_id for record in records)


def test_a_second_load_uses_the_cache(tmp_path, bucket, segmenter_folder, monkeypatch) -> None:
    config = load_config(write_config(tmp_path, segmenter_folder))
    (result,) = mirror_models(config, f"gs://{bucket}/m", only=["segment.model_id"])
    downloaded = count_downloads(monkeypatch)
    first = Path(resolve_model_source(result.uri, "segment.model_id"))
    assert sorted(downloaded) == result.files
    mtimes = {path: path.stat().st_mtime_ns for path in first.rglob("*")}
    downloaded.clear()
    assert Path(resolve_model_source(result.uri, "segment.model_id")) == first
    assert downloaded == []
    assert {path: path.stat().st_mtime_ns for path in first.rglob("*")} == mtimes


def test_a_corrupted_mirror_file_is_named_and_never_used(
    tmp_path, bucket, gcs_client, segmenter_folder
) -> None:
    config = load_config(write_config(tmp_path, segmenter_folder))
    (result,) = mirror_models(config, f"gs://{bucket}/m", only=["segment.model_id"])
    name = result.uri.removeprefix(f"gs://{bucket}/") + "/model.safetensors"
    blob = gcs_client.bucket(bucket).blob(name)
    data = bytearray(blob.download_as_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    blob.upload_from_string(bytes(data))
    with pytest.raises(ModelIntegrityError, match=r"model\.safetensors: sha256 .* does not match"):
        resolve_model_source(result.uri, "segment.model_id")
    cache = Path(os.environ[model_cache.CACHE_ENV])
    assert [path.name for path in cache.iterdir() if not path.name.endswith(".lock")] == []


def test_an_interrupted_mirror_is_invisible_and_resumes(
    tmp_path, bucket, segmenter_folder, monkeypatch
) -> None:
    config = load_config(write_config(tmp_path, segmenter_folder))
    real = GCSStorage.upload_files

    def dies_after_one(store, files, metadata=None):
        first = next(iter(files))
        real(store, {first: files[first]}, metadata)
        raise KeyboardInterrupt

    monkeypatch.setattr(GCSStorage, "upload_files", dies_after_one)
    with pytest.raises(KeyboardInterrupt):
        mirror_models(config, f"gs://{bucket}/m", only=["segment.model_id"])
    monkeypatch.setattr(GCSStorage, "upload_files", real)
    listed = model_mirror.open_storage(f"gs://{bucket}/m").list()
    assert len(listed) == 1 and not any(name.endswith(MANIFEST) for name in listed)
    folder = f"gs://{bucket}/m/{listed[0].partition('/')[0]}"
    with pytest.raises(FreemaskError, match="not a mirrored model"):
        resolve_model_source(folder, "segment.model_id")

    (result,) = mirror_models(config, f"gs://{bucket}/m", only=["segment.model_id"])
    assert (result.uri, result.skipped, result.uploaded) == (folder, 1, len(result.files) - 1)
    (again,) = mirror_models(config, f"gs://{bucket}/m", only=["segment.model_id"])
    assert (again.uploaded, again.skipped) == (0, len(result.files))


def test_a_local_folder_mirror_of_a_weights_file(tmp_path) -> None:
    weights = tmp_path / "affinity.safetensors"
    weights.write_bytes(b"not really weights")
    config = RunConfig.model_validate(
        {"classes": CLASSES, "refine": {"method": "affinity", "weights": str(weights)}}
    )
    (result,) = mirror_models(config, str(tmp_path / "mirror"), only=["refine.weights"])
    assert result.uri.endswith("/affinity.safetensors")
    assert Path(result.uri).read_bytes() == weights.read_bytes()
    manifest = json.loads((Path(result.uri).parent / MANIFEST).read_text())
    assert manifest["files"]["affinity.safetensors"]["size"] == len(b"not really weights")
    assert mirror_overlay([result]) == {"refine": {"weights": result.uri}}


def test_builtin_code_models_are_not_copied(tmp_path) -> None:
    config = RunConfig.model_validate(
        {
            "classes": CLASSES,
            "generate": {"model_id": "builtin:tiny-sd"},
            "segment": {"model_id": "builtin:tiny-mask2former"},
        }
    )
    results = mirror_models(
        config, str(tmp_path / "m"), only=["generate.model_id", "segment.model_id"]
    )
    assert [result.uri for result in results] == [None, None]
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


def test_hub_snapshots_ask_for_configs_and_safetensors_only(tmp_path) -> None:
    """A fake hub: a diffusers repository with pickles, fp16 variants, a safety checker and a
    full checkpoint at its root, of which only the pipeline's safetensors and configs count."""
    commit = "a" * 40
    snapshot = tmp_path / "snapshots" / commit
    for name in [
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.bin",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "text_encoder/model.safetensors",
        "tokenizer/vocab.json",
        "safety_checker/model.safetensors",
        "v1-5-pruned.safetensors",
        "v1-5-pruned.ckpt",
    ]:
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).write_text("{}")
    index = {"_class_name": "StableDiffusionPipeline", "unet": [], "text_encoder": []}
    (snapshot / "model_index.json").write_text(json.dumps({**index, "safety_checker": []}))
    calls = []

    def download(repo_id, **options):
        calls.append(options)
        return str(snapshot)

    source = hub_snapshot("org/sd", None, download)
    assert source.revision == commit and calls[1]["revision"] == commit
    assert all(
        not pattern.endswith((".bin", ".ckpt", ".pt"))
        for call in calls
        for pattern in call["allow_patterns"]
    )
    assert sorted(source.files) == [
        "model_index.json",
        "text_encoder/model.safetensors",
        "tokenizer/vocab.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
    ]
    for name in ["unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"]:
        (snapshot / name).unlink()
    with pytest.raises(FreemaskError, match=r"no \.safetensors weights"):
        hub_snapshot("org/sd", None, download)


def test_gs_model_ids_are_valid_config_values(tmp_path) -> None:
    values = {spec.section: {} for spec in MODEL_FIELDS}
    for spec in MODEL_FIELDS:
        values[spec.section][spec.key] = f"gs://bucket/models/{spec.key}@abc"
    values["compose"]["placer"] = "fopa"
    values["harmonize"]["method"] = "pctnet"
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"classes": CLASSES, **values}))
    config = load_config(path)
    assert config.generate.model_id == "gs://bucket/models/model_id@abc"
    assert config.harmonize.weights == "gs://bucket/models/weights@abc"


def test_a_download_left_by_a_killed_process_is_cleaned_up(
    tmp_path, bucket, segmenter_folder
) -> None:
    config = load_config(write_config(tmp_path, segmenter_folder))
    (result,) = mirror_models(config, f"gs://{bucket}/m", only=["segment.model_id"])
    final = model_cache.fetch_model(result.uri)
    # A process killed mid-download: its temporary folder stays, the model folder never came.
    shutil.rmtree(final)
    leftover = final.parent / f".download-{final.name}-killed"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"half")
    assert model_cache.fetch_model(result.uri) == final
    assert not leftover.exists() and (final / "model.safetensors").exists()


def test_two_processes_of_a_pod_download_a_model_once(
    tmp_path, bucket, segmenter_folder, monkeypatch
) -> None:
    config = load_config(write_config(tmp_path, segmenter_folder))
    (result,) = mirror_models(config, f"gs://{bucket}/m", only=["segment.model_id"])
    downloaded = count_downloads(monkeypatch)
    with ThreadPoolExecutor(max_workers=2) as pool:
        folders = list(pool.map(model_cache.fetch_model, [result.uri] * 2))
    assert folders[0] == folders[1]
    assert sorted(downloaded) == result.files


def test_a_weights_file_in_a_gs_mirror_comes_from_the_cache(tmp_path, bucket) -> None:
    weights = tmp_path / "affinity.safetensors"
    weights.write_bytes(b"affinity weights")
    config = RunConfig.model_validate(
        {"classes": CLASSES, "refine": {"method": "affinity", "weights": str(weights)}}
    )
    (result,) = mirror_models(config, f"gs://{bucket}/m", only=["refine.weights"])
    local = Path(resolve_model_source(result.uri, "refine.weights"))
    assert local.is_relative_to(os.environ[model_cache.CACHE_ENV])
    assert local.read_bytes() == b"affinity weights"
    plain = f"gs://{bucket}/work/refine-model/model.safetensors"  # a run's own, not mirrored
    assert resolve_model_source(plain, "refine.weights", required=False) == plain
    with pytest.raises(FreemaskError, match=r"refine\.weights .*not a mirrored model"):
        resolve_model_source(plain, "refine.weights")
