"""Where and how big an object goes on a background.

Two placers share one call, ``place(background, cutout, prior, occupied, rng) -> Box | None``:
``HeuristicPlacer`` (no weights) scores candidate boxes by the class's size prior, a support
prior (what the object rests on), how much of the already placed objects it would hide, and
how busy the background is under it; ``FopaPlacer`` (in ``fopa.py``) asks the FOPA network.
Both are deterministic for a given random generator, and every box lies inside the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from freemask.compose.scene import MIN_SIDE, Cutout

Box = tuple[int, int, int, int]  # x, y, width, height in pixels

# Where an object's box should sit, by what it rests on: (which edge, preferred position as a
# fraction of the image height, tolerance). "bottom" is the box's lower edge, "center" its middle.
SUPPORT_PRIORS: dict[str, tuple[str, float, float]] = {
    "ground": ("bottom", 0.85, 0.12),
    "water": ("bottom", 0.8, 0.15),
    "table": ("bottom", 0.75, 0.15),
    "air": ("center", 0.3, 0.18),
    "wall": ("center", 0.4, 0.2),
    "ceiling": ("top", 0.02, 0.1),
    "stuff": ("center", 0.5, 1.0),
}


@dataclass(frozen=True)
class PlacementPrior:
    """What the thesaurus says about a class: size (fraction of image height) and support."""

    size: float
    support: str
    scale_jitter: tuple[float, float] = (0.8, 1.25)


class Placer(Protocol):
    """Chooses a box for a cutout on a background, or None when nothing fits."""

    def place(
        self,
        background: np.ndarray,
        cutout: Cutout,
        prior: PlacementPrior,
        occupied: list[Box],
        rng: np.random.Generator,
    ) -> Box | None: ...


def fit_box_size(
    height: float, aspect: float, image_size: tuple[int, int]
) -> tuple[int, int] | None:
    """(width, height) of a box of ``height`` px and ``aspect``, shrunk to fit; None if too small."""
    rows, cols = image_size
    width = height * aspect
    shrink = min(1.0, 0.95 * cols / width, 0.95 * rows / height)
    width, height = round(width * shrink), round(height * shrink)
    if width < MIN_SIDE or height < MIN_SIDE:
        return None
    return width, height


def occlusion(box: Box, occupied: list[Box]) -> float:
    """The largest fraction of any occupied box that ``box`` would cover."""
    x, y, width, height = box
    worst = 0.0
    for ox, oy, ow, oh in occupied:
        overlap_w = max(0, min(x + width, ox + ow) - max(x, ox))
        overlap_h = max(0, min(y + height, oy + oh) - max(y, oy))
        worst = max(worst, overlap_w * overlap_h / max(ow * oh, 1))
    return worst


def support_score(box: Box, support: str, image_height: int) -> float:
    """How well the box sits for its support type: 1 at the preferred position, falling off."""
    edge, preferred, tolerance = SUPPORT_PRIORS.get(support, SUPPORT_PRIORS["stuff"])
    _, y, _, height = box
    position = {"bottom": y + height, "center": y + height / 2, "top": y}[edge] / image_height
    return float(np.exp(-0.5 * ((position - preferred) / tolerance) ** 2))


class HeuristicPlacer:
    """Scores random candidate boxes and keeps the best.

    score = support prior + (1 - occlusion of placed objects) + (1 - edge density under the box),
    weighted by ``weights``; the object's height (not its cutout's, which has a band around
    it) is the class's size prior times a jitter drawn from ``prior.scale_jitter``.
    """

    def __init__(self, candidates: int = 96, weights: tuple[float, float, float] = (1.0, 1.5, 0.5)):
        self.candidates = candidates
        self.weights = weights

    def place(
        self,
        background: np.ndarray,
        cutout: Cutout,
        prior: PlacementPrior,
        occupied: list[Box],
        rng: np.random.Generator,
    ) -> Box | None:
        rows, cols = background.shape[:2]
        edges = edge_density_table(background)
        best: tuple[float, Box] | None = None
        for _ in range(self.candidates):
            jitter = rng.uniform(*prior.scale_jitter)
            height = prior.size * rows * jitter / cutout.object_height_fraction
            size = fit_box_size(height, cutout.aspect, (rows, cols))
            if size is None:
                continue
            width, height = size
            x = int(rng.integers(0, cols - width + 1))
            y = int(rng.integers(0, rows - height + 1))
            box = (x, y, width, height)
            w_support, w_occlusion, w_edges = self.weights
            score = (
                w_support * support_score(box, prior.support, rows)
                + w_occlusion * (1.0 - occlusion(box, occupied))
                + w_edges * (1.0 - box_mean(edges, box))
            )
            if best is None or score > best[0]:
                best = (score, box)
        return best[1] if best else None


def edge_density_table(image: np.ndarray) -> np.ndarray:
    """Summed-area table of Canny edges (0/1) of an RGB image, for O(1) box means."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    edges = (cv2.Canny(gray, 100, 200) > 0).astype(np.float64)
    return cv2.integral(edges)


def box_mean(table: np.ndarray, box: Box) -> float:
    """Mean of the image under ``box`` from its summed-area table."""
    x, y, width, height = box
    total = table[y + height, x + width] - table[y, x + width] - table[y + height, x] + table[y, x]
    return float(total) / (width * height)
