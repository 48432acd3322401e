"""The harmonize stage as a container component: one shard of it."""

from kfp import dsl

from components._spec import spec
from freemask.commands import runtime_argv, stage_argv


@dsl.container_component
def harmonize(
    config: str,
    classes: str,
    images_per_class: int,
    iou_threshold: float,
    max_rounds: int,
    tracking_uri: str,
    shard: int,
    shards: int,
):
    """`freemask harmonize --shard shard/shards`."""
    return spec(
        "harmonize",
        runtime_argv(classes, images_per_class, iou_threshold, max_rounds, tracking_uri)
        + stage_argv("harmonize", config, shard, shards),
    )
