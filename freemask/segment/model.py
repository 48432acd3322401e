"""Mask2Former through transformers: loading, label mapping, preprocessing and semantic inference.

transformers is the backend because detectron2, Mask2Former's original home, cannot be
installed from the package registry; ``Mask2FormerForUniversalSegmentation`` computes the same
matched mask and class losses. Our label space is ``["background", *classes]`` (index 0 is the
background, k the k-th configured class); a pretrained checkpoint keeps its own labels and maps
them onto ours for pseudo-labelling (``segment.label_map`` names a checkpoint label per class
where the names differ). Every loader places the model as ``segment.device`` and
``segment.precision`` say (``place_segmenter``); predictions come back as CPU NumPy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from freemask.config import SegmentConfig
from freemask.devices import CPU, Placement, placement_of
from freemask.errors import FreemaskError
from freemask.model_cache import resolve_model_source
from freemask.models import require_safetensors
from freemask.records import label_dtype
from freemask.relate.thesaurus import normalise

TINY_MASK2FORMER_ID = "builtin:tiny-mask2former"
SMALL_MASK2FORMER_ID = "builtin:small-mask2former"
SMALL_CONV_MASK2FORMER_ID = "builtin:small-mask2former-conv"
# Built offline with random weights (ids above): the backbone (Swin: patch size, width, depths
# and heads; ResNet: stage widths and depths), then the pixel decoder / transformer decoder
# width, queries, (encoder, decoder) layers and heads.
BUILTIN_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "patch_size": 4,
        "embed_dim": 16,
        "depths": [1, 1, 1, 1],
        "num_heads": [1, 1, 2, 2],
        "hidden_dim": 32,
        "num_queries": 12,
        "layers": (1, 2),
        "attention_heads": 2,
    },
    "small": {
        "patch_size": 2,
        "embed_dim": 32,
        "depths": [2, 2, 2, 2],
        "num_heads": [1, 2, 4, 4],
        "hidden_dim": 64,
        "num_queries": 16,
        "layers": (2, 3),
        "attention_heads": 4,
    },
    "small-conv": {
        "backbone": "resnet",
        "hidden_sizes": [32, 64, 128, 256],
        "depths": [2, 2, 2, 2],
        "hidden_dim": 64,
        "num_queries": 16,
        "layers": (2, 3),
        "attention_heads": 4,
    },
}
BUILTIN_IDS = {
    TINY_MASK2FORMER_ID: "tiny",
    SMALL_MASK2FORMER_ID: "small",
    SMALL_CONV_MASK2FORMER_ID: "small-conv",
}
BACKGROUND = "background"
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]


@dataclass
class Segmenter:
    """A Mask2Former model and how its labels map onto the run's (0 background, k class k).

    ``placement`` is where ``place_segmenter`` put the model and the autocast dtype that
    prediction and training use; ``predict_batch_size`` how many images one forward pass takes.
    """

    model: Any
    image_size: int
    to_run_label: np.ndarray  # model label index -> run label index
    placement: Placement = field(default=CPU)
    predict_batch_size: int = 4

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def place_segmenter(
    segmenter: Segmenter, placement: Placement, predict_batch_size: int | None = None
) -> Segmenter:
    """Move the model (parameters and buffers) to ``placement.device``, convolution weights
    channels_last on CUDA; record the placement (and the prediction batch when given)."""
    segmenter.model.to(device=placement.device, memory_format=placement.memory_format())
    segmenter.placement = placement
    if predict_batch_size is not None:
        segmenter.predict_batch_size = predict_batch_size
    return segmenter


def configure_segmenter(segmenter: Segmenter, settings: SegmentConfig) -> Segmenter:
    """Place the segmenter where ``settings`` say (device, precision, prediction batch)."""
    return place_segmenter(
        segmenter, placement_of(settings, "segment"), settings.predict_batch_size
    )


def run_labels(classes: list[str]) -> list[str]:
    """The label space a segmenter trained by freemask predicts."""
    return [BACKGROUND, *classes]


def build_tiny_mask2former(labels: list[str], seed: int = 0, size: str = "tiny") -> Any:
    """A small Mask2Former with random, seeded weights, built offline.

    ``size`` is a key of ``BUILTIN_SIZES``: "tiny" (Swin, 0.4 M parameters) for tests and smoke
    runs, "small" (Swin, 2.5 M) for the toy world, where it learns the shapes in a few CPU
    minutes, "small-conv" (ResNet, 3.1 M), whose convolutions need less data than windows of
    attention. transformers warns that only Swin backbones are supported; the ResNet backbone's
    four stages at strides 4-32 are what the pixel decoder takes (tests train and reload it).
    """
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation

    shape = BUILTIN_SIZES[size]
    hidden = shape["hidden_dim"]
    torch.manual_seed(seed)
    config = Mask2FormerConfig(
        backbone_config=_backbone_config(shape),
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: index for index, label in enumerate(labels)},
        hidden_dim=hidden,
        num_queries=shape["num_queries"],
        encoder_layers=shape["layers"][0],
        decoder_layers=shape["layers"][1],
        dim_feedforward=2 * hidden,
        encoder_feedforward_dim=2 * hidden,
        mask_feature_size=hidden,
        feature_size=hidden,
        num_attention_heads=shape["attention_heads"],
        common_stride=4,
        train_num_points=1024,
    )
    return Mask2FormerForUniversalSegmentation(config)


def _backbone_config(shape: dict[str, Any]) -> Any:
    from transformers import ResNetConfig, SwinConfig

    stages = ["stage1", "stage2", "stage3", "stage4"]
    if shape.get("backbone") == "resnet":
        return ResNetConfig(
            embedding_size=shape["hidden_sizes"][0],
            hidden_sizes=shape["hidden_sizes"],
            depths=shape["depths"],
            layer_type="basic",
            out_features=stages,
        )
    return SwinConfig(
        image_size=64,
        patch_size=shape["patch_size"],
        embed_dim=shape["embed_dim"],
        depths=shape["depths"],
        num_heads=shape["num_heads"],
        window_size=4,
        out_features=stages,
    )


def label_mapping(
    checkpoint_labels: dict[int, str], classes: list[str], label_map: dict[str, str]
) -> np.ndarray:
    """Model label index -> run label index (unmapped checkpoint labels become background).

    Raises FreemaskError naming every run class that no checkpoint label matches.
    """
    by_name = {normalise(name): index for index, name in checkpoint_labels.items()}
    mapping = np.zeros(max(checkpoint_labels) + 1, dtype=np.int64)
    missing = []
    for run_index, name in enumerate(classes, start=1):
        wanted = normalise(label_map.get(name, name))
        if wanted not in by_name:
            missing.append(f"{name!r} (looked for {wanted!r})")
            continue
        mapping[by_name[wanted]] = run_index
    if missing:
        raise FreemaskError(
            f"segment: class(es) {', '.join(missing)} have no label in the checkpoint; map them "
            "with segment.label_map (e.g. {pottedplant: 'plant'})"
        )
    return mapping


def load_segmenter(
    settings: SegmentConfig,
    classes: list[str],
    *,
    trainable: bool,
    field: str = "segment.model_id",
) -> Segmenter:
    """The configured Mask2Former: for pseudo-labels (its own labels, mapped) or to train
    (a fresh head over the run's labels). ``builtin:tiny-mask2former`` and
    ``builtin:small-mask2former`` build untrained models offline. Raises FreemaskError naming
    ``field`` when the model cannot be loaded."""
    labels = run_labels(classes)
    if settings.model_id in BUILTIN_IDS:
        model = build_tiny_mask2former(labels, size=BUILTIN_IDS[settings.model_id])
        return configure_segmenter(
            Segmenter(model, settings.image_size, np.arange(len(labels))), settings
        )
    from transformers import Mask2FormerForUniversalSegmentation

    # A gs:// mirrored folder is fetched once into the model cache (freemask.model_cache).
    model_id = resolve_model_source(settings.model_id, field)
    source = str(Path(model_id).expanduser()) if Path(model_id).expanduser().exists() else model_id
    require_safetensors(Path(source), field)  # a local pickle-only folder: refused in one line
    options: dict[str, Any] = {"revision": settings.revision, "use_safetensors": True}
    if trainable:
        options.update(
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: index for index, label in enumerate(labels)},
            ignore_mismatched_sizes=True,
        )
    try:
        model = Mask2FormerForUniversalSegmentation.from_pretrained(source, **options)
    except (OSError, ValueError) as exc:
        raise FreemaskError(f"{field} {settings.model_id!r}: cannot load ({exc})") from None
    if trainable:
        segmenter = Segmenter(model, settings.image_size, np.arange(len(labels)))
    else:
        mapping = label_mapping(model.config.id2label, classes, settings.label_map)
        segmenter = Segmenter(model, settings.image_size, mapping)
    return configure_segmenter(segmenter, settings)


def preprocess(images: list[np.ndarray], size: int) -> torch.Tensor:
    """RGB uint8 images -> [B, 3, size, size], resized and ImageNet-normalised."""
    tensors = []
    for image in images:
        tensor = torch.tensor(image).permute(2, 0, 1).float()[None] / 255.0
        tensor = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False)[0]
        tensors.append((tensor - IMAGENET_MEAN) / IMAGENET_STD)
    return torch.stack(tensors)


@torch.no_grad()
def predict(segmenter: Segmenter, images: list[np.ndarray]) -> list[np.ndarray]:
    """Semantic label maps (run labels, each image's own size) for RGB images: uint8, or
    uint16 when the run's labels go past 254 (``records.label_dtype``)."""
    model = segmenter.model.eval()
    pixels = preprocess(images, segmenter.image_size).to(
        segmenter.device, memory_format=segmenter.placement.memory_format()
    )
    with segmenter.placement.autocast():
        outputs = model(pixel_values=pixels)
    classes = outputs.class_queries_logits.float().softmax(dim=-1)[..., :-1]  # drop "no object"
    masks = outputs.masks_queries_logits.float().sigmoid()
    scores = torch.einsum("bqc,bqhw->bchw", classes, masks)
    mapping = torch.as_tensor(segmenter.to_run_label, device=scores.device)
    dtype = label_dtype(int(np.max(segmenter.to_run_label)))
    results = []
    for index, image in enumerate(images):
        full = F.interpolate(
            scores[index : index + 1], size=image.shape[:2], mode="bilinear", align_corners=False
        )
        results.append(mapping[full[0].argmax(dim=0)].cpu().numpy().astype(dtype))
    return results
