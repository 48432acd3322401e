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
    mlflow_run: dsl.Output[dsl.Markdown],
):
    """`freemask start-run`: the parent MLflow run (its id is the output, a Markdown link to it
    the KFP UI shows) and the config snapshot."""
    return spec("start-run", {**locals(), "mlflow_run": mlflow_run.path})
