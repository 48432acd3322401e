"""CLI commands of the toy world: labelled scenes rendered with exact masks.

``freemask toyworld scenes`` writes rendered scenes for the run's classes as a manifest, e.g.
a held-out set with exact labels for ``segment.validation``. The toy model itself is trained by
``python -m freemask.toyworld.train`` (see its model card).
"""

from __future__ import annotations

from typing import Annotated

import typer

from freemask.cli.options import out
from freemask.config import load_config
from freemask.errors import FreemaskError

toyworld_app = typer.Typer(
    help="The toy world: rendered scenes with exact labels.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add the ``toyworld`` commands to the ``freemask`` app."""
    app.add_typer(toyworld_app, name="toyworld")


@toyworld_app.command("scenes")
def scenes(
    config: Annotated[str, typer.Option("--config", "-c", help="Run config (its classes).")],
    outputs: Annotated[str, typer.Option("--out", help="Where to write the labelled scenes.")],
    count: Annotated[int, typer.Option(min=1, help="How many scenes.")] = 100,
    objects: Annotated[str, typer.Option(help="Objects per scene, 'low,high'.")] = "2,3",
    size: Annotated[int, typer.Option(min=16, max=1024, help="Image side in pixels.")] = 128,
    seed: Annotated[int, typer.Option(help="Scene seed (use another than training's).")] = 1,
    related: Annotated[
        bool | None,
        typer.Option(
            "--related/--anywhere",
            help="Scenes and object sizes as the run's relation table (relate.thesaurus) says, "
            "or any class anywhere at any size [default: related when the config names a "
            "table].",
        ),
    ] = None,
    domain: Annotated[
        str,
        typer.Option(
            help="'toy', the world the toy model draws, or 'shifted': other textures "
            "and lights (training data for an independent labeller)."
        ),
    ] = "toy",
) -> None:
    """Render labelled scenes of the run's classes (resumable)."""
    from freemask.toyworld.dataset import write_toy_scenes
    from freemask.toyworld.render import DOMAINS

    low, _, high = objects.partition(",")
    try:
        span = (int(low), int(high or low))
    except ValueError:
        raise FreemaskError(f"--objects {objects!r}: expected 'low,high', e.g. 2,3") from None
    if not 1 <= span[0] <= span[1]:
        raise FreemaskError(f"--objects {objects!r}: expected 1 <= low <= high")
    if domain not in DOMAINS:
        raise FreemaskError(f"--domain {domain!r}: expected one of {list(DOMAINS)}")
    run = load_config(config)
    if related and not run.relate.thesaurus:
        raise FreemaskError(f"{config}: --related needs relate.thesaurus, a relation table")
    thesaurus = run.relate.thesaurus if related is not False else None
    result = write_toy_scenes(
        outputs,
        run.classes,
        count,
        seed=seed,
        size=size,
        objects=span,
        thesaurus=thesaurus,
        domain=domain,
    )
    out.print(
        f"toyworld scenes: {result.written} written, {result.skipped} already done -> {outputs}"
    )
