"""Experiment tracking in MLflow: a parent run per pipeline run, a nested run per round.

Stages receive a ``Tracker`` (``MlflowTracker``, or ``NullTracker`` where nothing is logged);
they never reach for global MLflow state (what a run is and where it came from, its description
and source tags: ``freemask.run_description``). Models are logged as safetensors weights plus a JSON config, or
(the segmenter) as an MLflow pyfunc model saved as code (``freemask.segment.mlflow_model``),
and registered in the Model Registry; loading either back never unpickles anything.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Protocol

from freemask.errors import FreemaskError
from freemask.file_lock import exclusive_lock
from freemask.redact import redact, split_userinfo

PARENT_RUN_TAG = "mlflow.parentRunId"
MODEL_WEIGHTS = "model.safetensors"
MODEL_CONFIG = "config.json"
ARTIFACTS = "mlartifacts"  # beside a sqlite store: the artifacts of every run in it


def resolve_tracking_uri(
    configured: str | None,
    workdir: str,
    environ: Mapping[str, str] | None = None,
    credentials: tuple[str, str] | None = None,
    *,
    create: bool = True,
) -> str:
    """The tracking URI: the config's, else ``MLFLOW_TRACKING_URI``, else a sqlite file in a
    local workdir (its folder made unless ``create`` is False: a command that only reads makes
    nothing). ``credentials`` (``tracking.credentials``) or a user and password in the URI
    go to MLflow (``use_credentials``); the URI returned never holds them."""
    environ = os.environ if environ is None else environ
    if configured:
        return use_credentials(configured, credentials)
    if environ.get("MLFLOW_TRACKING_URI"):
        return use_credentials(environ["MLFLOW_TRACKING_URI"], credentials)
    if "://" in workdir and not workdir.startswith("file://"):
        raise FreemaskError(
            f"workdir {workdir} is remote: set tracking.uri (or MLFLOW_TRACKING_URI) to an MLflow server"
        )
    path = Path(workdir.removeprefix("file://")).expanduser().resolve()
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / 'mlflow.db'}"


PROBE_SECONDS = 5.0  # the longest a reachability probe of a tracking server may take


def probe_tracking(uri: str, timeout: float = PROBE_SECONDS) -> str | None:
    """Why the MLflow server at an http(s) ``uri`` cannot be used, or None when it answers
    ``GET /health`` (the MLflow server's health route) below HTTP 500. The request carries the
    credentials and TLS settings MLflow's client would send (``_probe_request``), so a refusal
    (401, 403) is told as one; it is one request, no retries, ``timeout`` seconds in all, name
    lookup included. Other URIs (a sqlite file) are not probed. Without it, MLflow's own client
    would retry an unreachable server ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` times (7) with a
    backoff factor of ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`` (2), each try waiting up to
    ``MLFLOW_HTTP_REQUEST_TIMEOUT`` (120 s): minutes of silence
    (mlflow/environment_variables.py)."""
    import socket
    import urllib.error
    import urllib.request

    from freemask.deadline import within

    if not uri.startswith(("http://", "https://")):
        return None
    request, context, checks_auth = _probe_request(uri)

    def get() -> int:
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as answer:
                return answer.status
        except urllib.error.HTTPError as exc:
            return exc.code

    ended, result = within(timeout, get)
    if not ended:
        return f"no answer within {timeout:.0f} s"
    if isinstance(result, int):
        if result in (401, 403) and checks_auth:
            return (
                f"it refused the credentials (HTTP {result}); set MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN"
            )
        return None if result < 500 else f"it answered HTTP {result}"
    reason = getattr(result, "reason", result)
    if isinstance(reason, socket.gaierror):
        return "its host name does not resolve"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"no answer within {timeout:.0f} s"
    return (str(reason).splitlines() or [type(reason).__name__])[0][:200]


def _probe_request(uri: str) -> tuple[Any, Any, bool]:
    """The probe's request to ``<uri>/health`` with the credentials MLflow's client sends (user
    and password as basic authentication, else a bearer token: mlflow.utils.credentials,
    ``get_default_host_creds``), the TLS context its settings ask for, and whether a refusal
    can be blamed on those credentials (not when an auth plugin or AWS signing is set)."""
    import base64
    import ssl
    import urllib.request

    try:
        from mlflow.utils.credentials import get_default_host_creds

        creds = get_default_host_creds(uri)
        user, password, token = creds.username, creds.password, creds.token
        insecure, server_cert = creds.ignore_tls_verification, creds.server_cert_path
    except ImportError:  # the client image: no MLflow, its variables read as it reads them
        user, password = (
            os.environ.get("MLFLOW_TRACKING_USERNAME"),
            os.environ.get("MLFLOW_TRACKING_PASSWORD"),
        )
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        insecure = os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true"
        server_cert = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH")
    headers = {}
    if user and password:
        pair = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {pair}"
    elif token:
        headers["Authorization"] = f"Bearer {token}"
    context = None
    if uri.startswith("https://"):
        context = ssl.create_default_context(cafile=server_cert or None)
        if insecure:
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    plugin = os.environ.get("MLFLOW_TRACKING_AUTH") or os.environ.get("MLFLOW_TRACKING_AWS_SIGV4")
    request = urllib.request.Request(f"{uri.rstrip('/')}/health", headers=headers)
    return request, context, not plugin


def use_credentials(uri: str, credentials: tuple[str, str] | None = None) -> str:
    """``uri`` without its user and password; they (or ``credentials``) are set as
    ``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD`` in this process's environment,
    where MLflow's REST client reads them for every request (mlflow/utils/credentials.py,
    ``read_mlflow_creds``) and sends them as HTTP basic auth. So no URI that freemask stores,
    logs or prints, nor MLflow's own "View run at" line (built from the URI it was given),
    holds them; they are never written anywhere."""
    bare, user, password = split_userinfo(uri)
    if user is not None and password is not None:
        credentials = (user, password)
    if credentials is not None:
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = credentials
    return bare


class Run(Protocol):
    """One tracked run (a pipeline run or one of its rounds)."""

    run_id: str
    experiment_id: str

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None: ...

    def log_model(
        self, module: Any, name: str, registered_name: str | None = None
    ) -> str | None: ...

    def log_mlflow_model(
        self, save: Callable[[Path], None], name: str, registered_name: str | None = None
    ) -> str | None: ...

    def log_image(self, png: bytes, key: str, step: int = 0) -> None: ...

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None: ...

    def alias_model(self, registered_name: str, alias: str, version: str) -> None: ...

    def child(self, name: str, tags: Mapping[str, str] | None = None) -> Run: ...

    def child_with_tag(self, key: str, value: str, name: str) -> Run: ...

    def finish(self, status: str = "FINISHED") -> None: ...

    def __enter__(self) -> Run: ...

    def __exit__(self, kind: type | None, *_: object) -> None: ...


class Tracker(Protocol):
    """Starts or resumes runs."""

    def start_run(self, name: str, tags: Mapping[str, str] | None = None) -> Run: ...

    def resume_run(self, run_id: str) -> Run: ...


class MlflowRun:
    """A run in MLflow, logged through an explicit ``MlflowClient``."""

    def __init__(self, client: Any, experiment_id: str, run_id: str):
        self.client = client
        self.experiment_id = experiment_id
        self.run_id = run_id
        self._logged_steps: dict[str, set[int]] = {}  # metric key -> steps already logged

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten_keys(params)
        items = [Param(key, redact(str(value))[:6000]) for key, value in flat.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log metrics at ``step``; a (metric, step) already logged is skipped, so a resumed
        run that repeats a step does not log it twice."""
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        step = step or 0
        items = [
            Metric(key, float(value), stamp, step)
            for key, value in metrics.items()
            if step not in self._steps_of(key)
        ]
        for start in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[start : start + 1000])
        for item in items:
            self._logged_steps[item.key].add(step)

    def _steps_of(self, key: str) -> set[int]:
        """The steps at which ``key`` was logged in this run (read once, then kept)."""
        if key not in self._logged_steps:
            history = self.client.get_metric_history(self.run_id, key)
            self._logged_steps[key] = {metric.step for metric in history}
        return self._logged_steps[key]

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, redact(str(value)))

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(local_path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_model(self, module: Any, name: str, registered_name: str | None = None) -> str | None:
        """Log ``module``'s weights (safetensors) and config under ``models/<name>``.

        With ``registered_name`` the model is registered and its version returned: the version
        this run registered before, if any (a resumed step registers nothing twice).
        """
        from safetensors.torch import save_model

        with tempfile.TemporaryDirectory() as folder:
            save_model(module, os.path.join(folder, MODEL_WEIGHTS))
            config = (
                module.config.to_dict()
                if hasattr(getattr(module, "config", None), "to_dict")
                else {}
            )
            config["_class"] = f"{type(module).__module__}.{type(module).__qualname__}"
            Path(folder, MODEL_CONFIG).write_text(
                json.dumps(config, indent=2, sort_keys=True, default=str)
            )
            self.client.log_artifacts(self.run_id, folder, f"models/{name}")
        return self._register(name, registered_name)

    def log_mlflow_model(
        self, save: Callable[[Path], None], name: str, registered_name: str | None = None
    ) -> str | None:
        """Log the MLflow model folder that ``save(path)`` writes (e.g.
        ``mlflow.pyfunc.save_model``) under ``models/<name>``; register it as ``log_model``
        does. A resumed step that registered it already logs and registers nothing again."""
        if registered_name is not None and (known := self._registered(registered_name)):
            return known
        with tempfile.TemporaryDirectory() as temp:
            folder = Path(temp) / name
            save(folder)
            self.client.log_artifacts(self.run_id, str(folder), f"models/{name}")
        return self._register(name, registered_name)

    def _registered(self, registered_name: str) -> str | None:
        """The version of ``registered_name`` this run registered, if any."""
        from mlflow.exceptions import MlflowException

        try:
            known = self.client.search_model_versions(f"name = '{registered_name}'")
        except MlflowException:
            return None
        return next((str(v.version) for v in known if v.run_id == self.run_id), None)

    def _register(self, name: str, registered_name: str | None) -> str | None:
        """Register ``models/<name>`` of this run under ``registered_name``; return the
        version (the one this run registered before, if any), or None without a name."""
        if registered_name is None:
            return None
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(registered_name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        if known := self._registered(registered_name):
            return known
        source = f"{self.client.get_run(self.run_id).info.artifact_uri}/models/{name}"
        version = self.client.create_model_version(registered_name, source, run_id=self.run_id)
        return str(version.version)

    def log_image(self, png: bytes, key: str, step: int = 0) -> None:
        """Log a PNG as the image ``key`` at ``step``: MLflow's image charts (the run page
        shows each key with a slider over its steps). ``MlflowClient.log_image`` with a key
        names each file with a fresh uuid (``images/<key>+step+<step>+...``), so a step
        already logged is skipped here: a resumed run logs no image twice."""
        from PIL import Image

        prefix = f"images/{key.replace('/', '~')}+step+{step}+"
        logged = self.client.list_artifacts(self.run_id, "images")
        if any(item.path.startswith(prefix) for item in logged):
            return
        image = Image.open(io.BytesIO(png))
        image.load()
        self.client.log_image(self.run_id, image, key=key, step=step, synchronous=True)

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        """Log ``data`` as a JSON (or YAML, by the file's suffix) artifact, rewritten whole."""
        self.client.log_dict(self.run_id, dict(data), artifact_file)

    def alias_model(self, registered_name: str, alias: str, version: str) -> None:
        """Point ``alias`` (e.g. 'best') at a registered model version."""
        self.client.set_registered_model_alias(registered_name, alias, version)

    def child_with_tag(self, key: str, value: str, name: str) -> MlflowRun:
        """The nested run under this one tagged ``key=value``, started if there is none yet
        (steps of one round, run as separate processes, share it)."""
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{PARENT_RUN_TAG}` = '{self.run_id}' and tags.`{key}` = '{value}'",
            max_results=1,
        )
        if found:
            self.client.update_run(found[0].info.run_id, status="RUNNING")
            return MlflowRun(self.client, self.experiment_id, found[0].info.run_id)
        return self.child(name, tags={key: value})

    def child(self, name: str, tags: Mapping[str, str] | None = None) -> MlflowRun:
        """Start a nested run under this one."""
        run = self.client.create_run(
            self.experiment_id, run_name=name, tags={**(tags or {}), PARENT_RUN_TAG: self.run_id}
        )
        return MlflowRun(self.client, self.experiment_id, run.info.run_id)

    def end_orphans(self) -> int:
        """Mark this run's nested runs still RUNNING as KILLED (their process died); return
        how many. Only for a runner that knows no other process logs into this run."""
        orphans = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{PARENT_RUN_TAG}` = '{self.run_id}' and "
            "attributes.status = 'RUNNING'",
        )
        for orphan in orphans:
            self.client.set_terminated(orphan.info.run_id, status="KILLED")
        return len(orphans)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)

    def __enter__(self) -> MlflowRun:
        return self

    def __exit__(self, kind: type | None, *_: object) -> None:
        self.finish("FINISHED" if kind is None else "FAILED")


class MlflowTracker:
    """Creates and resumes runs in one MLflow experiment."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_location: str | None = None):
        """``artifact_location`` applies when the experiment is created; with a sqlite store
        it defaults to ``mlartifacts`` beside the store's file (not the working directory),
        so every process that opens the store, whatever its directory, finds the artifacts."""
        from mlflow import MlflowClient

        if artifact_location is None and tracking_uri.startswith("sqlite:///"):
            store = Path(tracking_uri.removeprefix("sqlite:///"))
            artifact_location = str(store.parent / ARTIFACTS)
        # The first use of a sqlite store creates its schema (alembic migrations), which two
        # processes must not do at once; the experiment too is created once, under the lock.
        with store_lock(tracking_uri):
            self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                self.experiment_id = self.client.create_experiment(
                    experiment, artifact_location=artifact_location
                )
            else:
                self.experiment_id = found.experiment_id

    def start_run(self, name: str, tags: Mapping[str, str] | None = None) -> MlflowRun:
        run = self.client.create_run(self.experiment_id, run_name=name, tags=dict(tags or {}))
        return MlflowRun(self.client, self.experiment_id, run.info.run_id)

    def find_run(self, tags: Mapping[str, str]) -> MlflowRun | None:
        """The oldest top-level run carrying all ``tags`` (resumed), or None: how a run created
        by a process killed before it could note the run's id is found again. Tag values must
        not contain quotes."""
        conditions = " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())
        found = [
            run
            for run in self.client.search_runs(
                [self.experiment_id], filter_string=conditions, order_by=["attributes.start_time"]
            )
            if PARENT_RUN_TAG not in run.data.tags
        ]
        return self.resume_run(found[0].info.run_id) if found else None

    def resume_run(self, run_id: str) -> MlflowRun:
        """Continue logging into an existing run (e.g. the parent run in a later pipeline step)."""
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            raise FreemaskError(
                f"MLflow run {run_id!r} not found at {redact(self.client.tracking_uri)}"
            ) from None
        self.client.update_run(run_id, status="RUNNING")
        return MlflowRun(self.client, run.info.experiment_id, run_id)


def store_lock(tracking_uri: str) -> AbstractContextManager[None]:
    """An exclusive lock beside a local sqlite store (``<file>.lock``); nothing for a server."""
    if not tracking_uri.startswith("sqlite:///"):
        return nullcontext()
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    return exclusive_lock(database.with_name(database.name + ".lock"))


class NullRun:
    """A run that logs nothing: for library calls and unit tests without tracking."""

    run_id = "untracked"
    experiment_id = ""

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def set_tags(self, tags: Mapping[str, str]) -> None:
        pass

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def log_model(self, module: Any, name: str, registered_name: str | None = None) -> str | None:
        return None

    def log_mlflow_model(
        self, save: Callable[[Path], None], name: str, registered_name: str | None = None
    ) -> str | None:
        return None

    def log_image(self, png: bytes, key: str, step: int = 0) -> None:
        pass

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        pass

    def alias_model(self, registered_name: str, alias: str, version: str) -> None:
        pass

    def child(self, name: str, tags: Mapping[str, str] | None = None) -> NullRun:
        return self

    def child_with_tag(self, key: str, value: str, name: str) -> NullRun:
        return self

    def finish(self, status: str = "FINISHED") -> None:
        pass

    def __enter__(self) -> NullRun:
        return self

    def __exit__(self, *_: object) -> None:
        pass


class NullTracker:
    """A tracker whose runs log nothing."""

    def start_run(self, name: str, tags: Mapping[str, str] | None = None) -> NullRun:
        return NullRun()

    def resume_run(self, run_id: str) -> NullRun:
        return NullRun()


def run_page_url(ui_url: str | None, tracking_uri: str, run: Run) -> str | None:
    """The MLflow UI's page of ``run`` as a browser reaches it: under ``ui_url``
    (``tracking.ui_url``) when set, else under an http(s) tracking URI; None for a run that logs
    nothing or a store without a UI address (a sqlite file)."""
    base = ui_url or (tracking_uri if tracking_uri.startswith(("http://", "https://")) else None)
    if not base or not run.experiment_id:
        return None
    return f"{base.rstrip('/')}/#/experiments/{run.experiment_id}/runs/{run.run_id}"


def load_logged_weights(tracking_uri: str, artifact_uri: str) -> dict[str, Any]:
    """Download a model logged by ``log_model`` and return its tensors (safetensors; no pickle)."""
    import mlflow.artifacts
    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory() as folder:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri, dst_path=folder, tracking_uri=tracking_uri
        )
        return load_file(os.path.join(local, MODEL_WEIGHTS))


def flatten_keys(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys, as MLflow params are flat."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_keys(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def log_dataset_input(
    run: Run, name: str, uri: str, digest: str, samples: int, context: str = "training"
) -> None:
    """Log the data at ``uri`` as an MLflow dataset input of ``run`` (its source URI, sample
    count as the profile's ``num_rows``, and ``digest``); runs that are not MLflow's log nothing."""
    if not isinstance(run, MlflowRun):
        return
    from mlflow.entities import Dataset, DatasetInput, InputTag

    scheme = uri.split("://", 1)[0] if "://" in uri else "local"
    dataset = Dataset(
        name=name,
        digest=digest,
        source_type=scheme,
        source=json.dumps({"uri": redact(uri)}),
        profile=json.dumps({"num_rows": samples}),
    )
    context_tag = InputTag(key="mlflow.data.context", value=context)
    run.client.log_inputs(run.run_id, datasets=[DatasetInput(dataset, tags=[context_tag])])
