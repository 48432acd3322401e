"""Joining a sharded stage's manifests as a container component."""

from kfp import dsl

from components._spec import spec
from freemask.commands import join_argv, runtime_argv


@dsl.container_component
def join(
    config: str,
    classes: str,
    images_per_class: int,
    iou_threshold: float,
    max_rounds: int,
    tracking_uri: str,
    stage: str,
    shards: int,
):
    """`freemask join --stage stage --shards shards`."""
    return spec(
        "join",
        runtime_argv(classes, images_per_class, iou_threshold, max_rounds, tracking_uri)
        + join_argv(config, stage, shards),
    )
