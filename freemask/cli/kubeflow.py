"""CLI commands for Kubeflow: compile the pipeline, submit a run, schedule recurring refreshes.

``submit`` and ``schedule`` check the run's parameters against the compiled pipeline's before
anything is sent (the KFP client does not), and ``schedule`` takes the usual five-field cron
expression and converts it to KFP's six fields (seconds first). The service account (Workload
Identity for GCS) is set on the run, where KFP takes it.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from freemask.cli.options import out
from freemask.config import load_config
from freemask.errors import FreemaskError

ConfigOption = Annotated[
    str, typer.Option("--config", "-c", help="Run config YAML (compile-time settings).")
]
HostOption = Annotated[str, typer.Option(help="The Kubeflow Pipelines API endpoint.")]
ParamOption = Annotated[
    list[str] | None,
    typer.Option("--param", "-p", help="A pipeline parameter as NAME=VALUE (repeatable)."),
]
CRON_FIELD = re.compile(r"^[\d*/,\-?LW#A-Za-z]+$")
PARAMETER_TYPES = {"STRING": str, "NUMBER_INTEGER": int, "NUMBER_DOUBLE": float, "BOOLEAN": bool}


def register(app: typer.Typer) -> None:
    """Add the Kubeflow commands to the ``freemask`` app."""
    app.command("compile")(compile_command)
    app.command("submit")(submit)
    app.command("schedule")(schedule)


def compile_command(
    config: ConfigOption = "configs/default.yaml",
    output: Annotated[Path, typer.Option("--out", help="Where the IR YAML goes.")] = Path(
        "build/freemask_pipeline.yaml"
    ),
) -> None:
    """Compile the Kubeflow pipeline (IR YAML) with the config's compile-time settings."""
    from pipelines.freemask_pipeline import compile_pipeline

    out.print(f"compiled {compile_pipeline(load_config(config), output)}")


def pipeline_parameters(package: Path) -> dict[str, dict[str, Any]]:
    """The compiled pipeline's root parameters: name -> {parameterType, defaultValue?}."""
    spec = next(yaml.safe_load_all(package.read_text()))
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
        value = yaml.safe_load(text) if kind != "STRING" else text
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


def kfp_cron(expression: str) -> str:
    """A five-field cron expression as KFP's six fields (seconds first); six fields pass through."""
    fields = expression.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6 or not all(CRON_FIELD.match(field) for field in fields):
        raise FreemaskError(
            f"--cron {expression!r}: expected five cron fields, e.g. '0 3 * * *' (daily at 03:00)"
        )
    return " ".join(fields)


def _compiled(config: str) -> tuple[Path, Any]:
    from pipelines.freemask_pipeline import compile_pipeline

    run_config = load_config(config)
    package = Path(tempfile.mkdtemp()) / "freemask_pipeline.yaml"
    return compile_pipeline(run_config, package), run_config


def _client(host: str) -> Any:
    import kfp

    return kfp.Client(host=host)


def submit_run(
    client: Any,
    package: Path,
    experiment: str,
    run_name: str,
    arguments: dict,
    service_account: str | None,
) -> str:
    """Create the run through ``client`` (a kfp.Client); return its id."""
    result = client.create_run_from_pipeline_package(
        str(package),
        arguments=arguments,
        run_name=run_name,
        experiment_name=experiment,
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
) -> str:
    """Create a recurring run through ``client``; return its id."""
    experiment_id = client.create_experiment(experiment).experiment_id
    job = client.create_recurring_run(
        experiment_id=experiment_id,
        job_name=job_name,
        cron_expression=cron,
        pipeline_package_path=str(package),
        params=arguments,
        service_account=service_account,
        max_concurrency=1,
        no_catchup=True,
    )
    return job.recurring_run_id


def submit(
    host: HostOption,
    config: ConfigOption,
    param: ParamOption = None,
    service_account: Annotated[
        str | None, typer.Option(help="Kubernetes service account for the run.")
    ] = None,
) -> None:
    """Compile and submit one pipeline run (creating its experiment if needed)."""
    package, run_config = _compiled(config)
    arguments = check_arguments(pipeline_parameters(package), param or [])
    run_id = submit_run(
        _client(host),
        package,
        run_config.tracking.experiment,
        run_config.name,
        arguments,
        service_account,
    )
    out.print(f"submitted run {run_id} to {host}")


def schedule(
    host: HostOption,
    config: ConfigOption,
    cron: Annotated[str, typer.Option(help="Five-field cron expression, e.g. '0 3 * * 1'.")],
    param: ParamOption = None,
    service_account: Annotated[
        str | None, typer.Option(help="Kubernetes service account for the runs.")
    ] = None,
) -> None:
    """Schedule a recurring pipeline run: the periodic dataset refresh."""
    expression = kfp_cron(cron)
    package, run_config = _compiled(config)
    arguments = check_arguments(pipeline_parameters(package), param or [])
    job_id = schedule_run(
        _client(host),
        package,
        run_config.tracking.experiment,
        f"{run_config.name}-refresh",
        expression,
        arguments,
        service_account,
    )
    out.print(f"scheduled {job_id} ({expression}) on {host}")
