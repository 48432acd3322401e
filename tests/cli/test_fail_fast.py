"""Mistakes caught in seconds: each ends in one line and exit code 2 well within 10 s, before any
stage runs or any file is made (a misspelt class, an unreachable tracking server or bucket, a
cron out of range, a reading command without a store)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml
from services import free_port

from freemask.cli import main
from freemask.config import RunConfig
from freemask.preflight import PreflightError, preflight

DEMO = Path(__file__).parents[2] / "configs" / "demo.yaml"
FAST = 10.0  # seconds: every mistake here must be told sooner


def run_cli(argv: list[str], capsys) -> tuple[int, list[str], float]:
    """Exit code, stderr lines and seconds of ``freemask argv`` (its stdout in ``LAST_OUT``)."""
    started = time.monotonic()
    code = main(argv)
    seconds = time.monotonic() - started
    captured = capsys.readouterr()
    LAST_OUT[:] = [captured.out]
    return code, captured.err.splitlines(), seconds


LAST_OUT: list[str] = [""]


def demo_with(tmp_path: Path, **changes) -> Path:
    """configs/demo.yaml (its thesaurus beside it) with ``changes``, work directory in tmp."""
    data = yaml.safe_load(DEMO.read_text())
    data["relate"]["thesaurus"] = str(DEMO.parent / "demo_thesaurus.yaml")
    data.update(workdir=str(tmp_path / "work"), **changes)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def config_with(tmp_path: Path, **fields) -> Path:
    path = tmp_path / "run.yaml"
    data = {"name": "fast", "workdir": str(tmp_path / "work"), "classes": ["cat", "dog"]}
    path.write_text(yaml.safe_dump({**data, **fields}))
    return path


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (connections are refused at once)."""
    return free_port()


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A server on 127.0.0.1 that takes connections and never answers (a hung MLflow)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


# Classes.


def test_a_misspelt_demo_class_is_refused_with_the_class_it_resembles(tmp_path, capsys) -> None:
    config = demo_with(tmp_path, classes=["ball", "box", "rnig", "cone", "cross"])
    code, lines, seconds = run_cli(["config", "validate", str(config)], capsys)
    assert code == 2 and seconds < FAST
    (line,) = lines
    assert line.startswith(f"error: {config}: classes: 'rnig': ")
    assert "builtin:toy-sd knows no word 'rnig'" in line
    assert "segment.labeller builtin:toy-labeller has no label 'rnig'" in line
    assert line.endswith("did you mean 'ring'?")


def test_run_refuses_a_misspelt_class_before_any_stage(tmp_path, capsys) -> None:
    config = demo_with(tmp_path, classes=["ball", "rnig"])
    code, lines, seconds = run_cli(["run", "-c", str(config)], capsys)
    assert code == 2 and seconds < FAST
    assert len(lines) == 1 and "did you mean 'ring'?" in lines[0]
    assert not (tmp_path / "work").exists()  # generate never started


def test_the_demo_config_passes(tmp_path, capsys) -> None:
    code, _, seconds = run_cli(["config", "validate", str(demo_with(tmp_path))], capsys)
    assert code == 0 and seconds < FAST
    assert not (tmp_path / "work").exists()


class WordEncoder:
    """A text encoder for the matcher: a name's vector is its bag of letters (so names that
    share letters are near), normalised."""

    def encode(self, texts, normalize_embeddings=True, show_progress_bar=False):
        vectors = np.zeros((len(texts), 26), dtype=np.float32)
        for row, text in enumerate(texts):
            for char in text:
                if char.isalpha() and char.isascii():
                    vectors[row, ord(char.lower()) - ord("a")] += 1
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-6)


def test_a_class_the_matcher_cannot_place_is_refused_and_one_it_can_passes(tmp_path) -> None:
    table = DEMO.parent / "demo_thesaurus.yaml"
    config = RunConfig.model_validate(
        {
            "classes": ["ball", "llab", "zzqx"],
            "workdir": str(tmp_path / "work"),
            "relate": {"thesaurus": str(table), "similarity_threshold": 0.9},
        }
    )
    with pytest.raises(PreflightError) as refused:
        preflight(config, "run.yaml", reach=False, encoder=WordEncoder())
    (line,) = str(refused.value).splitlines()  # 'llab' has ball's letters: matched
    assert line.startswith("run.yaml: classes: 'zzqx': not in the relation table")
    assert "relate.similarity_threshold 0.90" in line


