"""CLI commands for Kubeflow: compile the pipeline, submit a run, schedule recurring refreshes.

``submit`` and ``schedule`` check the run before anything is sent (the KFP client does not): the
parameters against the compiled pipeline's, and the config as the pods will read it (gs://
workdir, http(s) tracking, valid overrides, rounds within the compiled depth). ``schedule`` takes
the usual five-field cron expression and converts it to KFP's six fields (seconds first). The
namespace (multi-user KFP: the profile's), service account (Workload Identity for GCS) and
caching (off: every task has side effects) are set on the run, where KFP takes them. A
multi-user KFP (its healthz says so) needs the namespace; the credential sent is the one flag
given (freemask.kfp_auth: a token, the in-cluster token, a session cookie or an IAP ID token).
``kfp-outputs`` runs a pipeline task's command, then writes its KFP output artifacts' metadata.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from freemask import bounded_yaml, deploy_check
from freemask.cli.learning import depth_problem
from freemask.cli.options import load_run_config, out
from freemask.commands import ARTIFACTS, OVERRIDES
from freemask.config import ENV_PREFIX, RunConfig, load_config
from freemask.errors import FreemaskError
from freemask.kfp_auth import (
    IAP_CLIENT_ID_ENV,
    IN_CLUSTER_TOKEN,
    TOKEN_ENV,
    KfpCredentials,
    api_errors,
    connect,
    resolve_credentials,
)
from freemask.preflight import client_preflight
from freemask.redact import has_userinfo

ConfigOption = Annotated[
    str, typer.Option("--config", "-c", help="Run config YAML (compile-time settings).")
]
HostOption = Annotated[str, typer.Option(help="The Kubeflow Pipelines API endpoint.")]
ParamOption = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        "-p",
        help="A pipeline parameter as NAME=VALUE (repeatable) [default: the compiled "
        "defaults; config_uri is the --config URI when that is on gs://].",
    ),
]
NamespaceOption = Annotated[
    str | None,
    typer.Option(
        help="The Kubernetes namespace of the runs: the profile's, required on a multi-user KFP "
        "[default: kubeflow.namespace]."
    ),
]
ServiceAccountOption = Annotated[
    str | None,
    typer.Option(help="The runs' service account [default: kubeflow.service_account]."),
]
TokenFileOption = Annotated[
    Path | None,
    typer.Option(
        help=f"A file holding a bearer token for the KFP API (or set ${TOKEN_ENV}); sent as "
        "Authorization: Bearer [default: none]."
    ),
]
CookieFileOption = Annotated[
    Path | None,
    typer.Option(
        help="A file holding the Kubeflow login's session cookie as NAME=VALUE, e.g. "
        "authservice_session=... or oauth2_proxy_kubeflow=...; sent as the Cookie header "
        "[default: none]."
    ),
]
IapClientIdOption = Annotated[
    str | None,
    typer.Option(
        envvar=IAP_CLIENT_ID_ENV,
        help="The OAuth client id of the Identity-Aware Proxy in front of Kubeflow: sends a "
        "Google ID token for it (GOOGLE_APPLICATION_CREDENTIALS or the metadata server) "
        "[default: none].",
    ),
]
InClusterOption = Annotated[
    bool,
    typer.Option(
        "--in-cluster",
        help=f"Send the pod's projected token ({IN_CLUSTER_TOKEN}) [default: when that file "
        "exists and no other credential is given].",
    ),
]
ImagesLockOption = Annotated[
    Path | None,
    typer.Option(
        envvar="FREEMASK_IMAGES_LOCK",
        help="A digest lock written by `make images PUSH=1` (images/images.lock.json): the "
        "pipeline names its images by digest [default: by tag, from components/images.json]. "
        "The client image carries its pipeline images' lock at /opt/freemask/images.lock.json.",
    ),
]
PARAMETER_TYPES = {"STRING": str, "NUMBER_INTEGER": int, "NUMBER_DOUBLE": float, "BOOLEAN": bool}


def register(app: typer.Typer) -> None:
    """Add the Kubeflow commands to the ``freemask`` app."""
    app.command("compile")(compile_command)
    app.command("submit")(submit)
    app.command("schedule")(schedule)
    app.command("deploy-check")(deploy_check.command)
    app.command(
        "kfp-outputs", context_settings={"ignore_unknown_options": True, "allow_extra_args": True}
    )(kfp_outputs)


def compile_command(
    config: ConfigOption = "configs/default.yaml",
    output: Annotated[Path, typer.Option("--out", help="Where the IR YAML goes.")] = Path(
        "build/freemask_pipeline.yaml"
    ),
    images_lock: ImagesLockOption = None,
) -> None:
    """Compile the Kubeflow pipeline (IR YAML) with the config's compile-time settings."""
    from pipelines.freemask_pipeline import compile_pipeline

    package = with_images(compile_pipeline(load_config(config), output), images_lock)
    out.print(f"compiled {package}")


