"""Stage 5, harmonize: classical Lab colour transfer by default, PCTNet when weights are given."""

from freemask.harmonize.color_transfer import background_ring, poisson_blend, transfer_colour
from freemask.harmonize.pctnet import PCTNet, PCTNetHarmonizer, load_pctnet
from freemask.harmonize.stage import harmonize_sample, make_harmonizer, run_harmonize

__all__ = [
    "PCTNet",
    "PCTNetHarmonizer",
    "background_ring",
    "harmonize_sample",
    "load_pctnet",
    "make_harmonizer",
    "poisson_blend",
    "run_harmonize",
    "transfer_colour",
]
