"""The active-learning round's steps as container components (one task each)."""

from kfp import dsl

from components._spec import spec


@dsl.container_component
def prepare(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    parent_run_id: str,
    pool: dsl.Output[dsl.Dataset],
):
    """`freemask round prepare`: the pool and validation set under <workdir>/active."""
    return spec("prepare", locals())


@dsl.container_component
def bootstrap(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    parent_run_id: str,
):
    """`freemask round bootstrap`: round 0's segmenter when no pretrained one labels round 1."""
    return spec("bootstrap", locals())


@dsl.container_component
def pseudo_label(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    round_index: int,
    parent_run_id: str,
):
    """`freemask round pseudo-label`."""
    return spec("pseudo-label", locals())


@dsl.container_component
def filter_round(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    round_index: int,
    parent_run_id: str,
    kept: dsl.Output[dsl.Dataset],
):
    """`freemask round filter`."""
    return spec("filter", locals())


@dsl.container_component
def train(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    round_index: int,
    parent_run_id: str,
    segmenter: dsl.Output[dsl.Model],
):
    """`freemask round train`."""
    return spec("train", locals())


@dsl.container_component
def close(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    round_index: int,
    parent_run_id: str,
    depth: int,
    decision: dsl.OutputPath(str),
    round_metrics: dsl.Output[dsl.Metrics],
):
    """`freemask round close`: evaluate and log the round; decision is 'true' to go on."""
    return spec("close", locals())
