"""How a stage writes its output prefix: per-sample commits, resumable, sharded, success marker last.

Layout under the prefix: the sample files (``images/``, ``masks/`` ...), the manifest
(``manifest.jsonl``, or ``parts/manifest-<i>-of-<n>.jsonl`` per shard before the join), the
rejected samples with their reasons (``rejected.jsonl``, per shard likewise) and ``_SUCCESS``,
a JSON summary written last. A sample counts as done once its record is committed; its files
are written before the record, so a crash leaves at most files that the re-run overwrites with
the same bytes.

How a record is committed depends on the storage. Locally it is appended to the manifest under
a lock. An object store allows about one write per second to one object name, so there each
record is its own write-once object (``pending/manifest/<id>.json``, or per shard under
``parts/pending-<i>-of-<n>/``) and ``finish`` compacts them into the manifest, sorted by id,
before ``_SUCCESS``: commits scale with workers, and the result does not depend on how many
runs it took.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from pydantic import BaseModel

from freemask.builtin_models import BUILTIN_PREFIX, builtin_weights_digest
from freemask.config import recorded_values
from freemask.errors import FreemaskError, ManifestError, WriteConflictError
from freemask.records import (
    MANIFEST,
    Sample,
    append_manifest,
    parse_manifest,
    read_manifest,
    serialize_samples,
    write_manifest,
)
from freemask.storage import Storage, read_json, read_json_object, write_json

COMPACT_THREADS = 32  # parallel reads and deletes when pending records are compacted

SUCCESS = "_SUCCESS"
REJECTED = "rejected.jsonl"
SETTINGS = "stage.json"


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based): the items whose position modulo count is index."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise FreemaskError(f"shard {self.index}/{self.count}: expected 0 <= i < n, n >= 1")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """Parse ``"i/n"`` (e.g. ``"2/8"``)."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match:
            raise FreemaskError(f"--shard {text!r}: expected i/n, e.g. 0/4")
        return cls(int(match.group(1)), int(match.group(2)))

    def select(self, items: list) -> list:
        """This shard's share of ``items``."""
        return items[self.index :: self.count]

    @property
    def manifest_path(self) -> str:
        if self.count == 1:
            return MANIFEST
        return f"parts/manifest-{self.index:05d}-of-{self.count:05d}.jsonl"

    @property
    def rejected_path(self) -> str:
        if self.count == 1:
            return REJECTED
        return f"parts/rejected-{self.index:05d}-of-{self.count:05d}.jsonl"

    @property
    def pending_path(self) -> str:
        """Where records wait as one object each (object stores) until ``finish``."""
        if self.count == 1:
            return "pending"
        return f"parts/pending-{self.index:05d}-of-{self.count:05d}"

    @property
    def success_path(self) -> str:
        if self.count == 1:
            return SUCCESS
        return f"parts/_SUCCESS-{self.index:05d}-of-{self.count:05d}"


@dataclass
class StageResult:
    """What a stage run did: where it wrote and how many samples it wrote, skipped and dropped."""

    stage: str
    output: str
    written: int = 0
    skipped: int = 0
    dropped: int = 0
    seconds: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "output": self.output,
            "written": self.written,
            "skipped": self.skipped,
            "dropped": self.dropped,
            "seconds": round(self.seconds, 3),
            "summary": self.summary,
        }


