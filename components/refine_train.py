"""Training AffinityNet before the sharded refinement, as a container component."""

from kfp import dsl

from components._spec import spec


@dsl.container_component
def refine_train(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    affinity_net: dsl.Output[dsl.Model],
):
    """`freemask refine --train-only` (nothing to do for the training-free refiners)."""
    return spec("refine-train", locals())