def with_images(package: Path, images_lock: Path | None) -> Path:
    """The compiled ``package``, its images named by digest from ``images_lock`` when given."""
    if images_lock is None:
        return package
    from components._spec import digest_images
    from pipelines.ir import pin_images

    return pin_images(package, digest_images(images_lock))


def pipeline_parameters(package: Path) -> dict[str, dict[str, Any]]:
    """The compiled pipeline's root parameters: name -> {parameterType, defaultValue?}."""
    spec = bounded_yaml.load_all(package.read_text(), str(package))[0]
    return spec["root"]["inputDefinitions"]["parameters"]


def check_arguments(parameters: dict[str, dict[str, Any]], raw: list[str]) -> dict[str, Any]:
    """Parse NAME=VALUE pairs and check them against the pipeline's parameter types.

    Raises FreemaskError naming the unknown parameter, the bad value and its expected type,
    or the required parameters left unset.
    """
    arguments: dict[str, Any] = {}
    for pair in raw:
        name, equals, text = pair.partition("=")
        if not equals:
            raise FreemaskError(f"--param {pair!r}: expected NAME=VALUE")
        if name not in parameters:
            raise FreemaskError(
                f"--param {name}: unknown parameter; expected one of {sorted(parameters)}"
            )
        kind = parameters[name]["parameterType"]
        try:
            value = bounded_yaml.load(text, f"--param {name}") if kind != "STRING" else text
        except (yaml.YAMLError, ValueError):
            value = text  # refused below as not of the parameter's type
        expected = PARAMETER_TYPES[kind]
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise FreemaskError(
                f"--param {name}={text!r}: expected {kind.lower().replace('number_', '')}"
            )
        arguments[name] = value
    missing = [
        name
        for name, spec in parameters.items()
        if "defaultValue" not in spec and name not in arguments
    ]
    if missing:
        raise FreemaskError(
            f"parameters without a default must be given: {', '.join(sorted(missing))}"
        )
    return arguments


CRON_FIELDS = ("second", "minute", "hour", "day-of-month", "month", "day-of-week")
CRON_RANGES = ("0-59", "0-59", "0-23", "1-31", "1-12 or JAN-DEC", "0-6 or SUN-SAT")


