"""The ``freemask`` command line: one subcommand per stage plus config, export and run.

Exit codes: 0 success, 2 bad input (one line per problem, no traceback), 1 internal error.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.table import Table

from freemask.cli_kubeflow import register as register_kubeflow_commands
from freemask.cli_learning import register as register_learning_commands
from freemask.cli_toyworld import register as register_toyworld_commands
from freemask.config import RunConfig, load_config
from freemask.errors import FreemaskError
from freemask.export import FORMATS, export_dataset
from freemask.records import MANIFEST, validate_manifest
from freemask.stage_output import Shard, join_shards
from freemask.storage import open_storage

app = typer.Typer(
    name="freemask",
    help="Synthetic segmentation datasets with no manual labels (Free-Mask method).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Check and show run configs.", no_args_is_help=True)
manifest_app = typer.Typer(help="Inspect sample manifests.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(manifest_app, name="manifest")

out = Console()
INTERRUPTED = 130  # the exit code of a command stopped by Ctrl-C
ConfigOption = Annotated[
    str, typer.Option("--config", "-c", help="Run config YAML (path or gs:// URI).")
]


@config_app.command("validate")
def config_validate(file: Annotated[Path, typer.Argument(help="Run config YAML.")]) -> None:
    """Validate a config file; print one line per problem."""
    config = load_config(file)
    out.print(f"ok: {file} ({len(config.classes)} classes, workdir {config.workdir})")


@config_app.command("show")
def config_show(file: Annotated[Path, typer.Argument(help="Run config YAML.")]) -> None:
    """Print the resolved config (defaults and environment overrides applied) as YAML."""
    config = load_config(file)
    sys.stdout.write(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))


@manifest_app.command("validate")
def manifest_validate(
    inputs: Annotated[str, typer.Option("--in", help="Stage output prefix (local path or gs://).")],
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Run config, to check class ids.")
    ] = None,
) -> None:
    """Check a manifest against its files and sizes."""
    classes = load_config(config).classes if config else None
    problems = validate_manifest(open_storage(inputs), MANIFEST, len(classes) if classes else None)
    if problems:
        raise FreemaskError("\n".join(problems))
    out.print(f"ok: {inputs}/{MANIFEST}")


@app.command("export")
def export(
    config: ConfigOption,
    inputs: Annotated[
        str, typer.Option("--in", help="Stage output prefix holding manifest.jsonl.")
    ],
    outputs: Annotated[str, typer.Option("--out", help="Where to write the dataset.")],
    fmt: Annotated[str, typer.Option("--format", help=f"One of: {', '.join(FORMATS)}.")] = "coco",
    val_fraction: Annotated[
        float, typer.Option(help="VOC only: share of samples in val.txt.")
    ] = 0.1,
) -> None:
    """Export a manifest as a COCO or VOC dataset."""
    run_config = load_config(config)
    options = {"val_fraction": val_fraction} if fmt == "voc" else {}
    counts = export_dataset(
        open_storage(inputs), open_storage(outputs), run_config.classes, fmt, **options
    )
    out.print(f"exported {json.dumps(counts)} to {outputs}")


@app.command("join")
def join(
    stage: Annotated[str, typer.Option(help="Stage name (its prefix under the workdir).")],
    shards: Annotated[int, typer.Option(min=1, help="Number of shards the stage ran with.")],
    inputs: Annotated[
        str | None,
        typer.Option("--in", help="The sharded stage's prefix [default: <workdir>/<stage>]."),
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Run config YAML.")] = None,
) -> None:
    """Merge a sharded stage's per-shard manifests into one manifest and _SUCCESS."""
    if inputs is None:
        if config is None:
            raise FreemaskError("join needs --in or --config (to find <workdir>/<stage>)")
        inputs = f"{load_config(config).workdir.rstrip('/')}/{stage}"
    result = join_shards(open_storage(inputs), stage, shards)
    out.print(f"joined {shards} shards of {stage}: {result.written} samples")


ShardOption = Annotated[
    str, typer.Option("--shard", help="This worker's share as i/n (0-based), e.g. 0/4.")
]


