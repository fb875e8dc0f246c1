"""Neighbour weights c_m for search-space evolution (docs/method.md §4 step 4)."""
from __future__ import annotations

import numpy as np


def neighbour_distances(policies: np.ndarray, k: int = 5) -> np.ndarray:
    """d_m = sum of squared distances (in level steps) from policy m to its k nearest other policies."""
    p = np.asarray(policies, dtype=np.float64)
    n = len(p)
    if n == 1:
        return np.zeros(1)
    sq = ((p[:, None, :] - p[None, :, :]) ** 2).sum(axis=-1)
    np.fill_diagonal(sq, np.inf)
    return np.sort(sq, axis=1)[:, : min(k, n - 1)].sum(axis=1)


def neighbour_weights(policies: np.ndarray, k: int = 5, temperature: float = 1.0) -> np.ndarray:
    """c = softmax(-d / T) with T = temperature x (median(d) - min(d)): the temperature scales with
    the spread of the distances, so c spreads over several candidates whatever the number of blocks
    and the population's diversity (with T = 1 in level steps c was one-hot; with T = median(d)
    nearly uniform; in raw ratios it is flat)."""
    d = neighbour_distances(policies, k)
    if len(d) == 1:
        return np.ones(1)
    scale = float(np.median(d) - np.min(d))
    if scale <= 0:
        scale = float(np.median(d)) or 1.0
    t = temperature * scale
    z = -d / t
    e = np.exp(z - z.max())
    return e / e.sum()


def effective_candidates(c: np.ndarray) -> float:
    """1 / sum c^2: 1 when all weight sits on one candidate, n when c is uniform."""
    c = np.asarray(c, dtype=np.float64)
    return float(1.0 / np.sum(c * c))
