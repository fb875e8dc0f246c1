"""Neighbour weights c_m for search-space evolution (docs/method.md §4 step 4)."""
from __future__ import annotations

import numpy as np


def neighbour_weights(policies: np.ndarray, k: int = 5, temperature: float = 1.0) -> np.ndarray:
    """c = softmax(-d / T), d_m = sum of squared distances from policy m to its k
    nearest other policies. Distances are measured in level steps (level indices):
    in raw ratios every distance is tiny and the softmax is flat."""
    p = np.asarray(policies, dtype=np.float64)
    n = len(p)
    if n == 1:
        return np.ones(1)
    sq = ((p[:, None, :] - p[None, :, :]) ** 2).sum(axis=-1)
    np.fill_diagonal(sq, np.inf)
    d = np.sort(sq, axis=1)[:, : min(k, n - 1)].sum(axis=1)
    z = -d / temperature
    e = np.exp(z - z.max())
    return e / e.sum()
