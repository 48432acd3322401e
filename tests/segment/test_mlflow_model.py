"""The trained segmenter as an MLflow model: a tiny active-learning run against a real MLflow
server registers it, and ``models:/<name>-segmenter@best`` loads through pyfunc and predicts
what freemask's own loader predicts, from code and safetensors, with no pickle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import write_shapes_set
from mlflow import MlflowClient

import freemask.segment.mlflow_model  # noqa: F401 - first: it quiets MLflow's import warning
from freemask.active import run_active
from freemask.config import RunConfig
from freemask.segment import load_trained, predict
from freemask.storage import LocalStorage, read_image
from freemask.tracking import MlflowTracker


@pytest.mark.slow
def test_best_segmenter_loads_from_the_registry_and_predicts(
    tmp_path: Path, mlflow_server: str, monkeypatch
) -> None:
    import mlflow.pyfunc

    pool, samples = write_shapes_set(tmp_path / "pool", 10)
    config = RunConfig.model_validate(
        {
            "name": "pyfunc-test",
            "workdir": str(tmp_path),
            "classes": ["box", "ball"],
            "segment": {
                "model_id": "builtin:tiny-mask2former",
                "image_size": 64,
                "batch_size": 4,
                "train_steps": 2,
                "checkpoint_every": 2,
            },
            "active": {"max_rounds": 1, "iou_threshold": 0.0},
        }
    )
    with MlflowTracker(mlflow_server, "pyfunc-test").start_run("pipeline") as parent:
        run_active(config, pool.uri, str(tmp_path / "active"), run=parent)

    # 1. Loaded from the registry by alias, it predicts label maps for a batch of images.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    model = mlflow.pyfunc.load_model("models:/pyfunc-test-segmenter@best")
    images = np.stack([read_image(pool, sample.image, mode="RGB") for sample in samples[:3]])
    maps = model.predict(images)
    assert maps.shape == (3, 64, 64) and maps.dtype == np.uint8
    # The same maps as freemask's own loader gives for the best round's model.
    client = MlflowClient(mlflow_server)
    best = client.get_model_version_by_alias("pyfunc-test-segmenter", "best")
    round_index = int(client.get_run(best.run_id).data.tags["freemask.round"])
    trained = load_trained(LocalStorage(tmp_path / f"active/rounds/{round_index:02d}/model"))
    np.testing.assert_array_equal(maps, np.stack(predict(trained, list(images))))
    # The signature says what goes in; the input example kept beside it is one small image.
    (spec,) = model.metadata.signature.inputs.inputs
    assert (spec.type, spec.shape) == (np.dtype(np.uint8), (-1, -1, -1, 3))
    assert np.asarray(model.input_example).shape == (1, 8, 8, 3)

    # 2. What was logged: the code MLflow runs to load it and the safetensors weights.
    local = Path(client.download_artifacts(best.run_id, "models/segmenter", str(tmp_path)))
    files = {path.relative_to(local).as_posix() for path in local.rglob("*")}
    assert {"MLmodel", "mlflow_model_code.py", "artifacts/segmenter/model.safetensors"} <= files
    assert not any(name.endswith((".pkl", ".pickle", ".pt", ".bin")) for name in files)
    pyfunc = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    assert pyfunc["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert "python_model" not in pyfunc  # no cloudpickled model object
