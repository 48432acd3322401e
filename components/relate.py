"""The relate stage as a container component."""

from kfp import dsl

from components._spec import spec
from freemask.commands import runtime_argv, stage_argv


@dsl.container_component
def relate(
    config: str,
    classes: str,
    images_per_class: int,
    iou_threshold: float,
    max_rounds: int,
    tracking_uri: str,
):
    """`freemask relate`."""
    return spec(
        "relate",
        runtime_argv(classes, images_per_class, iou_threshold, max_rounds, tracking_uri)
        + stage_argv("relate", config),
    )
