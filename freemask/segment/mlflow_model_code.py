"""The code MLflow runs to load a freemask segmenter saved by ``save_segmenter_model`` (its
models-from-code file: MLflow keeps a copy beside the model and executes it at load time, so
nothing is unpickled). Not imported by freemask itself."""

from mlflow.models import set_model

from freemask.segment.mlflow_model import SegmenterModel

set_model(SegmenterModel())