def stage_output_uri(run_config: RunConfig, outputs: str | None, stage: str) -> str:
    """``--out`` if given, else ``<workdir>/<stage>``."""
    return outputs or f"{run_config.workdir.rstrip('/')}/{stage}"


@app.command("generate")
def generate(
    config: ConfigOption,
    outputs: Annotated[
        str | None, typer.Option("--out", help="Output prefix [default: <workdir>/generate].")
    ] = None,
    shard: ShardOption = "0/1",
) -> None:
    """Stage 1: draw single-object images and read their masks from the UNet's attention."""
    from freemask.generate import run_generate

    run_config = load_config(config)
    result = run_generate(
        run_config,
        None,
        stage_output_uri(run_config, outputs, "generate"),
        shard=Shard.parse(shard),
    )
    out.print(_summary("generate", result))


@app.command("relate")
def relate(
    config: ConfigOption,
    outputs: Annotated[
        str | None, typer.Option("--out", help="Output prefix [default: <workdir>/relate].")
    ] = None,
) -> None:
    """Stage 2: resolve the classes against the thesaurus; write relations.json."""
    from freemask.relate import run_relate

    run_config = load_config(config)
    result = run_relate(run_config, None, stage_output_uri(run_config, outputs, "relate"))
    out.print(f"relate: {result.written} classes ({json.dumps(result.summary)}) -> {result.output}")


@app.command("backgrounds")
def backgrounds(
    config: ConfigOption,
    inputs: Annotated[
        str | None, typer.Option("--in", help="The relate prefix [default: <workdir>/relate].")
    ] = None,
    outputs: Annotated[
        str | None, typer.Option("--out", help="Output prefix [default: <workdir>/backgrounds].")
    ] = None,
    shard: ShardOption = "0/1",
) -> None:
    """Draw scene backgrounds (or record compose.backgrounds images) for composition."""
    from freemask.compose import run_backgrounds

    run_config = load_config(config)
    result = run_backgrounds(
        run_config,
        stage_output_uri(run_config, inputs, "relate"),
        stage_output_uri(run_config, outputs, "backgrounds"),
        shard=Shard.parse(shard),
    )
    out.print(_summary("backgrounds", result))


@app.command("compose")
def compose(
    config: ConfigOption,
    inputs: Annotated[
        str | None, typer.Option("--in", help="Single objects [default: <workdir>/generate].")
    ] = None,
    outputs: Annotated[
        str | None, typer.Option("--out", help="Output prefix [default: <workdir>/compose].")
    ] = None,
    relations: Annotated[
        str | None, typer.Option(help="The relate prefix [default: <workdir>/relate].")
    ] = None,
    backgrounds_uri: Annotated[
        str | None,
        typer.Option("--backgrounds", help="Backgrounds prefix [default: <workdir>/backgrounds]."),
    ] = None,
    shard: ShardOption = "0/1",
) -> None:
    """Stage 3: place and paste objects into multi-object scenes with exact masks."""
    from freemask.compose import run_compose

    run_config = load_config(config)
    result = run_compose(
        run_config,
        stage_output_uri(run_config, inputs, "generate"),
        stage_output_uri(run_config, outputs, "compose"),
        relations=relations,
        backgrounds=backgrounds_uri,
        shard=Shard.parse(shard),
    )
    out.print(_summary("compose", result))


@app.command("refine")
def refine(
    config: ConfigOption,
    inputs: Annotated[
        str | None, typer.Option("--in", help="Samples to refine [default: <workdir>/compose].")
    ] = None,
    outputs: Annotated[
        str | None, typer.Option("--out", help="Output prefix [default: <workdir>/refine].")
    ] = None,
    shard: ShardOption = "0/1",
    train_only: Annotated[
        bool, typer.Option("--train-only", help="Train AffinityNet and save its weights only.")
    ] = False,
) -> None:
    """Stage 4: sharpen masks to image edges (AffinityNet random walk or guided filter)."""
    from freemask.refine import run_refine

    run_config = load_config(config)
    result = run_refine(
        run_config,
        stage_output_uri(run_config, inputs, "compose"),
        stage_output_uri(run_config, outputs, "refine"),
        shard=Shard.parse(shard),
        train_only=train_only,
    )
    out.print("refine: weights trained" if train_only else _summary("refine", result))