class StageOutput:
    """Writes one stage's (shard's) samples: skip what is done, commit each sample whole."""

    def __init__(
        self,
        storage: Storage,
        stage: str,
        shard: Shard = Shard(),
        settings_hash: str | None = None,
        settings: dict[str, Any] | None = None,
    ):
        self.storage = storage
        self.shard = shard
        self.result = StageResult(stage=stage, output=storage.uri)
        self._started = time.monotonic()
        self._settings = settings_record(stage, settings_hash, settings)
        self._claimed = self._settings["settings_hash"] is None
        if not self._claimed and storage.exists(SETTINGS):
            check_settings(storage, self._settings)
            self._claimed = True
        storage.remove_temporary()
        self._per_record = not storage.appends_cheaply
        self._done = self._read_done_ids()

    def _claim(self) -> None:
        """Record the settings this prefix's samples are made with, before the first write, so a
        later run with other settings is refused instead of mixing two configurations. Written
        once: of two shards started together with different settings, the second is refused."""
        if not self._claimed:
            claim_settings(self.storage, self._settings)
            self._claimed = True

    def _read_done_ids(self) -> set[str]:
        paths = [self.shard.manifest_path]
        rejected = [self.shard.rejected_path]
        if self.shard.count > 1:
            paths.append(MANIFEST)
            rejected.append(REJECTED)
        done = {
            sample.id
            for path in paths
            if self.storage.exists(path)
            for sample in read_manifest(self.storage, path)
        }
        done.update(entry["id"] for path in rejected for entry in read_rejected(self.storage, path))
        done.update(PurePosixPath(name).stem for name in self.storage.list(self.shard.pending_path))
        return done

    def pending(self, sample_ids: list[str]) -> set[str]:
        """The ids not committed or rejected by an earlier run; the others count as skipped."""
        todo = {sample_id for sample_id in sample_ids if sample_id not in self._done}
        self.result.skipped += len(set(sample_ids) - todo)
        return todo

    def is_done(self, sample_id: str) -> bool:
        """True if the sample was committed by an earlier run; counts it as skipped."""
        if sample_id in self._done:
            self.result.skipped += 1
            return True
        return False

    def commit(self, sample: Sample, files: dict[str, bytes]) -> None:
        """Write the sample's files, then its record; the record makes it count as done."""
        unwritten = [
            path for path in sample.files() if path not in files and not self.storage.exists(path)
        ]
        if unwritten:
            raise ManifestError(
                f"sample {sample.id}: record refers to files not written: {sorted(unwritten)}"
            )
        self._claim()
        for path, data in files.items():
            self.storage.write_bytes(path, data)
        if self._per_record:
            self._write_record("manifest", sample.id, serialize_samples([sample]))
        else:
            append_manifest(self.storage, [sample], self.shard.manifest_path)
        self._done.add(sample.id)
        self.result.written += 1

    def drop(self, sample_id: str, reason: str) -> None:
        """Record a sample rejected (e.g. an empty mask) rather than written, with the reason.

        The record makes it count as done: a re-run does not try it again.
        """
        self._claim()
        line = (json.dumps({"id": sample_id, "reason": reason}, sort_keys=True) + "\n").encode()
        if self._per_record:
            self._write_record("rejected", sample_id, line)
        else:
            self.storage.append_lines(self.shard.rejected_path, line)
        self._done.add(sample_id)
        self.result.dropped += 1

    def finish(
        self, summary: dict[str, Any] | Callable[[], dict[str, Any]] | None = None
    ) -> StageResult:
        """Write the success marker (per shard when sharded) with the run's summary; its
        ``written`` and ``dropped`` count the whole output, so they do not depend on how many
        runs it took to make it. A callable ``summary`` is called once the records are in the
        shard's manifest and rejected list (on object stores they wait as objects until here)."""
        self._claim()
        if self._per_record:
            self._compact()
        self.result.seconds = time.monotonic() - self._started
        self.result.summary = (summary() if callable(summary) else summary) or {}
        paths = self.shard.manifest_path, self.shard.rejected_path
        totals = {
            "written": len(read_manifest(self.storage, paths[0]))
            if self.storage.exists(paths[0])
            else 0,
            "dropped": len(read_rejected(self.storage, paths[1])),
        }
        write_success(self.storage, self.shard.success_path, {**self.result.to_json(), **totals})
        return self.result

    def _write_record(self, kind: str, sample_id: str, line: bytes) -> None:
        """Commit one record as its own write-once object; the same record again is a no-op
        (a retry, or the same shard run twice at once), a different one is an error."""
        path = f"{self.shard.pending_path}/{kind}/{sample_id}.json"
        try:
            self.storage.write_bytes(path, line, write_once=True)
        except WriteConflictError:
            if self.storage.read_bytes(path) != line:
                raise ManifestError(
                    f"{self.storage.uri}/{path}: sample {sample_id} is already committed with a "
                    "different record (two runs with other results write this prefix)"
                ) from None

    def _compact(self) -> None:
        """Merge the pending record objects into the shard's manifest and rejected list
        (sorted by id), then delete them; a kill in between leaves both, which agree."""
        names = self.storage.list(self.shard.pending_path)
        if not names:
            return
        with ThreadPoolExecutor(COMPACT_THREADS) as pool:
            contents = dict(zip(names, pool.map(self.storage.read_bytes, names), strict=True))
        where = f"{self.storage.uri}/{self.shard.pending_path}"
        records = b"".join(data for name, data in contents.items() if "/manifest/" in name)
        samples = {sample.id: sample for sample in parse_manifest(records, where)}
        manifest = self.shard.manifest_path
        if self.storage.exists(manifest):
            samples.update((s.id, s) for s in read_manifest(self.storage, manifest))
        write_manifest(self.storage, [samples[key] for key in sorted(samples)], manifest)
        rejected = {e["id"]: e for e in read_rejected(self.storage, self.shard.rejected_path)}
        for name, data in contents.items():
            if "/rejected/" in name:
                entry = json.loads(data)
                rejected[entry["id"]] = entry
        if rejected:
            lines = "".join(
                json.dumps(rejected[k], sort_keys=True) + "\n" for k in sorted(rejected)
            )
            self.storage.write_bytes(self.shard.rejected_path, lines.encode())
        with ThreadPoolExecutor(COMPACT_THREADS) as pool:
            list(pool.map(self.storage.delete, names))


