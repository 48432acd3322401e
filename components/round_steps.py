"""The active-learning round's steps as container components (one task each)."""

from kfp import dsl

from components._spec import spec
from freemask.commands import round_argv, runtime_argv


@dsl.container_component
def prepare(
    config: str,
    classes: str,
    images_per_class: int,
    iou_threshold: float,
    max_rounds: int,
    tracking_uri: str,
    parent_run_id: str,
):
    """`freemask round prepare`: the pool and validation set under <workdir>/active."""
    return spec(
        "prepare",
        runtime_argv(classes, images_per_class, iou_threshold, max_rounds, tracking_uri)
        + round_argv("prepare", config, 0, parent_run_id),
    )


@dsl.container_component
def bootstrap(
    config: str,
    classes: str,
    images_per_class: int,
    iou_threshold: float,
    max_rounds: int,
    tracking_uri: str,
    parent_run_id: str,
):
    """`freemask round bootstrap`: round 0's segmenter when no pretrained one labels round 1."""
    return spec(
        "bootstrap",
        runtime_argv(classes, images_per_class, iou_threshold, max_rounds, tracking_uri)
        + round_argv("bootstrap", config, 0, parent_run_id),
    )


@dsl.container_component
def pseudo_label(
    config: str,
    classes: str,
    images_per_class: int,
    iou_threshold: float,
    max_rounds: int,
    tracking_uri: str,
    round_index: int,
    parent_run_id: str,
):
    """`freemask round pseudo-label`."""
    return spec(
        "pseudo-label",
        runtime_argv(classes, images_per_class, iou_threshold, max_rounds, tracking_uri)
        + round_argv("pseudo-label", config, round_index, parent_run_id),
    )


@dsl.container_component
def filter_round(
    config: str,
    classes: str,
    images_per_class: int,
    iou_threshold: float,
    max_rounds: int,
    tracking_uri: str,
    round_index: int,
    parent_run_id: str,
):
    """`freemask round filter`."""
    return spec(
        "filter",
        runtime_argv(classes, images_per_class, iou_threshold, max_rounds, tracking_uri)
        + round_argv("filter", config, round_index, parent_run_id),
    )


@dsl.container_component
def train(
    config: str,
    classes: str,
    images_per_class: int,
    iou_threshold: float,
    max_rounds: int,
    tracking_uri: str,
    round_index: int,
    parent_run_id: str,
):
    """`freemask round train`."""
    return spec(
        "train",
        runtime_argv(classes, images_per_class, iou_threshold, max_rounds, tracking_uri)
        + round_argv("train", config, round_index, parent_run_id),
    )


@dsl.container_component
def close(
    config: str,
    classes: str,
    images_per_class: int,
    iou_threshold: float,
    max_rounds: int,
    tracking_uri: str,
    round_index: int,
    parent_run_id: str,
    depth: int,
    decision: dsl.OutputPath(str),
):
    """`freemask round close`: evaluate and log the round; decision is 'true' to go on."""
    return spec(
        "close",
        runtime_argv(classes, images_per_class, iou_threshold, max_rounds, tracking_uri)
        + round_argv("close", config, round_index, parent_run_id, max_rounds, depth, decision),
    )
