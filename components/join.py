"""Joining a sharded stage's manifests as a container component."""

from kfp import dsl

from components._spec import spec


@dsl.container_component
def join(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    stage: str,
    shards: int,
    dataset: dsl.Output[dsl.Dataset],
):
    """`freemask join --stage stage --shards shards`."""
    return spec("join", locals())
