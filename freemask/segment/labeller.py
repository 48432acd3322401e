"""The independent pseudo-labeller (``segment.labeller``): the checkpoint that judges round 1.

It is a model id or folder loaded like ``segment.model_id`` (``builtin:`` ids included), or a
prefix holding a model freemask trained (``model.safetensors`` + ``labels.json``, e.g. another
run's ``rounds/NN/model``, or one a package ships as ``builtin:<name>``, e.g.
``builtin:toy-labeller``). Its labels are mapped onto the run's by name (``segment.label_map``
where names differ).
"""

from __future__ import annotations

import numpy as np

from freemask.config import SegmentConfig
from freemask.errors import FreemaskError
from freemask.model_cache import resolve_model_source
from freemask.models import BUILTIN_PREFIX, builtin_model_folder
from freemask.segment.model import BUILTIN_IDS, Segmenter, label_mapping, load_segmenter, run_labels
from freemask.segment.train import load_trained
from freemask.storage import open_storage

FIELD = "segment.labeller"


def load_labeller(settings: SegmentConfig, classes: list[str]) -> Segmenter:
    """The checkpoint named by ``settings.labeller``, predicting the run's labels."""
    source = settings.labeller
    if source is None:
        raise FreemaskError(f"{FIELD}: not set (round 0 trains the pseudo-labeller instead)")
    # A mirrored gs:// folder is loaded from the model cache; another prefix from storage.
    source = resolve_model_source(source, FIELD, required=False)
    if source.startswith(BUILTIN_PREFIX) and source not in BUILTIN_IDS:
        source = str(builtin_model_folder(source, FIELD))  # a trained model a package ships
    if source not in BUILTIN_IDS:
        store = open_storage(source)
        if store.exists("labels.json"):
            segmenter = load_trained(store, settings)
            segmenter.to_run_label = label_mapping(
                segmenter.model.config.id2label, classes, settings.label_map
            )
            return segmenter
    as_model = settings.model_copy(
        update={"model_id": source, "revision": settings.labeller_revision}
    )
    return load_segmenter(as_model, classes, trainable=False, field=FIELD)


def predicts_run_labels(segmenter: Segmenter, classes: list[str]) -> bool:
    """True when the segmenter's own label space is exactly the run's (background, *classes),
    so it can be fine-tuned as it is."""
    id2label = segmenter.model.config.id2label
    own = [id2label.get(index) for index in range(len(id2label))]
    identity = np.array_equal(segmenter.to_run_label, np.arange(len(own)))
    return own == run_labels(classes) and identity