def settings_of(section: BaseModel, name: str, exclude: set[str] | None = None) -> dict[str, Any]:
    """A config section's resolved values as ``{"<name>.<field>": value}`` (less ``exclude``,
    and less settings added since at their old behaviour: ``config.recorded_values``): what a
    prefix records of the settings its output was made with."""
    values = recorded_values(section, exclude)
    return {f"{name}.{key}": value for key, value in values.items()}


def classes_setting(classes: list[str]) -> str:
    """A run's class list as one settings value: its length and digest (a list of thousands of
    names would swamp the record and a refusal naming it)."""
    digest = hashlib.sha256("\n".join(classes).encode()).hexdigest()[:12]
    return f"{len(classes)} classes, sha256 {digest}"


def settings_record(
    stage: str, settings_hash: str | None, settings: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The settings record a prefix keeps (``stage.json``): the stage, a hash of its settings
    (``settings_hash``, else one of ``settings``) and, where given, the settings themselves, so
    that a refusal can name the changed fields."""
    if settings_hash is None and settings is not None:
        canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"))
        settings_hash = hashlib.sha256(canonical.encode()).hexdigest()[:12]
    record: dict[str, Any] = {"stage": stage, "settings_hash": settings_hash}
    if settings is not None:
        record["settings"] = settings
        weights = shipped_weights(settings)
        if weights:
            record["weights"] = weights
    return record


def shipped_weights(settings: dict[str, Any]) -> dict[str, str]:
    """``{setting: digest}`` of the settings that name a shipped ``builtin:`` model: its weights
    change with the release while its id does not, so the id alone cannot guard an output."""
    digests = {
        key: builtin_weights_digest(value)
        for key, value in settings.items()
        if isinstance(value, str) and value.startswith(BUILTIN_PREFIX)
    }
    return {key: digest for key, digest in digests.items() if digest}


def changed_weights(recorded: dict[str, Any], record: dict[str, Any]) -> list[str]:
    """The shipped models whose weights differ between two settings records (only where both
    record them: an output made before weights were recorded is judged by its settings)."""
    before, now = recorded.get("weights"), record.get("weights") or {}
    if not isinstance(before, dict):
        return []
    return [
        f"{key} {record['settings'][key]!r} weights sha256 {before[key]} -> {digest}"
        for key, digest in sorted(now.items())
        if key in before and before[key] != digest
    ]


def claim_settings(storage: Storage, record: dict[str, Any]) -> None:
    """Record the settings a prefix's output is made with, once, before its first write; a
    prefix that already holds output made with other settings is refused (``check_settings``).
    Of two writers started together with different settings, the second is refused."""
    try:
        write_json(storage, SETTINGS, record, write_once=True)
    except WriteConflictError:
        check_settings(storage, record)


def check_settings(storage: Storage, record: dict[str, Any]) -> None:
    """Refuse a prefix whose output was made with other settings, or with other weights of a
    shipped model, naming the changed fields where both records hold them (a mix of two
    configurations is never written)."""
    recorded = read_json_object(storage, SETTINGS)
    weights = changed_weights(recorded, record)
    if recorded.get("settings_hash") == record["settings_hash"] and not weights:
        return
    before, now = recorded.get("settings"), record.get("settings")
    changed = []
    if isinstance(before, dict) and now is not None:
        changed = [
            f"{key} {before.get(key, '(unset)')!r} -> {now.get(key, '(unset)')!r}"
            for key in sorted(set(before) | set(now))
            if before.get(key) != now.get(key)
        ]
    changed += weights
    if changed:
        more = f"; and {len(changed) - 5} more" if len(changed) > 5 else ""
        what = f"other settings ({'; '.join(changed[:5])}{more})"
    else:
        what = (
            f"other settings (hash {recorded.get('settings_hash')}, now {record['settings_hash']})"
        )
    raise FreemaskError(
        f"{storage.uri}: holds {recorded.get('stage')} output made with {what}; write to a new "
        "--out or workdir, make a new dataset version (freemask run --refresh), or remove the "
        "old output"
    )


def write_success(storage: Storage, path: str, summary: dict[str, Any]) -> None:
    """Write a success marker once: a re-run of a finished stage keeps the first summary."""
    with contextlib.suppress(WriteConflictError):
        write_json(storage, path, summary, write_once=True)


def require_finished(storage: Storage, what: str) -> None:
    """Refuse to read an unfinished stage output (no ``_SUCCESS``): the samples there are not
    all made yet, and what is made from them would be missing the rest for good."""
    if not storage.exists(SUCCESS):
        shards = [name for name in storage.list("parts") if "/_SUCCESS-" in name]
        hint = (
            f"; {len(shards)} shard(s) finished: run `freemask join` once all have"
            if shards
            else "; finish (re-run) the stage that writes it first"
        )
        raise FreemaskError(f"{storage.uri}: {what} is unfinished (no {SUCCESS}){hint}")


def read_finished_manifest(storage: Storage, what: str) -> list[Sample]:
    """The samples of a finished stage output; FreemaskError when unfinished or empty."""
    require_finished(storage, what)
    samples = read_manifest(storage)
    if not samples:
        raise FreemaskError(f"{storage.uri}/{MANIFEST}: {what} has no samples")
    return samples


def join_shards(storage: Storage, stage: str, count: int) -> StageResult:
    """Merge the per-shard manifests of a finished sharded stage into one manifest and _SUCCESS.

    Raises FreemaskError naming the shards that have not finished.
    """
    shards = [Shard(index, count) for index in range(count)]
    unfinished = [shard.index for shard in shards if not storage.exists(shard.success_path)]
    if unfinished:
        raise FreemaskError(
            f"{storage.uri}: cannot join {stage}: shards {unfinished} of {count} have not finished"
        )
    samples: dict[str, Sample] = {}
    rejected: dict[str, dict] = {}
    result = StageResult(stage=stage, output=storage.uri)
    for shard in shards:
        rejected.update(
            (entry["id"], entry) for entry in read_rejected(storage, shard.rejected_path)
        )
        shard_summary = read_json(storage, shard.success_path)
        result.skipped += shard_summary.get("skipped", 0)
        result.dropped += shard_summary.get("dropped", 0)
        result.seconds += shard_summary.get("seconds", 0.0)
        if storage.exists(shard.manifest_path):
            samples.update(
                (sample.id, sample) for sample in read_manifest(storage, shard.manifest_path)
            )
    ordered = [samples[key] for key in sorted(samples)]
    write_manifest(storage, ordered)
    if rejected:
        lines = "".join(
            json.dumps(rejected[key], sort_keys=True) + "\n" for key in sorted(rejected)
        )
        storage.write_bytes(REJECTED, lines.encode())
    result.written = len(ordered)
    result.summary = {"shards": count}
    write_success(storage, SUCCESS, result.to_json())
    return result


def is_complete(storage: Storage) -> bool:
    """True if the prefix holds a finished stage output."""
    return storage.exists(SUCCESS)


def read_rejected(storage: Storage, path: str = REJECTED) -> list[dict[str, str]]:
    """The rejected-sample entries ({id, reason}) under ``path``; empty when there are none.

    Lines that do not parse (a torn append from an interrupted run) are skipped.
    """
    if not storage.exists(path):
        return []
    entries = []
    for number, line in enumerate(storage.read_bytes(path).decode("utf-8").splitlines(), 1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            raise ManifestError(f"{storage.uri}/{path}:{number}: expected {{id, reason}}")
        entries.append(entry)
    return entries
