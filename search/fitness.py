"""SRM fitness (docs/method.md §3): F(alpha) = -L_proxy(alpha) - eta * s * G(alpha), maximised.

L_proxy sees both modalities: L = (1 - w) L_text + w L_mm (each a mean over its own target
tokens) when the evaluator measured image-text samples, else L_text. G is the log of the
paper's product of Frobenius norms relative to the dense model, G = sum_k log(||W_hat_k|| /
||W_k||); s puts G on L's scale and is fixed once per run (`srm_scale`), so eta means "the
share of L's spread given to the SRM term" and memoised fitness stays exact across resume.
"""
from __future__ import annotations

import math

import numpy as np


def norm_term(log_norm_ratio: np.ndarray) -> float:
    """G = sum_k log(||W_hat_k||_F / ||W_k||_F): the log of the product bound, relative to dense."""
    return float(np.sum(np.asarray(log_norm_ratio, dtype=np.float64)))


def proxy_loss(l_text: float, l_mm: float | None, mm_weight: float) -> float:
    """L_proxy: the per-modality means combined with weight w (L_text alone without image-text data)."""
    if l_mm is None or (isinstance(l_mm, float) and math.isnan(l_mm)):
        return float(l_text)
    return (1.0 - mm_weight) * float(l_text) + mm_weight * float(l_mm)


def fitness(l_proxy: float, log_norm_ratio: np.ndarray, eta: float, scale: float = 1.0) -> float:
    """Higher is better; eta = 0 is the 'Auto w/o Gen' ablation."""
    return -float(l_proxy) - float(eta) * float(scale) * norm_term(log_norm_ratio)


def srm_scale(losses: np.ndarray, g_terms: np.ndarray) -> float:
    """s = sd(L) / sd(G) over a generation's candidates: eta * s * G then has eta times L's spread.
    1.0 when either spread is zero (a single candidate, or identical ones)."""
    sl, sg = float(np.std(np.asarray(losses, dtype=np.float64))), float(np.std(np.asarray(g_terms, dtype=np.float64)))
    if not (math.isfinite(sl) and math.isfinite(sg)) or sl <= 0.0 or sg <= 0.0:
        return 1.0
    return sl / sg
