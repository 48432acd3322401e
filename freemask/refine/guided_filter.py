"""The guided filter (He et al.): edge-aware smoothing of a mask by its image, no training."""

from __future__ import annotations

import cv2
import numpy as np


def guided_filter(guide: np.ndarray, source: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Filter ``source`` (HxW float) so its edges follow ``guide`` (HxWx3 uint8 or HxW float).

    Colour guides use the full 3x3 covariance per window, so edges between colours of equal
    brightness are kept. ``radius`` is the window radius in pixels, ``eps`` the regulariser
    (larger: smoother).
    """
    size = (2 * radius + 1, 2 * radius + 1)

    def mean(values: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(values, cv2.CV_64F, size, borderType=cv2.BORDER_REFLECT)

    p = source.astype(np.float64)
    if guide.ndim == 2:
        i = guide.astype(np.float64)
        mean_i, mean_p = mean(i), mean(p)
        a = (mean(i * p) - mean_i * mean_p) / (mean(i * i) - mean_i**2 + eps)
        b = mean_p - a * mean_i
        return (mean(a) * i + mean(b)).astype(np.float32)
    i = guide.astype(np.float64) / 255.0
    mean_i = np.stack([mean(i[..., c]) for c in range(3)], axis=-1)
    mean_p = mean(p)
    cov_ip = np.stack([mean(i[..., c] * p) for c in range(3)], axis=-1) - mean_i * mean_p[..., None]
    sigma = np.empty((*p.shape, 3, 3))
    for row in range(3):
        for col in range(row, 3):
            value = mean(i[..., row] * i[..., col]) - mean_i[..., row] * mean_i[..., col]
            sigma[..., row, col] = sigma[..., col, row] = value
    sigma += eps * np.eye(3)
    a = np.linalg.solve(sigma, cov_ip[..., None])[..., 0]
    b = mean_p - (a * mean_i).sum(axis=-1)
    mean_a = np.stack([mean(a[..., c]) for c in range(3)], axis=-1)
    return ((mean_a * i).sum(axis=-1) + mean(b)).astype(np.float32)
