"""Stage 3, compose: backgrounds, object placement (heuristic or FOPA) and multi-object scenes."""

from freemask.compose.backgrounds import run_backgrounds, scenes_for_run
from freemask.compose.placement import HeuristicPlacer, PlacementPrior, Placer
from freemask.compose.scene import Cutout, CutoutError, Scene, cut_out
from freemask.compose.stage import compose_one, make_placer, run_compose

__all__ = [
    "Cutout",
    "CutoutError",
    "HeuristicPlacer",
    "PlacementPrior",
    "Placer",
    "Scene",
    "compose_one",
    "cut_out",
    "make_placer",
    "run_backgrounds",
    "run_compose",
    "scenes_for_run",
]
