"""Creating the pipeline's parent MLflow run as a container component."""

from kfp import dsl

from components._spec import spec
from freemask.commands import runtime_argv, start_run_argv


@dsl.container_component
def start_run(
    config: str,
    classes: str,
    images_per_class: int,
    iou_threshold: float,
    max_rounds: int,
    tracking_uri: str,
    run_id: dsl.OutputPath(str),
):
    """`freemask start-run`; the output is the parent run id every round nests under."""
    return spec(
        "start-run",
        runtime_argv(classes, images_per_class, iou_threshold, max_rounds, tracking_uri)
        + start_run_argv(config, run_id),
    )
