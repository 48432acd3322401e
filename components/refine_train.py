"""Training AffinityNet before the sharded refinement, as a container component."""

from kfp import dsl

from components._spec import spec
from freemask.commands import refine_train_argv, runtime_argv


@dsl.container_component
def refine_train(
    config: str,
    classes: str,
    images_per_class: int,
    iou_threshold: float,
    max_rounds: int,
    tracking_uri: str,
):
    """`freemask refine --train-only` (nothing to do for the training-free refiners)."""
    return spec(
        "refine-train",
        runtime_argv(classes, images_per_class, iou_threshold, max_rounds, tracking_uri)
        + refine_train_argv(config),
    )
