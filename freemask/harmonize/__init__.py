"""Stage 5, harmonize: classical lighting correction, PCTNet, or a small learned harmonizer."""

from freemask.harmonize.color_transfer import background_ring, scene_gains, transfer_colour
from freemask.harmonize.learned import LearnedHarmonizer, LightNet, load_light_net
from freemask.harmonize.pctnet import PCTNet, PCTNetHarmonizer, load_pctnet
from freemask.harmonize.stage import harmonize_sample, make_harmonizer, run_harmonize, sure_masks

__all__ = [
    "LearnedHarmonizer",
    "LightNet",
    "PCTNet",
    "PCTNetHarmonizer",
    "background_ring",
    "harmonize_sample",
    "load_light_net",
    "load_pctnet",
    "make_harmonizer",
    "run_harmonize",
    "scene_gains",
    "sure_masks",
    "transfer_colour",
]
