"""Creating the pipeline's parent MLflow run as a container component."""

from kfp import dsl

from components._spec import spec


@dsl.container_component
def start_run(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    depth: int,
    run_id: dsl.OutputPath(str),
):
    """`freemask start-run`: the parent MLflow run (its id is the output) and the snapshot."""
    return spec("start-run", locals())
