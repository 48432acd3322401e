"""One command per data stage: generate, relate, backgrounds, compose, refine, harmonize.

Each loads the run config, resolves its prefixes (``<workdir>/<stage>`` by default) and calls the
stage's ``run_<stage>`` function; the stage packages are imported only when their command runs.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from freemask.cli.options import (
    CheckOption,
    ConfigOption,
    ShardOption,
    load_run_config,
    out,
    report_check,
    stage_output_uri,
    stage_summary,
)
from freemask.stage_output import Shard


def register(app: typer.Typer) -> None:
    """Add the data stages' commands to the ``freemask`` app."""
    app.command("generate")(generate)
    app.command("relate")(relate)
    app.command("backgrounds")(backgrounds)
    app.command("compose")(compose)
    app.command("refine")(refine)
    app.command("harmonize")(harmonize)


def generate(
    config: ConfigOption,
    outputs: Annotated[
        str | None, typer.Option("--out", help="Output prefix [default: <workdir>/generate].")
    ] = None,
    shard: ShardOption = "0/1",
    check: CheckOption = False,
) -> None:
    """Stage 1: draw single-object images and read their masks from the UNet's attention."""
    run_config = load_run_config(config)
    target, part = stage_output_uri(run_config, outputs, "generate"), Shard.parse(shard)
    if check:
        return report_check("generate", run_config, out=target, shard=shard)
    from freemask.generate import run_generate

    result = run_generate(run_config, None, target, shard=part)
    out.print(stage_summary("generate", result))


def relate(
    config: ConfigOption,
    outputs: Annotated[
        str | None, typer.Option("--out", help="Output prefix [default: <workdir>/relate].")
    ] = None,
    check: CheckOption = False,
) -> None:
    """Stage 2: resolve the classes against the thesaurus; write relations.json."""
    run_config = load_run_config(config)
    target = stage_output_uri(run_config, outputs, "relate")
    if check:
        return report_check("relate", run_config, out=target)
    from freemask.relate import run_relate

    result = run_relate(run_config, None, target)
    out.print(f"relate: {result.written} classes ({json.dumps(result.summary)}) -> {result.output}")


def backgrounds(
    config: ConfigOption,
    inputs: Annotated[
        str | None, typer.Option("--in", help="The relate prefix [default: <workdir>/relate].")
    ] = None,
    outputs: Annotated[
        str | None, typer.Option("--out", help="Output prefix [default: <workdir>/backgrounds].")
    ] = None,
    shard: ShardOption = "0/1",
    check: CheckOption = False,
) -> None:
    """Draw scene backgrounds (or record compose.backgrounds images) for composition."""
    run_config = load_run_config(config)
    source = stage_output_uri(run_config, inputs, "relate")
    target, part = stage_output_uri(run_config, outputs, "backgrounds"), Shard.parse(shard)
    if check:
        return report_check("backgrounds", run_config, inputs=source, out=target, shard=shard)
    from freemask.compose import run_backgrounds

    result = run_backgrounds(run_config, source, target, shard=part)
    out.print(stage_summary("backgrounds", result))


def compose(
    config: ConfigOption,
    inputs: Annotated[
        str | None,
        typer.Option("--in", help="Refined single objects [default: <workdir>/refine]."),
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
    check: CheckOption = False,
) -> None:
    """Stage 3: place and paste objects into multi-object scenes with exact masks."""
    run_config = load_run_config(config)
    source = stage_output_uri(run_config, inputs, "refine")
    target, part = stage_output_uri(run_config, outputs, "compose"), Shard.parse(shard)
    if check:
        return report_check("compose", run_config, inputs=source, out=target, shard=shard)
    from freemask.compose import run_compose

    result = run_compose(
        run_config,
        source,
        target,
        relations=relations,
        backgrounds=backgrounds_uri,
        shard=part,
    )
    out.print(stage_summary("compose", result))


def refine(
    config: ConfigOption,
    inputs: Annotated[
        str | None, typer.Option("--in", help="Samples to refine [default: <workdir>/generate].")
    ] = None,
    outputs: Annotated[
        str | None, typer.Option("--out", help="Output prefix [default: <workdir>/refine].")
    ] = None,
    shard: ShardOption = "0/1",
    train_only: Annotated[
        bool,
        typer.Option(
            "--train-only",
            help="Train AffinityNet and save its weights only [default: off, refine the masks].",
        ),
    ] = False,
    check: CheckOption = False,
) -> None:
    """Stage 4: sharpen the single objects' masks to image edges (AffinityNet random walk or
    guided filter), before they are composed."""
    run_config = load_run_config(config)
    source = stage_output_uri(run_config, inputs, "generate")
    target, part = stage_output_uri(run_config, outputs, "refine"), Shard.parse(shard)
    if check:
        return report_check("refine", run_config, inputs=source, out=target, shard=shard)
    from freemask.refine import run_refine

    result = run_refine(run_config, source, target, shard=part, train_only=train_only)
    out.print("refine: weights trained" if train_only else stage_summary("refine", result))


def harmonize(
    config: ConfigOption,
    inputs: Annotated[
        str | None, typer.Option("--in", help="Samples [default: <workdir>/compose].")
    ] = None,
    outputs: Annotated[
        str | None, typer.Option("--out", help="Output prefix [default: <workdir>/harmonize].")
    ] = None,
    shard: ShardOption = "0/1",
    check: CheckOption = False,
) -> None:
    """Stage 5: match pasted objects' colour and light to their scene (masks unchanged)."""
    run_config = load_run_config(config)
    source = stage_output_uri(run_config, inputs, "compose")
    target, part = stage_output_uri(run_config, outputs, "harmonize"), Shard.parse(shard)
    if check:
        return report_check("harmonize", run_config, inputs=source, out=target, shard=shard)
    from freemask.harmonize import run_harmonize

    result = run_harmonize(run_config, source, target, shard=part)
    out.print(stage_summary("harmonize", result))
