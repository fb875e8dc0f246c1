"""SRM fitness (docs/method.md §3): F(alpha) = -L_proxy(alpha) - eta * s * G(alpha), maximised.

L_proxy sees both modalities: L = (1 - w) L_text + w L_mm (each a mean over its own target
tokens) when the evaluator measured image-text samples, else L_text. G is the log of the
paper's product of Frobenius norms relative to the dense model, G = sum_k log(||W_hat_k|| /
||W_k||); s puts G on L's scale and is fixed once per run (`srm_scale`), so eta means "the
share of L's spread given to the SRM term" and memoised fitness stays exact across resume.

A candidate with a non-finite measured score (L_text, L_mm when image-text data was measured,
or G) is infeasible: its fitness is -inf, below every feasible candidate (`infeasible_reason`
says why). L_mm None means "no image-text data" and is legitimate; NaN means measured and broken.
"""
from __future__ import annotations

import math

import numpy as np


class FitnessError(ValueError):
    """Scores the fitness cannot be computed from (always a one-line message)."""


def norm_term(log_norm_ratio: np.ndarray) -> float:
    """G = sum_k log(||W_hat_k||_F / ||W_k||_F): the log of the product bound, relative to dense."""
    return float(np.sum(np.asarray(log_norm_ratio, dtype=np.float64)))


def proxy_loss(l_text: float, l_mm: float | None, mm_weight: float) -> float:
    """L_proxy: the per-modality means combined with weight w (L_text alone without image-text data,
    l_mm None). A non-finite measured loss gives a non-finite L_proxy (never L_text alone)."""
    if l_mm is None:
        return float(l_text)
    return (1.0 - mm_weight) * float(l_text) + mm_weight * float(l_mm)


def infeasible_reason(l_text: float, l_mm: float | None, log_norm_ratio: np.ndarray) -> str | None:
    """Why a candidate's scores make it infeasible ("l_mm is nan", "g is -inf", ...), None when they are finite."""
    g = norm_term(log_norm_ratio)
    for name, value in (("l_text", l_text), ("l_mm", l_mm), ("g", g)):
        if value is not None and not math.isfinite(float(value)):
            return f"{name} is {float(value)}"
    return None


def fitness(l_proxy: float, log_norm_ratio: np.ndarray, eta: float, scale: float = 1.0) -> float:
    """Higher is better; eta = 0 is the 'Auto w/o Gen' ablation. -inf (the worst) when L_proxy or G
    is not finite: an infeasible candidate never beats a feasible one."""
    g = norm_term(log_norm_ratio)
    if not (math.isfinite(float(l_proxy)) and math.isfinite(g)):
        return -math.inf
    return -float(l_proxy) - float(eta) * float(scale) * g


def srm_scale(losses: np.ndarray, g_terms: np.ndarray) -> float:
    """s = sd(L) / sd(G) over a generation's candidates whose L and G are finite (infeasible ones are
    left out): eta * s * G then has eta times L's spread. 1.0 when either spread is zero (a single
    candidate, or identical ones). A FitnessError when non-finite scores leave fewer than 2 candidates."""
    loss, g = np.asarray(losses, dtype=np.float64), np.asarray(g_terms, dtype=np.float64)
    finite = np.isfinite(loss) & np.isfinite(g)
    if not finite.all() and finite.sum() < 2:
        raise FitnessError(f"cannot fix the SRM scale: only {int(finite.sum())} of {finite.size} candidates have a "
                           "finite loss and norm term (set search.srm_scale, or check the evaluator's scores)")
    sl, sg = float(np.std(loss[finite])), float(np.std(g[finite]))
    if not (math.isfinite(sl) and math.isfinite(sg)) or sl <= 0.0 or sg <= 0.0:
        return 1.0
    return sl / sg


def pair_agreement(score: np.ndarray, key: np.ndarray) -> float:
    """The share of candidate pairs that `key` orders as `score` does (both higher-is-better): over the pairs
    whose scores differ, 1 for the same order, 1/2 for a tie in `key`, 0 for the opposite order. NaN when no
    two scores differ. 1 means `key` alone gives F's ranking; 1/2, that it says nothing about it."""
    score, key = np.asarray(score, dtype=np.float64), np.asarray(key, dtype=np.float64)
    ds = np.sign(score[:, None] - score[None, :])
    dk = np.sign(key[:, None] - key[None, :])
    pairs = np.triu(ds != 0, k=1)
    if not pairs.any():
        return math.nan
    agree = np.where(dk == ds, 1.0, np.where(dk == 0, 0.5, 0.0))
    return float(agree[pairs].mean())


def ranking_terms(l_proxy: np.ndarray, g: np.ndarray, eta: float, scale: float) -> dict:
    """What ranked a set of candidates by F = -L - eta*s*G (finite ones): the spread (max - min) of L and of
    eta*s*G, and the share of pairs that -L alone and -G alone order as F does (`pair_agreement`)."""
    loss, g = np.asarray(l_proxy, dtype=np.float64), np.asarray(g, dtype=np.float64)
    ok = np.isfinite(loss) & np.isfinite(g)
    loss, g = loss[ok], g[ok]
    srm = float(eta) * float(scale) * g
    f = -loss - srm
    spread = (lambda x: float(x.max() - x.min()) if x.size else math.nan)
    return {"candidates": int(ok.sum()), "l_spread": spread(loss), "srm_spread": spread(srm),
            "by_l": pair_agreement(f, -loss), "by_g": pair_agreement(f, -g)}
