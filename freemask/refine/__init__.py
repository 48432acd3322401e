"""Stage 4, refine: AffinityNet random-walk refinement, GrabCut completion, or a training-free
guided filter."""

from freemask.refine.affinity import AffinityNet, affinity_labels, affinity_loss, pair_offsets
from freemask.refine.grab_cut import GrabCutRefiner
from freemask.refine.guided_filter import guided_filter
from freemask.refine.random_walk import propagate, transition_matrix
from freemask.refine.refiners import (
    AffinityRefiner,
    GuidedFilterRefiner,
    Refiner,
    band_labels,
    class_scores,
    refine_soft,
    seed_agreement,
)
from freemask.refine.stage import WEIGHTS, run_refine
from freemask.refine.training import train_affinity

__all__ = [
    "WEIGHTS",
    "AffinityNet",
    "AffinityRefiner",
    "GrabCutRefiner",
    "GuidedFilterRefiner",
    "Refiner",
    "affinity_labels",
    "affinity_loss",
    "band_labels",
    "class_scores",
    "guided_filter",
    "pair_offsets",
    "propagate",
    "refine_soft",
    "run_refine",
    "seed_agreement",
    "train_affinity",
    "transition_matrix",
]
