"""OWL-style per-block sparsity ratios: a baseline for the searched policies (no search, no training).

OWL (Yin et al., "Outlier Weighed Layerwise Sparsity", 2024) gives blocks with more outlier
weights a lower sparsity. A weight's score is Wanda's |W_ij| · ||X_j||₂ (its magnitude times the
norm of its input feature over the calibration tokens); the block's outlier ratio D_k is the share
of its scores above M times the block's mean score. The ratios are then

    s_k = p0 − (d_k − mean_w(d)),   d_k = 2λ · (D_k − min D) / (max D − min D)

so they span 2λ, the block with the most outliers is the least sparse, and the parameter-weighted
mean is exactly p0. Activations come from the dense model (OWL's choice: the ratios are fixed before
any pruning); pruning with the policy is then ordinary layer-sequential SparseGPT.
"""
from __future__ import annotations

import numpy as np
import torch

from efficientllava.prune_engine.models.adapter import ModelAdapter


@torch.no_grad()
def outlier_ratios(adapter: ModelAdapter, batches: list[dict], m: float = 5.0) -> list[float]:
    """D_k per decoder block: share of the block's Wanda scores above m × their mean (dense model)."""
    inputs = [adapter.block_inputs(b) for b in batches]
    hidden = [x.hidden for x in inputs]
    ratios = []
    for b in range(adapter.num_blocks):
        with adapter.on_device(b):  # offloaded blocks: the scores read the weights on the device
            linears = adapter.linears(b)
            sq_norm = {n: torch.zeros(mod.in_features, dtype=torch.float64, device=adapter.device)
                       for n, mod in linears.items()}
            current = {"mask": None}

            def make_hook(name: str):
                def hook(_module, args):
                    x = args[0][current["mask"]]  # real tokens only, (tokens, in_features)
                    sq_norm[name] += x.double().square().sum(0)
                return hook

            handles = [mod.register_forward_pre_hook(make_hook(n)) for n, mod in linears.items()]
            try:
                outputs = []
                for h, x in zip(hidden, inputs):
                    current["mask"] = x.token_mask
                    outputs.append(adapter.run_block(b, h, x.kwargs))
            finally:
                for handle in handles:
                    handle.remove()
            scores = {n: mod.weight.detach().double().abs() * sq_norm[n].sqrt()[None, :] for n, mod in linears.items()}
            total = sum(float(s.sum()) for s in scores.values())
            count = sum(s.numel() for s in scores.values())
            threshold = m * total / count
            ratios.append(sum(int((s > threshold).sum()) for s in scores.values()) / count)
            hidden = outputs
    return ratios


def owl_policy(ratios: list[float], target: float, lam: float = 0.08,
               weights: list[float] | None = None) -> list[float]:
    """Per-block sparsity from outlier ratios: spread 2λ, most outliers -> least sparse, weighted mean = target."""
    d = np.asarray(ratios, dtype=np.float64)
    w = np.ones_like(d) if weights is None else np.asarray(weights, dtype=np.float64)
    spread = d.max() - d.min()
    if spread <= 0 or lam == 0:
        return [float(target)] * len(d)
    d = 2 * lam * (d - d.min()) / spread
    s = target - (d - np.sum(w * d) / np.sum(w))
    if s.min() < 0 or s.max() >= 1:
        raise ValueError(f"OWL ratios leave [0, 1) at target {target} with lambda {lam}: "
                         f"{s.min():.3f}..{s.max():.3f}; use a smaller lambda")
    return [float(v) for v in s]
