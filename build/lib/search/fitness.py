"""SRM fitness (docs/method.md §3): F(alpha) = -L_proxy(alpha) - eta * G(alpha), maximised."""
from __future__ import annotations

import numpy as np


def norm_term(log_norm_ratio: np.ndarray) -> float:
    """G = (1/K) sum_k log(||W_hat_k||_F / ||W_k||_F), the normalised log of the
    paper's product of Frobenius norms (its Rademacher-complexity bound)."""
    return float(np.mean(np.asarray(log_norm_ratio, dtype=np.float64)))


def fitness(l_proxy: float, log_norm_ratio: np.ndarray, eta: float) -> float:
    """Higher is better; eta = 0 is the 'Auto w/o Gen' ablation."""
    return -float(l_proxy) - float(eta) * norm_term(log_norm_ratio)
