"""The relate stage as a container component."""

from kfp import dsl

from components._spec import spec


@dsl.container_component
def relate(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    relations: dsl.Output[dsl.Dataset],
):
    """`freemask relate`."""
    return spec("relate", locals())