@app.command("harmonize")
def harmonize(
    config: ConfigOption,
    inputs: Annotated[
        str | None, typer.Option("--in", help="Samples [default: <workdir>/refine].")
    ] = None,
    outputs: Annotated[
        str | None, typer.Option("--out", help="Output prefix [default: <workdir>/harmonize].")
    ] = None,
    shard: ShardOption = "0/1",
) -> None:
    """Stage 5: match pasted objects' colour and light to their scene (masks unchanged)."""
    from freemask.harmonize import run_harmonize

    run_config = load_config(config)
    result = run_harmonize(
        run_config,
        stage_output_uri(run_config, inputs, "refine"),
        stage_output_uri(run_config, outputs, "harmonize"),
        shard=Shard.parse(shard),
    )
    out.print(_summary("harmonize", result))


def _summary(stage: str, result) -> str:
    return (
        f"{stage}: {result.written} written, {result.skipped} already done, "
        f"{result.dropped} rejected -> {result.output}"
    )


@app.command("run")
def run(config: ConfigOption) -> None:
    """Run the whole pipeline in this process on local defaults (no cluster needed)."""
    from freemask.local import run_local

    run_config: RunConfig = load_config(config)
    report = run_local(run_config)
    stages = Table(
        title=f"freemask run {run_config.name}" + (" (resumed)" if report.resumed else "")
    )
    for column in ("stage", "written", "already done", "rejected", "seconds"):
        stages.add_column(column, justify="left" if column == "stage" else "right")
    for stage, result in report.ran.items():
        stages.add_row(
            stage,
            str(result.written),
            str(result.skipped),
            str(result.dropped),
            f"{result.seconds:.1f}",
        )
    out.print(stages)
    rounds = Table(title="active-learning rounds")
    for column in ("round", "kept", "kept fraction", "validation mIoU"):
        rounds.add_column(column, justify="right")
    for summary in report.report.get("rounds", []):
        rounds.add_row(
            str(summary["round"]),
            str(summary["kept"]),
            f"{summary['kept_fraction']:.3f}",
            f"{summary['val_miou']:.3f}",
        )
    out.print(rounds)
    out.print(
        f"workdir: {report.workdir}\n"
        f"exports: {report.workdir}/export/coco, {report.workdir}/export/voc\n"
        f"report: {report.workdir}/report ({len(report.report.get('files', []))} files)\n"
        f"MLflow: {report.tracking_uri} (run {report.run_id})"
    )


register_learning_commands(app)
register_kubeflow_commands(app)
register_toyworld_commands(app)


@contextlib.contextmanager
def runtime_overrides(argv: list[str]) -> Iterator[list[str]]:
    """Take ``--set section.field=value`` pairs out of ``argv`` (how pipeline tasks pass runtime
    parameters) and expose them as ``FREEMASK__`` variables while the command runs; an empty
    value sets nothing. The environment is restored afterwards."""
    rest: list[str] = []
    overrides: dict[str, str] = {}
    tokens = iter(argv)
    for token in tokens:
        if token != "--set":
            rest.append(token)
            continue
        pair = next(tokens, "")
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise FreemaskError(f"--set {pair!r}: expected section.field=value")
        if value != "":
            overrides["FREEMASK__" + key.upper().replace(".", "__")] = value
    saved = {name: os.environ.get(name) for name in overrides}
    os.environ.update(overrides)
    try:
        yield rest
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv``; return the exit code (2 bad input, 1 internal error)."""
    command = typer.main.get_command(app)
    try:
        with runtime_overrides(sys.argv[1:] if argv is None else list(argv)) as rest:
            # Typer turns Ctrl-C into exit code 130 and returns it rather than raising.
            code = command.main(args=rest, prog_name="freemask", standalone_mode=False)
    except FreemaskError as exc:
        for line in str(exc).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 1
    except typer.TyperException as exc:  # usage errors: unknown command, missing option, bad value
        exc.show()
        return 2
    except Exception:
        traceback.print_exc()
        print("internal error: the traceback above shows where; please report it", file=sys.stderr)
        return 1
    if code == INTERRUPTED:
        print("interrupted: run the same command again to continue", file=sys.stderr)
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
