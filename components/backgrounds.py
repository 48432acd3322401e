"""Drawing scene backgrounds as a container component: one shard of it."""

from kfp import dsl

from components._spec import spec


@dsl.container_component
def backgrounds(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    shard: int,
    shards: int,
):
    """`freemask backgrounds --shard shard/shards`."""
    return spec("backgrounds", locals())