def test_a_class_outside_the_table_passes_when_no_matcher_loads_here(tmp_path) -> None:
    config = RunConfig.model_validate(
        {"classes": ["cat", "zzqx"], "relate": {"embedding_model": str(tmp_path / "none")}}
    )
    notes = preflight(config, "run.yaml", reach=False)
    assert any("'zzqx'" in note and "known when relate runs" in note for note in notes)


def labeller_folder(tmp_path: Path, labels: list[str]) -> Path:
    folder = tmp_path / "labeller"
    folder.mkdir()
    id2label = {str(index): label for index, label in enumerate(["background", *labels])}
    (folder / "config.json").write_text(json.dumps({"id2label": id2label}))
    return folder


def test_a_class_the_labeller_lacks_is_refused_unless_mapped(tmp_path, capsys) -> None:
    folder = labeller_folder(tmp_path, ["cat", "puppy"])
    config = config_with(tmp_path, segment={"labeller": str(folder)})
    code, lines, seconds = run_cli(["config", "validate", "--offline", str(config)], capsys)
    assert code == 2 and seconds < FAST
    (line,) = lines
    assert f"classes: 'dog': segment.labeller {folder} has no label 'dog'" in line
    mapped = config_with(tmp_path, segment={"labeller": str(folder), "label_map": {"dog": "puppy"}})
    assert main(["config", "validate", "--offline", str(mapped)]) == 0


# Config keys.


def test_a_misspelt_key_says_which_key_was_meant(tmp_path, capsys) -> None:
    config = config_with(tmp_path, generate={"images_per_clas": 3})
    code, lines, _ = run_cli(["config", "validate", str(config)], capsys)
    assert code == 2
    (line,) = lines
    assert "generate.images_per_clas: unknown key; did you mean 'images_per_class'?" in line


# Tracking.


def test_run_against_an_unreachable_tracking_server_is_one_line(
    tmp_path, capsys, closed_port
) -> None:
    config = config_with(tmp_path, tracking={"uri": f"http://127.0.0.1:{closed_port}"})
    code, lines, seconds = run_cli(["run", "-c", str(config)], capsys)
    assert code == 2 and seconds < FAST
    (line,) = lines
    assert (
        f"tracking.uri http://127.0.0.1:{closed_port}: the MLflow server is not reachable" in line
    )
    assert "connection refused" in line
    assert not (tmp_path / "work").exists()


