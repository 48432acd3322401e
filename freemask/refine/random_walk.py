"""Random-walk propagation of mask scores along learned (or colour) affinities.

The transition matrix is sparse: each feature-grid cell links only to the cells within the
radius, with affinity a_ij = exp(-mean |f_i - f_j|) raised to ``beta`` and rows normalised,
T = D^-1 A^beta. Scores are multiplied by T 2^logt times; a dense matrix gives the same result
at several times the cost.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sparse
import torch

from freemask.refine.affinity import pair_affinity, pair_offsets, shifted_pairs


def transition_matrix(features: torch.Tensor, radius: int, beta: float) -> sparse.csr_matrix:
    """T = D^-1 A^beta over the pairs within ``radius`` of a [D, h, w] feature grid."""
    _, height, width = features.shape
    index = torch.arange(height * width).reshape(height, width)
    rows, cols, values = [index.flatten()], [index.flatten()], [torch.ones(height * width)]
    with torch.no_grad():
        for offset in pair_offsets(radius):
            first_f, second_f = shifted_pairs(features, offset)
            first_i, second_i = shifted_pairs(index, offset)
            affinity = pair_affinity(first_f, second_f).flatten() ** beta
            rows += [first_i.flatten(), second_i.flatten()]
            cols += [second_i.flatten(), first_i.flatten()]
            values += [affinity, affinity]
    matrix = sparse.csr_matrix(
        (
            torch.cat(values).double().numpy(),
            (torch.cat(rows).numpy(), torch.cat(cols).numpy()),
        ),
        shape=(height * width, height * width),
    )
    degree = np.asarray(matrix.sum(axis=1)).ravel()
    return sparse.diags(1.0 / degree) @ matrix


def propagate(transition: sparse.csr_matrix, scores: np.ndarray, logt: int) -> np.ndarray:
    """Scores [channels, N] after 2^logt random-walk steps: s <- T s per channel."""
    walked = scores.T.astype(np.float64)
    for _ in range(2**logt):
        walked = transition @ walked
    return walked.T.astype(np.float32)
