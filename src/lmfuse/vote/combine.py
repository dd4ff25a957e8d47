"""Per-question normalisation of similarity matrices, so that several similarities can be summed.

Each matrix is normalised over its off-diagonal entries (the pairs that enter the scores); the
diagonal is set to 0. Methods:

- ``zscore``: ``(x - mean) / std`` (population std); all 0 when every pair is equally similar. For a
  single similarity this is an affine map of the scores, so the winner does not change.
- ``rank``: the average rank of each entry among the off-diagonal entries (equal values share their
  mean rank), scaled to [0, 1]. Robust to one similarity's outliers.
- ``none``: the raw values.

The combined similarity is ``sum_k w_k * normalise(M_k)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lmfuse.errors import ConfigError

NORMALIZE = ("zscore", "rank", "none")


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """0-based ranks of ``x`` (1-D); equal values get the mean of their positions."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    end = np.cumsum(counts)
    return ((end - counts + end - 1) / 2.0)[inverse]


def normalize_matrix(matrix: np.ndarray, method: str) -> np.ndarray:
    """``(n, n)`` → ``(n, n)`` normalised over the off-diagonal entries; diagonal 0."""
    if method not in NORMALIZE:
        raise ConfigError(f"normalize: expected one of {', '.join(NORMALIZE)}, found {method!r}")
    n = matrix.shape[0]
    off = ~np.eye(n, dtype=bool)
    out = np.zeros_like(matrix, dtype=np.float64)
    values = matrix[off].astype(np.float64)
    if method == "none":
        out[off] = values
    elif method == "zscore" and values.size:
        # Exact sums (fsum) keep the result independent of the candidates' order, bit for bit.
        mean = math.fsum(values.tolist()) / values.size
        std = math.sqrt(math.fsum(((values - mean) ** 2).tolist()) / values.size)
        if std > 0:
            out[off] = (values - mean) / std
    elif method == "rank" and values.size > 1:
        out[off] = _average_ranks(values) / (values.size - 1)
    return out


def combine(matrices: Sequence[np.ndarray], weights: Sequence[float], method: str) -> np.ndarray:
    """``sum_k weights[k] * normalize_matrix(matrices[k], method)``; ``(n, n)``."""
    total = np.zeros_like(matrices[0], dtype=np.float64)
    for m, w in zip(matrices, weights, strict=True):
        total += w * normalize_matrix(m, method)
    return total
