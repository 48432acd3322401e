"""The trained segmenter as an MLflow model (the pyfunc flavor), so that the Model Registry
serves it: ``mlflow.pyfunc.load_model("models:/<name>-segmenter@best").predict(images)`` takes
a batch of RGB images (a uint8 array ``[N, H, W, 3]``) and returns their label maps
(``[N, H, W]``, 0 background, k the run's k-th class).

The model is saved as code (MLflow's models-from-code: ``python_model`` is the path of
``mlflow_model_code.py``, which MLflow copies beside the model and runs to load it), so loading
it unpickles nothing. Its one artifact is the folder ``save_trained`` writes (config.json,
labels.json, model.safetensors), read back by ``load_trained``: the weights load as they do in
the pipeline. Loading needs freemask installed (``freemask[segment]``).
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from freemask.records import label_dtype
from freemask.segment.model import Segmenter, place_segmenter, predict
from freemask.segment.train import MODEL_MARKER, load_trained
from freemask.storage import LocalStorage, Storage

with warnings.catch_warnings():
    # Importing mlflow.pyfunc (3.x) warns about the `Any` hints of MLflow's own agent types
    # (mlflow/types/responses.py builds their schema at import): nothing of ours to act on.
    warnings.filterwarnings("ignore", ".*Any type hint is inferred as AnyType", UserWarning)
    import mlflow.pyfunc

ARTIFACT = "segmenter"  # the artifact key, and the folder under the model's artifacts/
FILES = ("config.json", "labels.json", MODEL_MARKER)
CODE = Path(__file__).with_name("mlflow_model_code.py")
EXAMPLE_SIDE = 8  # the input example: one 8x8 image, small enough to keep beside the model
# Where the model predicts unless the loader says otherwise:
# mlflow.pyfunc.load_model(uri, model_config={"device": "cpu", "precision": "fp32"}).
DEFAULT_PLACEMENT = {"device": "auto", "precision": "fp32"}


class SegmenterModel(mlflow.pyfunc.PythonModel):
    """A freemask segmenter behind MLflow's pyfunc interface."""

    def load_context(self, context: Any) -> None:
        """Load the segmenter from the model's artifact folder, placed as ``model_config``
        says (``device``: auto, cpu, cuda or cuda:N; ``precision``: fp32, bf16, fp16, auto)."""
        from freemask.devices import Placement, resolve_device, resolve_precision

        settings = {**DEFAULT_PLACEMENT, **(context.model_config or {})}
        device = resolve_device(str(settings["device"]), "model_config.device")
        dtype = resolve_precision(str(settings["precision"]), device, "model_config.precision")
        segmenter = load_trained(LocalStorage(context.artifacts[ARTIFACT]))
        self.segmenter = place_segmenter(segmenter, Placement(device, dtype))

    # model_input's hint is one MLflow derives no schema from (mlflow/types/type_hints.py,
    # type_hints_no_signature_inference): the signature below says what goes in and out.
    def predict(self, context: Any, model_input: np.ndarray, params: Any = None) -> np.ndarray:
        """Label maps ``[N, H, W]`` of a uint8 image batch ``[N, H, W, 3]``."""
        return predict_batch(self.segmenter, np.asarray(model_input))


def predict_batch(segmenter: Segmenter, images: np.ndarray) -> np.ndarray:
    """``predict`` over a batch array, ``segmenter.predict_batch_size`` images at a time."""
    step = max(1, segmenter.predict_batch_size)
    maps: list[np.ndarray] = []
    for start in range(0, len(images), step):
        maps.extend(predict(segmenter, list(images[start : start + step])))
    return np.stack(maps)


def signature_of(segmenter: Segmenter) -> Any:
    """Input: any number of RGB uint8 images of one size; output: their label maps, uint8
    (uint16 past 254 classes, ``records.label_dtype``)."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    labels = label_dtype(int(np.max(segmenter.to_run_label)))  # what predict returns
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3))]),
        outputs=Schema([TensorSpec(np.dtype(labels), (-1, -1, -1), "label_maps")]),
    )


def example_input() -> np.ndarray:
    """One small mid-grey image: the input example saved beside the model."""
    return np.full((1, EXAMPLE_SIDE, EXAMPLE_SIDE, 3), 128, dtype=np.uint8)


def requirements() -> list[str]:
    """What loading the model needs, pinned to what saved it (given rather than inferred:
    MLflow's inference loads the model in a subprocess)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in ("freemask", "mlflow", "torch", "transformers", "safetensors", "numpy"):
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            pins.append(package)
    return pins


def save_segmenter_model(model: Storage, path: Path, segmenter: Segmenter | None = None) -> None:
    """Write the segmenter that ``save_trained`` wrote under ``model`` as an MLflow pyfunc
    model folder at ``path`` (which must not exist). ``segmenter``: that model, when loaded
    already (its output type goes into the signature)."""
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp) / ARTIFACT
        folder.mkdir()
        for name in FILES:  # a local copy: the model may lie on gs://
            (folder / name).write_bytes(model.read_bytes(name))
        segmenter = segmenter or load_trained(LocalStorage(folder))
        mlflow.pyfunc.save_model(
            str(path),
            python_model=str(CODE),
            artifacts={ARTIFACT: str(folder)},
            signature=signature_of(segmenter),
            input_example=example_input(),
            pip_requirements=requirements(),
            model_config=DEFAULT_PLACEMENT,
        )
