"""Stage 5, harmonize: classical lighting correction by default, PCTNet when weights are given."""

from freemask.harmonize.color_transfer import background_ring, scene_gains, transfer_colour
from freemask.harmonize.pctnet import PCTNet, PCTNetHarmonizer, load_pctnet
from freemask.harmonize.stage import harmonize_sample, make_harmonizer, run_harmonize, sure_masks

__all__ = [
    "PCTNet",
    "PCTNetHarmonizer",
    "background_ring",
    "harmonize_sample",
    "load_pctnet",
    "make_harmonizer",
    "run_harmonize",
    "scene_gains",
    "sure_masks",
    "transfer_colour",
]
