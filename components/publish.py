"""The end of the run as a container component: the dataset exported, the report written."""

from kfp import dsl

from components._spec import spec


@dsl.container_component
def publish(
    config: str,
    classes: str,
    images_per_class: str,
    iou_threshold: str,
    max_rounds: str,
    tracking_uri: str,
    dataset_version: str,
    parent_run_id: str,
    dataset: dsl.Output[dsl.Dataset],
    report: dsl.Output[dsl.HTML],
):
    """`freemask publish`: COCO, VOC and Hugging Face datasets under the run's export/, the report under report/
    (logged to the parent MLflow run, which it ends FINISHED), and the report's page as an HTML
    artifact for the KFP UI (tables, pictures, a link to the MLflow run)."""
    return spec("publish", {**locals(), "report": report.path})
