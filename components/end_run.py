"""Ending the pipeline's parent MLflow run as a container component (the exit handler's task)."""

from kfp import dsl

from components._spec import spec


@dsl.container_component
def end_run(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    status: dsl.PipelineTaskFinalStatus,
):
    """`freemask end-run`: the parent MLflow run FINISHED, or FAILED when the pipeline failed."""
    return spec("end-run", locals())