def test_a_tracking_server_that_never_answers_is_given_up_on_in_seconds(
    tmp_path, capsys, silent_server, monkeypatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", silent_server)
    config = config_with(tmp_path)
    code, lines, seconds = run_cli(["config", "validate", str(config)], capsys)
    assert code == 2 and seconds < FAST
    (line,) = lines
    assert f"MLFLOW_TRACKING_URI {silent_server}: the MLflow server is not reachable" in line
    assert "no answer within 5 s" in line


class RefusingServer(BaseHTTPRequestHandler):
    """An MLflow behind a proxy that wants a password nobody gave."""

    def do_GET(self) -> None:
        self.send_response(401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_server_that_refuses_the_credentials_is_one_line(tmp_path, capsys) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), RefusingServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        uri = f"http://127.0.0.1:{server.server_address[1]}"
        config = config_with(tmp_path, tracking={"uri": uri})
        code, lines, seconds = run_cli(["run", "-c", str(config)], capsys)
    finally:
        server.shutdown()
        server.server_close()
    assert code == 2 and seconds < FAST
    (line,) = lines
    assert "it refused the credentials (HTTP 401)" in line and "MLFLOW_TRACKING_TOKEN" in line


def test_a_cluster_internal_tracking_address_is_not_probed_by_validate(tmp_path, capsys) -> None:
    uri = "http://mlflow.freemask.svc.cluster.local:5000"
    config = config_with(tmp_path, tracking={"uri": uri})
    code, _, seconds = run_cli(["config", "validate", str(config)], capsys)
    assert code == 0 and seconds < FAST
    assert f"not checked: tracking {uri}: a cluster-internal address" in LAST_OUT[0]


def test_compare_against_an_unreachable_server_is_one_line(capsys, closed_port) -> None:
    uri = f"http://127.0.0.1:{closed_port}"
    code, lines, seconds = run_cli(["compare", "abc123", "--tracking-uri", uri], capsys)
    assert code == 2 and seconds < FAST
    (line,) = lines
    assert line.startswith(f"error: --tracking-uri {uri}: the MLflow server is not reachable")


def test_compare_without_a_store_creates_none_and_says_where_to_point(
    tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code, lines, seconds = run_cli(["compare", "abc123"], capsys)
    assert code == 2 and seconds < FAST
    (line,) = lines
    assert "--tracking-uri" in line and "--config" in line
    assert list(tmp_path.iterdir()) == []  # no ./mlflow.db, no ./mlruns


def test_compare_with_a_config_reads_its_workdir_store_and_makes_none(
    tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = config_with(tmp_path)
    code, lines, _ = run_cli(["compare", "abc123", "-c", str(config)], capsys)
    assert code == 2
    (line,) = lines
    assert f"the store of workdir sqlite:///{tmp_path / 'work' / 'mlflow.db'}" in line
    assert "no MLflow store there" in line
    assert list(tmp_path.iterdir()) == [config]  # the workdir was not made to read it


def test_compare_finds_the_one_store_under_runs(tmp_path, capsys, monkeypatch) -> None:
    from freemask.tracking import MlflowTracker

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "runs" / "demo").mkdir(parents=True)
    store = f"sqlite:///{tmp_path / 'runs' / 'demo' / 'mlflow.db'}"
    tracker = MlflowTracker(store, "freemask-demo")
    parent = tracker.start_run("demo")
    capsys.readouterr()
    code, lines, _ = run_cli(["compare", parent.run_id], capsys)
    assert code == 2
    assert lines[0] == "reading the MLflow store runs/demo/mlflow.db"
    assert lines[1] == f"error: MLflow run {parent.run_id!r} has no active-learning rounds"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["runs"]


# Storage.


def test_a_workdir_in_a_missing_bucket_is_one_line(
    tmp_path, capsys, monkeypatch, gcs_emulator
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "freemask-test")
    config = config_with(tmp_path, workdir="gs://no-such-bucket-here/work")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///" + str(tmp_path / "m.db"))
    code, lines, seconds = run_cli(["config", "validate", str(config)], capsys)
    assert code == 2 and seconds < FAST
    (line,) = lines
    assert "workdir gs://no-such-bucket-here/work: bucket 'no-such-bucket-here' does not exist" in (
        line
    )


def test_a_workdir_in_an_existing_bucket_passes(
    tmp_path, capsys, monkeypatch, gcs_emulator, gcs_bucket
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "freemask-test")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///" + str(tmp_path / "m.db"))
    config = config_with(tmp_path, workdir=f"gs://{gcs_bucket}/work")
    code, _, seconds = run_cli(["config", "validate", str(config)], capsys)
    assert code == 0 and seconds < FAST


def test_a_gcs_workdir_without_credentials_is_one_line(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-credentials.json"))
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///" + str(tmp_path / "m.db"))
    config = config_with(tmp_path, workdir="gs://some-bucket/work")
    code, lines, seconds = run_cli(["config", "validate", str(config)], capsys)
    assert code == 2 and seconds < FAST
    (line,) = lines
    assert "no usable Google Cloud credentials" in line
    assert main(["config", "validate", "--offline", str(config)]) == 0


# Cron.


@pytest.mark.parametrize(
    ("cron", "words"),
    [
        ("99 3 * * *", "minute '99' (expected 0-59)"),
        ("0 24 * * *", "hour '24' (expected 0-23)"),
        ("0 3 * 13 *", "month '13'"),
        ("0 3 31 2 *", "never fires"),
        ("0 3 * *", "expected five cron fields"),
    ],
)
def test_schedule_refuses_a_bad_cron_before_anything_else(tmp_path, capsys, cron, words) -> None:
    argv = ["schedule", "--host", "http://kfp.invalid", "-c", str(tmp_path / "absent.yaml")]
    code, lines, seconds = run_cli([*argv, "--cron", cron], capsys)
    assert code == 2 and seconds < FAST
    (line,) = lines
    assert line.startswith(f"error: --cron {cron!r}: ") and words in line


def test_submit_refuses_a_misspelt_class_before_sending(tmp_path, capsys) -> None:
    config = config_with(
        tmp_path,
        workdir="gs://b/work",
        classes=["ball", "rnig"],
        tracking={"uri": "http://mlflow.freemask.svc.cluster.local:5000"},
        generate={"model_id": "builtin:toy-sd"},
        active={"max_rounds": 2},
    )
    argv = ["submit", "--host", "http://kfp.invalid", "-c", str(config)]
    code, lines, seconds = run_cli([*argv, "-p", "config_uri=gs://b/run.yaml"], capsys)
    assert code == 2 and seconds < FAST
    (line,) = lines
    assert "classes: 'rnig': generate.model_id builtin:toy-sd knows no word 'rnig'" in line