def kfp_cron(expression: str) -> str:
    """A five-field cron expression as KFP's six fields (seconds first); six fields pass through.

    croniter checks the expression (ranges, steps, lists, names: ``99 3 * * *`` is refused),
    reading six fields with the seconds first as KFP does (``second_at_beginning``). Raises
    FreemaskError in one line naming the field that is wrong.
    """
    from croniter import CroniterBadDateError, croniter

    fields = expression.split()
    expected = "expected five cron fields (minute hour day-of-month month day-of-week), e.g. "
    expected += "'0 3 * * *' (daily at 03:00)"
    if len(fields) not in (5, 6):
        raise FreemaskError(f"--cron {expression!r}: {expected}")
    six = ["0", *fields] if len(fields) == 5 else fields
    if croniter.is_valid(" ".join(six), second_at_beginning=True):
        try:  # a date that never comes (the 31st of February) is valid field by field
            croniter(
                " ".join(six), second_at_beginning=True, max_years_between_matches=8
            ).get_next()
        except CroniterBadDateError:
            raise FreemaskError(
                f"--cron {expression!r}: never fires (no such date in eight years); {expected}"
            ) from None
        return " ".join(six)
    # Which field: each checked alone, the others left at their widest.
    wrong = [
        f"{CRON_FIELDS[index]} {six[index]!r} (expected {CRON_RANGES[index]})"
        for index in range(6)
        if not croniter.is_valid(
            " ".join(six[index] if i == index else ("0" if i == 0 else "*") for i in range(6)),
            second_at_beginning=True,
        )
    ]
    told = "; ".join(wrong) if wrong else "its fields do not go together"
    raise FreemaskError(f"--cron {expression!r}: not a valid cron expression: {told}; {expected}")


def validate_submission(config: str, arguments: dict[str, Any], depth: int) -> RunConfig:
    """The run's config as its pods will read it: ``config`` with the parameters that are set.

    Raises FreemaskError, one line, when the pods could not use it: a config URI or workdir that
    is not on ``gs://``, tracking that is not over http(s), an invalid override (a class list
    that is not a YAML list, ...), or more rounds than the pipeline was compiled with; or when
    a parameter or the config's tracking.uri holds a user and password (a run's parameters
    are its tasks' command lines, kept with the run: credentials come from
    tracking.credentials_secret).
    """
    secret = sorted(name for name, value in arguments.items() if has_userinfo(str(value)))
    if secret:
        raise FreemaskError(
            f"--param {', '.join(secret)}: a user and password in a pipeline parameter reach "
            "every task's command line; give the URI without them and name the Kubernetes "
            "Secret holding them in tracking.credentials_secret"
        )
    overrides = {
        ENV_PREFIX + field.upper().replace(".", "__"): str(arguments[name])
        for name, field in OVERRIDES.items()
        if arguments.get(name, "") != ""
    }
    run_config = load_config(config, environ=overrides)
    problems = []
    if not str(arguments.get("config_uri", "")).startswith("gs://"):
        problems.append("config_uri must be a gs:// URI the pipeline's pods can read")
    if not run_config.workdir.startswith("gs://"):
        problems.append(f"workdir {run_config.workdir!r} must be on gs:// (pods share no disk)")
    if not (run_config.tracking.uri or "").startswith(("http://", "https://")):
        problems.append("tracking.uri must be the MLflow server's http(s) URL")
    if run_config.tracking.credentials is not None:
        problems.append(
            "tracking.uri holds a user and password: give it without them and name the "
            "Kubernetes Secret holding them in tracking.credentials_secret"
        )
    rounds_problem = depth_problem(run_config.active.max_rounds, depth)
    if rounds_problem:
        problems.append(rounds_problem)
    if problems:
        raise FreemaskError(f"{config}: not submitted: " + "; ".join(problems))
    return run_config


def _compiled(config: str, images_lock: Path | None = None) -> tuple[Path, RunConfig]:
    from pipelines.freemask_pipeline import compile_pipeline

    run_config = load_config(config, environ={})
    package = Path(tempfile.mkdtemp()) / "freemask_pipeline.yaml"
    return with_images(compile_pipeline(run_config, package), images_lock), run_config


def submit_run(
    client: Any,
    package: Path,
    experiment: str,
    run_name: str,
    arguments: dict,
    service_account: str | None,
    namespace: str | None = None,
) -> str:
    """Create the run through ``client`` (a kfp.Client), caching off; return its id."""
    experiment_id = client.create_experiment(experiment, namespace=namespace).experiment_id
    result = client.create_run_from_pipeline_package(
        str(package),
        arguments=arguments,
        run_name=run_name,
        experiment_id=experiment_id,
        namespace=namespace,
        enable_caching=False,
        service_account=service_account,
    )
    return result.run_id


