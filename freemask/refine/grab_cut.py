"""GrabCut completion: an object's whole extent from the image's own colours.

Cross-attention marks where the class word looks, which on a bright object is its highlight or
one face (the toy model's white objects: recall 0.49 at generate). GrabCut (Rother, Kolmogorov
and Blake, SIGGRAPH 2004; OpenCV's ``cv2.grabCut``) fits colour mixtures to an object's and its
background's pixels and finds the cut between them, so a mask seeded by the attention grows
over the object's pixels that look like its seeds and stops at the image's edges.

Seeds per instance: the attention's sure pixels (above ``foreground``) and its core (the
attention's Otsu foreground shrunk by ``core_erosion`` of the image's shorter side, about one
attention cell, so that its blur beyond the object is left out) are hard foreground; its empty
pixels (below ``background``) and any other instance's sure pixels hard background; the rest is
probable foreground from 0.5 up and probable background below. The cut keeps the hard seeds by
construction. Without the core, a ring whose far side shares the background's colour, or a white
ball whose shading does, was cut down to a crescent or its highlight even where the attention
covered all of it. Its mask is then softened by the guided filter, so the object's rim falls
between the stage's thresholds and becomes ignore.
"""

from __future__ import annotations

import cv2
import numpy as np

from freemask.refine.refiners import GuidedFilterRefiner, class_scores

PROBABLE = 0.5  # attention at or above it: probable foreground, below: probable background


class GrabCutRefiner:
    """GrabCut of each instance, seeded by its soft mask, then the guided filter's soft edge."""

    def __init__(
        self,
        foreground: float,
        background: float,
        iterations: int = 5,
        upsample: GuidedFilterRefiner | None = None,
        core_erosion: float | None = None,
    ):
        if not 0.0 <= background < PROBABLE < foreground <= 1.0:
            raise ValueError(
                f"GrabCut seeds need background < {PROBABLE} < foreground, got "
                f"{background} and {foreground}"
            )
        self.foreground = foreground
        self.background = background
        self.iterations = iterations
        self.upsample = upsample or GuidedFilterRefiner()
        self.core_erosion = core_erosion

    def core(self, own: np.ndarray) -> np.ndarray:
        """The attention's Otsu foreground eroded by ``core_erosion`` (bool; empty without)."""
        if self.core_erosion is None:
            return np.zeros(own.shape, bool)
        level = np.round(np.clip(own, 0.0, 1.0) * 255).astype(np.uint8)
        _, foreground = cv2.threshold(level, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        radius = round(self.core_erosion * min(own.shape))
        if radius:
            disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
            foreground = cv2.erode(foreground, disk)
        return foreground.astype(bool)

    def seeds(self, soft: np.ndarray, index: int) -> np.ndarray:
        """GrabCut's seed map (``cv2.GC_*``) of instance ``index`` of soft masks [N, H, W]."""
        own = soft[index]
        seeds = np.full(own.shape, cv2.GC_PR_BGD, np.uint8)
        seeds[own >= PROBABLE] = cv2.GC_PR_FGD
        seeds[(own > self.foreground) | self.core(own)] = cv2.GC_FGD
        seeds[own < self.background] = cv2.GC_BGD
        others = np.delete(soft, index, axis=0)
        if len(others):
            seeds[(others.max(axis=0) > self.foreground) & (own <= self.foreground)] = cv2.GC_BGD
        return seeds

    def cut(self, image: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        """The object's pixels (bool) after the cut; the probable foreground as it is when the
        seeds hold no foreground or no background to learn colours from."""
        probable = (seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)
        if probable.all() or not probable.any():
            return probable
        cv2.setRNGSeed(0)  # the colour mixtures start from k-means: the same cut every time
        background_model = np.zeros((1, 65), np.float64)
        foreground_model = np.zeros((1, 65), np.float64)
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        cv2.grabCut(
            bgr,
            seeds,
            None,
            background_model,
            foreground_model,
            self.iterations,
            cv2.GC_INIT_WITH_MASK,
        )
        return (seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)

    def refine(self, image: np.ndarray, soft: np.ndarray) -> np.ndarray:
        """[1 + instances, H, W] class probabilities of an RGB uint8 image's soft masks."""
        cuts = np.stack([self.cut(image, self.seeds(soft, k)) for k in range(len(soft))])
        return self.upsample.filter(image, class_scores(cuts.astype(np.float32)))
