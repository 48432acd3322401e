"""Is the drawn object the class it was drawn as? A check at generate, as peers filter drawn objects.

A text-to-image model sometimes draws another class than the prompt names (a cross drawn half
as a box, a crescent for a ring), and its attention then labels that object with the prompt's
class. X-Paste and DiverGen filter drawn objects with CLIP, Gen-n-Val with a vision-language
validator. ``generate.class_check`` picks a ``ClassCheck``:

- ``clip``: a CLIP model scores the object's crop (its mask's box, the background outside the
  mask grey, padded square) against "a photo of a {class}" for every run class;
- ``labeller``: a segmenter that predicts the run's classes (``builtin:toy-labeller`` in the
  toy world) labels the drawn image; another run class under more than
  ``class_check_threshold`` of the object's mask (a misdrawn object, or a hybrid of two
  classes), or background under most of it, rejects the object.

Each gives a ``Verdict`` per object: kept, rejected (the stage writes it to rejected.jsonl as
``class_check: <why>``) or, with ``class_check_relabel``, relabelled to the run class that
clearly wins.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch

from freemask.config import GenerateConfig
from freemask.devices import resolve_device
from freemask.errors import FreemaskError, some_names
from freemask.model_cache import resolve_model_source
from freemask.models import BUILTIN_PREFIX, builtin_model_folder, require_safetensors
from freemask.records import Sample, StageStamp

logger = logging.getLogger(__name__)

CLIP_ID = "openai/clip-vit-base-patch32"
CLIP_PROMPT = "a photo of a {name}"
FIELD = "generate.class_check_model"
VERSION = "1"
# What a checked sample records: the verdict's score and, when relabelled, the drawn class's id.
SCORE = "class_check_score"
RELABELLED_FROM = "class_check_relabelled_from"
# The GenerateConfig fields of the check: they decide which samples exist and their class, not
# what a drawn sample is, so they stay out of sample ids and go into the settings guard.
CHECK_FIELDS = frozenset(
    name for name in GenerateConfig.model_fields if name.startswith("class_check")
)
# The labeller check: an object whose mask the labeller sees as background for more than this
# share is no object at all.
NO_OBJECT_SHARE = 0.5
# The grey that stands for "not the object" in a CLIP crop, and the context margin around the
# mask's box (a share of its longer side on each side).
CROP_FILL = 128
CROP_MARGIN = 0.1
# Prompts encoded per forward pass (a run may have thousands of classes).
TEXT_CHUNK = 256

Action = Literal["kept", "rejected", "relabelled"]


@dataclass(frozen=True)
class Verdict:
    """A check's word on one drawn object: ``kept`` as its intended class, ``rejected``, or
    ``relabelled`` to ``class_name``; ``score`` is what the decision rests on (CLIP's
    probability, or the labeller's share of the mask, for ``class_name``), ``reason`` says why."""

    action: Action
    class_name: str
    score: float
    reason: str


class ClassCheck(Protocol):
    """Judges drawn objects against the class each was drawn as, among the run's classes (the
    check is built for them)."""

    classes: list[str]

    def __call__(
        self, images: list[np.ndarray], masks: list[np.ndarray], intended: list[str]
    ) -> list[Verdict]:
        """One verdict per RGB uint8 image, its object's HxW bool mask and intended class."""
        ...


def clip_verdict(
    probabilities: np.ndarray,
    classes: list[str],
    intended: str,
    threshold: float,
    relabel_margin: float | None = None,
) -> Verdict:
    """CLIP's verdict from its probabilities over the run's classes: ``intended`` must be the
    most probable, with at least ``threshold``; with ``relabel_margin``, a class that wins with
    at least ``threshold`` and leads ``intended`` by the margin takes the object over."""
    want, best = classes.index(intended), int(np.argmax(probabilities))
    mine, theirs = float(probabilities[want]), float(probabilities[best])
    if best == want:
        if mine >= threshold:
            return Verdict("kept", intended, mine, f"clip: {intended} {mine:.2f}")
        reason = f"clip: {intended} {mine:.2f} < threshold {threshold}"
        return Verdict("rejected", intended, mine, reason)
    other = classes[best]
    said = f"clip: {other} {theirs:.2f}, {intended} {mine:.2f}"
    if relabel_margin is not None and theirs >= threshold and theirs - mine >= relabel_margin:
        return Verdict("relabelled", other, theirs, f"{said}: relabelled to {other}")
    return Verdict("rejected", intended, mine, said)


def labeller_verdict(
    counts: np.ndarray,
    classes: list[str],
    intended: str,
    threshold: float,
    relabel_margin: float | None = None,
) -> Verdict:
    """The labeller's verdict from its pixel counts under the mask (index 0 background, k the
    k-th run class): no object when background holds more than ``NO_OBJECT_SHARE`` of the mask;
    rejected when another run class holds more than ``threshold`` of it (a misdrawn object, or
    a hybrid of two); else kept. With ``relabel_margin``, that other class takes the object
    over when it leads ``intended`` by the margin."""
    shares = counts / max(int(counts.sum()), 1)
    objects = shares[1:]
    want = classes.index(intended)
    mine = float(objects[want])
    if shares[0] > NO_OBJECT_SHARE:
        reason = f"no object: labeller sees background under {shares[0]:.0%} of the mask"
        return Verdict("rejected", intended, mine, reason)
    rivals = objects.copy()
    rivals[want] = -1.0
    rival = int(np.argmax(rivals))
    theirs = float(objects[rival])
    if theirs <= threshold:
        return Verdict("kept", intended, mine, f"labeller: {intended} under {mine:.0%} of the mask")
    other = classes[rival]
    said = (
        f"labeller: {other} under {theirs:.0%} of the mask (> threshold {threshold}), "
        f"{intended} under {mine:.0%}"
    )
    if relabel_margin is not None and theirs - mine >= relabel_margin:
        return Verdict("relabelled", other, theirs, f"{said}: relabelled to {other}")
    return Verdict("rejected", intended, mine, said)


def object_crop(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The object alone: the mask's box (plus ``CROP_MARGIN``), pixels outside the mask grey,
    padded to a square with the same grey."""
    rows, columns = np.nonzero(mask)
    top, bottom = int(rows.min()), int(rows.max()) + 1
    left, right = int(columns.min()), int(columns.max()) + 1
    cut = np.where(mask[top:bottom, left:right, None], image[top:bottom, left:right], CROP_FILL)
    height, width = cut.shape[:2]
    side = round(max(height, width) * (1 + 2 * CROP_MARGIN))
    canvas = np.full((side, side, 3), CROP_FILL, dtype=np.uint8)
    y, x = (side - height) // 2, (side - width) // 2
    canvas[y : y + height, x : x + width] = cut
    return canvas


def _projected(output: Any) -> torch.Tensor:
    """A ``get_*_features`` result as a tensor: transformers 4 returns the projected embeddings,
    transformers 5 an output whose ``pooler_output`` holds them."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ClipCheck:
    """CLIP's zero-shot verdict on the object's crop, over "a photo of a {class}" per run class.

    ``model`` is a transformers ``CLIPModel``, ``processor`` its ``CLIPProcessor``; the text
    embeddings are computed once, for the run's ``classes``."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        classes: list[str],
        threshold: float,
        relabel_margin: float | None = None,
    ):
        self.model = model.eval()
        self.processor = processor
        self.classes = list(classes)
        self.threshold = threshold
        self.relabel_margin = relabel_margin
        self.text_embeddings = self.encode_text([CLIP_PROMPT.format(name=c) for c in classes])
        if len(self.classes) < 2:
            logger.warning(
                "generate.class_check: clip weighs the run's classes against each other; with "
                "one class its probability is always 1 and every object is kept"
            )

    @classmethod
    def from_config(cls, settings: GenerateConfig, classes: list[str]) -> ClipCheck:
        """Load ``settings.class_check_model`` (default ``CLIP_ID``) onto ``settings.device``."""
        model, processor = load_clip(
            settings.class_check_model or CLIP_ID,
            settings.class_check_revision,
            resolve_device(settings.device, "generate.device"),
        )
        margin = settings.class_check_relabel_margin if settings.class_check_relabel else None
        return cls(model, processor, classes, settings.class_check_threshold, margin)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """Unit-length text embeddings of ``prompts``: [prompts, dim]."""
        chunks = []
        for start in range(0, len(prompts), TEXT_CHUNK):
            tokens = self.processor.tokenizer(
                prompts[start : start + TEXT_CHUNK], padding=True, return_tensors="pt"
            ).to(self.device)
            chunks.append(_projected(self.model.get_text_features(**tokens)))
        embeddings = torch.cat(chunks).float()
        return embeddings / embeddings.norm(dim=-1, keepdim=True)

    @torch.no_grad()
    def encode_images(self, images: list[np.ndarray], masks: list[np.ndarray]) -> torch.Tensor:
        """Unit-length embeddings of the objects' crops (``object_crop``): [objects, dim]."""
        crops = [object_crop(image, mask) for image, mask in zip(images, masks, strict=True)]
        pixels = self.processor.image_processor(crops, return_tensors="pt")["pixel_values"]
        embeddings = _projected(self.model.get_image_features(pixel_values=pixels.to(self.device)))
        embeddings = embeddings.float()
        return embeddings / embeddings.norm(dim=-1, keepdim=True)

    @torch.no_grad()
    def probabilities(self, images: list[np.ndarray], masks: list[np.ndarray]) -> np.ndarray:
        """Per object, the softmax over the run's classes: [objects, classes]."""
        embeddings = self.encode_images(images, masks)
        # As CLIPModel.forward (transformers, modeling_clip.py) makes its logits_per_image:
        # cosine similarity times exp(logit_scale); their softmax is the class probabilities.
        logits = self.model.logit_scale.exp().float() * embeddings @ self.text_embeddings.T
        return logits.softmax(dim=-1).cpu().numpy()

    def __call__(
        self, images: list[np.ndarray], masks: list[np.ndarray], intended: list[str]
    ) -> list[Verdict]:
        probabilities = self.probabilities(images, masks)
        return [
            clip_verdict(row, self.classes, name, self.threshold, self.relabel_margin)
            for row, name in zip(probabilities, intended, strict=True)
        ]


def load_clip(model_id: str, revision: str | None, device: torch.device) -> tuple[Any, Any]:
    """A CLIP model and processor from a hub id, local folder or ``gs://`` mirror (safetensors
    only); FreemaskError naming ``generate.class_check_model`` when they cannot be loaded."""
    from transformers import CLIPModel, CLIPProcessor

    source = resolve_model_source(model_id, FIELD)
    builtin = source.startswith(BUILTIN_PREFIX)  # a folder an installed package ships
    folder = builtin_model_folder(source, FIELD) if builtin else Path(source).expanduser()
    require_safetensors(folder, FIELD)
    source = str(folder) if folder.exists() else source
    try:
        processor = CLIPProcessor.from_pretrained(source, revision=revision)
        model = CLIPModel.from_pretrained(source, revision=revision, use_safetensors=True)
    except (OSError, ValueError, TypeError) as exc:
        raise FreemaskError(f"{FIELD} {model_id!r}: cannot load a CLIP model ({exc})") from None
    return model.to(device), processor


class LabellerCheck:
    """A segmenter's verdict: the run classes it gives the object's mask pixels."""

    def __init__(
        self,
        segmenter: Any,
        classes: list[str],
        threshold: float,
        relabel_margin: float | None = None,
    ):
        self.segmenter = segmenter
        self.classes = list(classes)
        self.threshold = threshold
        self.relabel_margin = relabel_margin

    @classmethod
    def from_config(cls, settings: GenerateConfig, classes: list[str]) -> LabellerCheck:
        """Load ``settings.class_check_model`` (required) predicting the run's ``classes``."""
        segmenter = load_check_segmenter(
            settings.class_check_model or "",
            settings.class_check_revision,
            classes,
            settings,
        )
        margin = settings.class_check_relabel_margin if settings.class_check_relabel else None
        return cls(segmenter, classes, settings.class_check_threshold, margin)

    def __call__(
        self, images: list[np.ndarray], masks: list[np.ndarray], intended: list[str]
    ) -> list[Verdict]:
        from freemask.segment import predict

        step = max(self.segmenter.predict_batch_size, 1)
        labels = [
            label
            for start in range(0, len(images), step)
            for label in predict(self.segmenter, images[start : start + step])
        ]
        size = len(self.classes) + 1
        return [
            labeller_verdict(
                np.bincount(label[mask].astype(np.int64), minlength=size)[:size],
                self.classes,
                name,
                self.threshold,
                self.relabel_margin,
            )
            for label, mask, name in zip(labels, masks, intended, strict=True)
        ]


def load_check_segmenter(
    model_id: str, revision: str | None, classes: list[str], settings: GenerateConfig
) -> Any:
    """The labeller check's segmenter (as ``segment.labeller`` is loaded: a Mask2Former id or
    folder, a prefix holding a model freemask trained, or a ``builtin:`` one), its labels
    mapped onto the run's by name; FreemaskError naming ``generate.class_check_model`` when it
    cannot be loaded or lacks a run class."""
    from freemask.config import SegmentConfig
    from freemask.segment import BUILTIN_IDS, label_mapping, load_segmenter, load_trained
    from freemask.storage import open_storage

    # Predicted at the drawn images' side (a trained folder keeps its own).
    side = min(max(64, -(-max(settings.height, settings.width) // 32) * 32), 4096)
    segment = SegmentConfig(
        model_id=model_id, revision=revision, device=settings.device, image_size=side
    )
    if model_id in BUILTIN_IDS:  # random weights over the run's labels: for smoke runs
        return load_segmenter(segment, classes, trainable=False, field=FIELD)
    source = resolve_model_source(model_id, FIELD, required=False)
    if source.startswith(BUILTIN_PREFIX):
        source = str(builtin_model_folder(source, FIELD))
    store = open_storage(source)
    if store.exists("labels.json"):
        segmenter = load_trained(store, segment)
    else:
        as_model = segment.model_copy(update={"model_id": source})
        segmenter = load_segmenter(as_model, [], trainable=False, field=FIELD)
    id2label = segmenter.model.config.id2label
    missing = [name for name in classes if not _has_label(id2label, name)]
    if missing:
        raise FreemaskError(
            f"{FIELD} {model_id!r}: no label for class(es) {some_names(missing)}; the labeller "
            "check needs a checkpoint that predicts every run class by name"
        )
    segmenter.to_run_label = label_mapping(id2label, classes, {})
    return segmenter


def _has_label(id2label: dict[int, str], name: str) -> bool:
    from freemask.segment import label_mapping

    try:
        label_mapping(id2label, [name], {})
    except FreemaskError:
        return False
    return True


CHECKS = {"clip": ClipCheck, "labeller": LabellerCheck}


def load_class_check(settings: GenerateConfig, classes: list[str]) -> ClassCheck | None:
    """The check ``settings.class_check`` names, loaded once for the run's ``classes``; None for
    ``none``."""
    if settings.class_check == "none":
        return None
    return CHECKS[settings.class_check].from_config(settings, classes)


def judge(
    check: ClassCheck | None,
    objects: list[tuple[np.ndarray, np.ndarray, str]],
    plausible: list[bool],
) -> list[Verdict | None]:
    """``check``'s verdicts on the (image, mask, intended class) ``objects`` whose masks are
    ``plausible``, in one call; None for the others, and for every object without a check."""
    verdicts: list[Verdict | None] = [None] * len(objects)
    judged = [index for index, ok in enumerate(plausible) if ok]
    if check is None or not judged:
        return verdicts
    images, masks, intended = zip(*(objects[index] for index in judged), strict=True)
    for index, verdict in zip(
        judged, check(list(images), list(masks), list(intended)), strict=True
    ):
        verdicts[index] = verdict
    return verdicts


def check_settings(settings: GenerateConfig) -> dict[str, Any]:
    """The check's settings as the stage's settings guard records them (``{}`` without a
    check, so outputs made before the check existed keep their settings hash)."""
    if settings.class_check == "none":
        return {}
    model = settings.class_check_model or (CLIP_ID if settings.class_check == "clip" else None)
    values = settings.model_dump(mode="json", include=set(CHECK_FIELDS))
    values["class_check_model"] = model
    return {f"generate.{key}": value for key, value in sorted(values.items())}


def guard_hash(content_hash: str, settings: GenerateConfig) -> str:
    """The settings hash of a generate output: ``content_hash`` (what each sample is), mixed
    with the check's settings when there is a check."""
    check = check_settings(settings)
    if not check:
        return content_hash
    canonical = json.dumps(
        {"content": content_hash, **check}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def relabel_counts(samples: list[Sample], drawn_as: dict[str, str]) -> dict[str, dict[str, int]]:
    """Per drawn class (``drawn_as``: sample id -> class), how many of ``samples`` the check
    relabelled to each class: ``{"box": {"cross": 2}}``."""
    moved: dict[str, Counter] = {}
    for sample in samples:
        if sample.id in drawn_as and RELABELLED_FROM in sample.scores:
            moved.setdefault(drawn_as[sample.id], Counter())[sample.instances[0].class_name] += 1
    return {drawn: dict(sorted(counts.items())) for drawn, counts in sorted(moved.items())}


def record_verdict(sample: Sample, verdict: Verdict, intended_id: int) -> Sample:
    """``sample`` with the check's score (``scores.class_check_score``) and, when relabelled,
    the drawn class's id (``scores.class_check_relabelled_from``) and a ``class_check`` entry in
    its stage history."""
    scores = {**sample.scores, SCORE: round(verdict.score, 6)}
    source = sample.source
    if verdict.action == "relabelled":
        scores[RELABELLED_FROM] = float(intended_id)
        source = [*source, StageStamp(stage="class_check", version=VERSION)]
    return sample.model_copy(update={"scores": scores, "source": source})
