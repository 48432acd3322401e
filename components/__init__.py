"""Kubeflow container components, one per freemask task: each names a `freemask` command line."""

from components.backgrounds import backgrounds
from components.compose import compose
from components.end_run import end_run
from components.generate import generate
from components.harmonize import harmonize
from components.join import join
from components.publish import publish
from components.refine import refine
from components.refine_train import refine_train
from components.relate import relate
from components.round_steps import bootstrap, close, filter_round, prepare, pseudo_label, train
from components.start_run import start_run

__all__ = [
    "backgrounds",
    "bootstrap",
    "close",
    "compose",
    "end_run",
    "filter_round",
    "generate",
    "harmonize",
    "join",
    "prepare",
    "pseudo_label",
    "publish",
    "refine",
    "refine_train",
    "relate",
    "start_run",
    "train",
]
