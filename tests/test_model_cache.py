"""The model cache checks what it hands out: a cached file changed after its verified fetch is
never used, and a manifest naming a file outside its folder is refused before any folder is
made."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import freemask.model_cache as model_cache
from freemask.errors import FreemaskError
from freemask.model_cache import MANIFEST, build_manifest, encode_manifest, fetch_model

WEIGHTS = b"\x00\x01weights" * 1000


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    """A mirrored model folder (a local one: fetch_model reads any storage URI)."""
    folder = tmp_path / "mirror" / "model@sha-1"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "model.safetensors").write_bytes(WEIGHTS)
    (folder / "config.json").write_text('{"layers": 2}')
    files = {name: folder / name for name in ["unet/model.safetensors", "config.json"]}
    (folder / MANIFEST).write_bytes(encode_manifest(build_manifest(files, "model", "sha-1")))
    return folder


def count_hashes(monkeypatch) -> list[Path]:
    hashed: list[Path] = []
    real = model_cache.file_sha256

    def counting(path: Path) -> str:
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(model_cache, "file_sha256", counting)
    return hashed


def test_a_same_size_edit_of_a_cached_file_is_never_used(mirror, tmp_path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    folder = fetch_model(str(mirror), cache)
    weights = folder / "unet" / "model.safetensors"
    assert weights.read_bytes() == WEIGHTS
    # The same size, the modification time set back: only the content (and ctime) differ.
    stamp = weights.stat()
    data = bytearray(WEIGHTS)
    data[5] ^= 0xFF
    with open(weights, "r+b") as stream:
        stream.write(data)
    os.utime(weights, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert weights.stat().st_size == len(WEIGHTS)

    assert fetch_model(str(mirror), cache) == folder
    assert weights.read_bytes() == WEIGHTS  # downloaded again, verified


def test_an_unchanged_cache_is_not_hashed_again(mirror, tmp_path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    folder = fetch_model(str(mirror), cache)
    hashed = count_hashes(monkeypatch)
    assert fetch_model(str(mirror), cache) == folder
    assert hashed == []
    # Touched (another mtime), same bytes: hashed once, found good, the new stamp recorded.
    os.utime(folder / "config.json", ns=(1, 1))
    assert fetch_model(str(mirror), cache) == folder
    assert hashed == [folder / "config.json"]
    hashed.clear()
    assert fetch_model(str(mirror), cache) == folder
    assert hashed == []


def test_a_cache_made_before_verification_records_is_hashed_once(mirror, tmp_path) -> None:
    cache = tmp_path / "cache"
    folder = fetch_model(str(mirror), cache)
    (folder / model_cache.VERIFIED).unlink()
    assert fetch_model(str(mirror), cache) == folder
    recorded = json.loads((folder / model_cache.VERIFIED).read_text())["files"]
    assert sorted(recorded) == ["config.json", "unet/model.safetensors"]


def test_a_cached_file_replaced_by_a_link_is_downloaded_again(mirror, tmp_path) -> None:
    cache = tmp_path / "cache"
    folder = fetch_model(str(mirror), cache)
    elsewhere = tmp_path / "elsewhere.safetensors"
    elsewhere.write_bytes(WEIGHTS)
    (folder / "unet" / "model.safetensors").unlink()
    (folder / "unet" / "model.safetensors").symlink_to(elsewhere)
    assert fetch_model(str(mirror), cache) == folder
    assert not (folder / "unet" / "model.safetensors").is_symlink()


@pytest.mark.parametrize(
    "name",
    ["../../outside/x.bin", "{tmp}/abs/x.bin", "unet/../../x.bin", "a//b", "./a", "a\x00b", ""],
)
def test_a_manifest_naming_a_file_outside_its_folder_is_refused_first(
    mirror, tmp_path, name
) -> None:
    name = name.replace("{tmp}", str(tmp_path))  # an absolute path: made nowhere else
    manifest = json.loads((mirror / MANIFEST).read_text())
    manifest["files"][name] = {"sha256": "0" * 64, "size": 1}
    (mirror / MANIFEST).write_bytes(encode_manifest(manifest))
    before = sorted(str(path) for path in tmp_path.rglob("*"))
    with pytest.raises(FreemaskError, match=r"model-manifest\.json: file name .* refusing"):
        fetch_model(str(mirror), tmp_path / "cache" / "models")
    assert sorted(str(path) for path in tmp_path.rglob("*")) == before


def test_a_same_size_edit_in_the_cache_of_a_bucket_mirror(
    tmp_path, mirror, gcs_client, gcs_bucket, gcs_emulator, monkeypatch
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    monkeypatch.setenv(model_cache.CACHE_ENV, str(tmp_path / "cache"))
    bucket = gcs_client.bucket(gcs_bucket)
    for path in sorted(mirror.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            bucket.blob(f"m/model/{path.relative_to(mirror)}").upload_from_filename(str(path))
    bucket.blob(f"m/model/{MANIFEST}").upload_from_filename(str(mirror / MANIFEST))
    uri = f"gs://{gcs_bucket}/m/model"
    local = Path(model_cache.resolve_model_source(uri, "segment.model_id"))
    weights = local / "unet" / "model.safetensors"
    with open(weights, "r+b") as stream:
        stream.write(b"\xff")
    assert Path(model_cache.resolve_model_source(uri, "segment.model_id")) == local
    assert weights.read_bytes() == WEIGHTS