def schedule_run(
    client: Any,
    package: Path,
    experiment: str,
    job_name: str,
    cron: str,
    arguments: dict,
    service_account: str | None,
    namespace: str | None = None,
) -> str:
    """Create a recurring run through ``client``, caching off; return its id."""
    experiment_id = client.create_experiment(experiment, namespace=namespace).experiment_id
    job = client.create_recurring_run(
        experiment_id=experiment_id,
        job_name=job_name,
        cron_expression=cron,
        pipeline_package_path=str(package),
        params=arguments,
        service_account=service_account,
        enable_caching=False,
        max_concurrency=1,
        no_catchup=True,
    )
    return job.recurring_run_id


def _prepared(
    config: str, param: list[str] | None, images_lock: Path | None = None
) -> tuple[Path, RunConfig, dict[str, Any]]:
    package, compiled = _compiled(config, images_lock)
    raw = list(param or [])
    if config.startswith("gs://") and not any(pair.startswith("config_uri=") for pair in raw):
        raw.append(f"config_uri={config}")
    arguments = check_arguments(pipeline_parameters(package), raw)
    run_config = validate_submission(config, arguments, compiled.active.max_rounds)
    # The classes against the table and models' labels; not the tracking server or bucket,
    # which the pods reach with their own network and credentials, not this machine's.
    client_preflight(run_config, config)
    return package, run_config, arguments


def _sent_to(host: str, namespace: str | None, credentials: KfpCredentials) -> str:
    return host + (f" in {namespace}" if namespace else "") + f" ({credentials.source})"


def submit(
    host: HostOption,
    config: ConfigOption,
    param: ParamOption = None,
    namespace: NamespaceOption = None,
    service_account: ServiceAccountOption = None,
    token_file: TokenFileOption = None,
    cookie_file: CookieFileOption = None,
    iap_client_id: IapClientIdOption = None,
    in_cluster: InClusterOption = False,
    images_lock: ImagesLockOption = None,
) -> None:
    """Compile, check and submit one pipeline run (creating its experiment if needed)."""
    credentials = resolve_credentials(token_file, cookie_file, iap_client_id, in_cluster)
    package, run_config, arguments = _prepared(config, param, images_lock)
    host = host.rstrip("/")
    with api_errors(host, credentials):
        client, namespace = connect(host, credentials, namespace or run_config.kubeflow.namespace)
        run_id = submit_run(
            client,
            package,
            run_config.tracking.experiment,
            run_config.name,
            arguments,
            service_account or run_config.kubeflow.service_account,
            namespace,
        )
    out.print(f"submitted run {run_id} to {_sent_to(host, namespace, credentials)}")


def schedule(
    host: HostOption,
    config: ConfigOption,
    cron: Annotated[str, typer.Option(help="Five-field cron expression, e.g. '0 3 * * 1'.")],
    param: ParamOption = None,
    namespace: NamespaceOption = None,
    service_account: ServiceAccountOption = None,
    token_file: TokenFileOption = None,
    cookie_file: CookieFileOption = None,
    iap_client_id: IapClientIdOption = None,
    in_cluster: InClusterOption = False,
    images_lock: ImagesLockOption = None,
) -> None:
    """Schedule a recurring pipeline run (the periodic dataset refresh), caching off."""
    expression = kfp_cron(cron)
    credentials = resolve_credentials(token_file, cookie_file, iap_client_id, in_cluster)
    package, run_config, arguments = _prepared(config, param, images_lock)
    host = host.rstrip("/")
    with api_errors(host, credentials):
        client, namespace = connect(host, credentials, namespace or run_config.kubeflow.namespace)
        job_id = schedule_run(
            client,
            package,
            run_config.tracking.experiment,
            f"{run_config.name}-refresh",
            expression,
            arguments,
            service_account or run_config.kubeflow.service_account,
            namespace,
        )
    out.print(f"scheduled {job_id} ({expression}) on {_sent_to(host, namespace, credentials)}")


def executor_output_file(executor_input: str, task: str) -> str:
    """The executor output file named by a KFP executor input JSON (``{{$}}``); FreemaskError
    when it is not JSON or lacks the file or one of ``task``'s output artifacts."""
    try:
        outputs = json.loads(executor_input)["outputs"]
        output_file, artifacts = outputs["outputFile"], outputs.get("artifacts", {})
    except (ValueError, TypeError, KeyError):
        raise FreemaskError(
            f"--executor-input: not a KFP executor input with outputs.outputFile: "
            f"{executor_input[:80]!r}"
        ) from None
    missing = sorted(set(ARTIFACTS[task]) - set(artifacts))
    if missing:
        raise FreemaskError(f"--executor-input: no output artifact {missing} for task {task}")
    return output_file


def artifact_metadata(kind: str, workdir: str, path: str) -> dict[str, str | int | float | bool]:
    """What the KFP UI shows for an artifact of ``kind`` described by ``path`` under
    ``workdir``: a dataset's prefix, manifest, sample count and digest; a model's prefix and
    weights; a round's metrics (validation mIoU, kept fraction, kept count)."""
    from freemask.storage import open_storage

    folder, _, name = f"{workdir.rstrip('/')}/{path}".rpartition("/")
    store = open_storage(folder)
    if kind == "metrics":
        summary = json.loads(store.read_bytes(name))
        return {
            "val_miou": float(summary["val_miou"]),
            "kept_fraction": float(summary["kept_fraction"]),
            "kept": float(summary["kept"]),
        }
    if kind == "model":
        return {"prefix": folder, "weights": f"{folder}/{name}", "trained": store.exists(name)}
    data = store.read_bytes(name)
    metadata: dict[str, str | int | float | bool] = {
        "prefix": f"{workdir.rstrip('/')}/{path.split('/', 1)[0]}",
        "manifest": f"{folder}/{name}",
        "digest": hashlib.sha256(data).hexdigest()[:16],
    }
    if name.endswith(".jsonl"):
        metadata["samples"] = sum(1 for line in data.splitlines() if line.strip())
    return metadata


def kfp_outputs(
    ctx: typer.Context,
    task: Annotated[str, typer.Argument(help="The pipeline task (a key of ARTIFACTS).")],
    executor_input: Annotated[
        str, typer.Option(help="KFP's executor input JSON (the launcher's {{$}}).")
    ],
    config: Annotated[str, typer.Option("--config", "-c", help="Run config YAML.")],
    stage: Annotated[
        str | None, typer.Option(help="join: the joined stage [default: none, other tasks].")
    ] = None,
    round_index: Annotated[int, typer.Option("--round", min=0, help="The round number.")] = 0,
) -> None:
    """Run a pipeline task's command (after ``--``), then write its KFP output artifacts'
    metadata to the executor output file (with ``--check``: check, write nothing)."""
    # The front door's own runner (``main``: --set overrides, exit codes), handed down in the
    # context so that this command group does not import the module that registers it.
    main = ctx.find_root().obj["run_cli"]
    if task not in ARTIFACTS:
        raise FreemaskError(f"kfp-outputs {task!r}: expected one of {', '.join(ARTIFACTS)}")
    output_file = executor_output_file(executor_input, task)
    code = main(list(ctx.args))
    if code:
        raise typer.Exit(code)
    if "--check" in ctx.args:
        return
    workdir = load_run_config(config).workdir
    published = {}
    for name, (kind, path) in ARTIFACTS[task].items():
        metadata = artifact_metadata(kind, workdir, path.format(stage=stage, round=round_index))
        # No "uri": the launcher keeps its own, since it uploads to it (launcher_v2.go
        # uploadOutputArtifacts); the data's gs:// prefix is in the metadata.
        published[name] = {"artifacts": [{"name": name, "metadata": metadata}]}
    target = Path(output_file)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"artifacts": published}))
    out.print(f"kfp outputs: {', '.join(sorted(published))} -> {output_file}")
