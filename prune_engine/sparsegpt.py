"""SparseGPT: one-shot pruning by approximate Optimal Brain Surgeon updates (Frantar & Alistarh, 2023).

For a linear layer with weight W (rows x cols) and calibration inputs X (cols x n), pruning
minimises the layer reconstruction error ||WX - ŴX||² row by row. With the Hessian
H = 2XXᵀ/n and U the upper Cholesky factor of H⁻¹, the columns are visited left to right:
column c's pruned entries are zeroed and the error they cause, err = (w - q) / U_cc, is
compensated on the columns not yet visited through W[:, c:] -= err · U[c, c:]. Masks are
chosen adaptively per block of 128 columns by the OBS saliency w² / U_cc² (unstructured) or
per group of M columns (N:M), and the updates to later blocks are applied lazily, once per
block.

All rows share U, so matrices that read the same input (q, k, v; gate, up) and several target
ratios of one matrix (the search's levels) are pruned together as one tall stack of rows:
one Hessian, one Cholesky and one column loop serve them all.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


class PruneConfigError(ValueError):
    """Invalid sparsity settings (one-line message)."""


@dataclass(frozen=True)
class Pattern:
    """A sparsity pattern: unstructured, or N:M (at most N non-zeros in every M consecutive inputs)."""

    n: int = 0
    m: int = 0

    @property
    def structured(self) -> bool:
        return self.m > 0

    @property
    def sparsity(self) -> float:
        return (self.m - self.n) / self.m

    def __str__(self) -> str:
        return f"{self.n}:{self.m}" if self.structured else "unstructured"

    @staticmethod
    def parse(spec: str | None) -> "Pattern":
        if spec in (None, "", "unstructured"):
            return Pattern()
        try:
            n, m = (int(part) for part in spec.split(":"))
        except ValueError:
            raise PruneConfigError(f"N:M pattern '{spec}' is malformed: expected two integers like 2:4") from None
        if not 0 < n < m:
            raise PruneConfigError(f"N:M pattern '{spec}' is invalid: need 0 < N < M")
        return Pattern(n, m)


def check_sparsity(ratio: float) -> float:
    if not 0.0 <= ratio < 1.0:
        raise PruneConfigError(f"sparsity {ratio} is outside [0, 1)")
    return float(ratio)


class Hessian:
    """Running H = 2·XXᵀ/n over the calibration tokens that reach a layer."""

    def __init__(self, columns: int, device: torch.device | str = "cpu"):
        self.xtx = torch.zeros(columns, columns, dtype=torch.float32, device=device)
        self.tokens = 0

    def add(self, x: torch.Tensor, token_mask: torch.Tensor | None = None) -> None:
        x = x[token_mask] if token_mask is not None else x.reshape(-1, x.shape[-1])
        x = x.float()
        self.xtx.addmm_(x.T, x)
        self.tokens += x.shape[0]

    def matrix(self) -> torch.Tensor:
        if self.tokens == 0:
            raise PruneConfigError("no calibration tokens reached this layer")
        return self.xtx * (2.0 / self.tokens)


@dataclass
class Pruned:
    weight: torch.Tensor  # pruned and OBS-updated weight, same shape/dtype as the input
    ratio: float  # fraction of weights set to zero
    sq_norm: float  # ||Ŵ||_F² (float64 accumulation)
    error: float  # OBS estimate of the added reconstruction loss, Σ err²/2


def _inverse_cholesky(H: torch.Tensor, percdamp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + λI)⁻¹, λ = percdamp·mean(diag H); ×10 damping on failure, up to 1."""
    eye = torch.eye(H.shape[0], device=H.device, dtype=H.dtype)
    diag_mean, damp = torch.mean(torch.diag(H)), percdamp
    while True:
        L, info = torch.linalg.cholesky_ex(H + damp * diag_mean * eye)
        if info.item() == 0:
            U, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(L), upper=True)
            if info.item() == 0:
                return U
        if damp >= 1.0:
            raise PruneConfigError(f"Hessian is not positive definite even with damping {damp:g}")
        damp = min(damp * 10, 1.0)


def sparsegpt(weights: list[torch.Tensor], H: torch.Tensor, ratios: list[list[float]] | None = None,
              pattern: Pattern = Pattern(), blocksize: int = 128, percdamp: float = 0.01) -> list[list[Pruned]]:
    """Prune every matrix in `weights` (all read the same input, Hessian `H`) at each of its ratios.

    Returns, for matrix i, one `Pruned` per entry of ratios[i] (one entry, the pattern's, for N:M).
    The column loop is many small operations: on a CPU, callers run this on one thread
    (`prune_engine.threads.one_cpu_thread`), where thread hand-offs would cost more than they save.
    """
    cols = H.shape[0]
    if pattern.structured:
        ratios = [[pattern.sparsity] for _ in weights]
        if cols % pattern.m:
            raise PruneConfigError(f"{pattern} needs the input size ({cols}) to be a multiple of {pattern.m}")
    if ratios is None or len(ratios) != len(weights):
        raise PruneConfigError("give one list of ratios per matrix")
    # Stack rows: segment = (matrix, ratio, row slice) pruned at one ratio.
    segments, stack, start = [], [], 0
    for i, W in enumerate(weights):
        if W.shape[1] != cols:
            raise PruneConfigError(f"matrix {i} has {W.shape[1]} inputs, the Hessian {cols}")
        for ratio in ratios[i]:
            segments.append((i, check_sparsity(ratio), slice(start, start + W.shape[0])))
            stack.append(W)
            start += W.shape[0]
    return _prune_stack(weights, H, segments, torch.cat([w.float() for w in stack]).to(H.device), pattern,
                        blocksize, percdamp)


def _prune_stack(weights, H, segments, W, pattern: Pattern, blocksize: int, percdamp: float) -> list[list[Pruned]]:
    H = H.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    cols = H.shape[0]
    U = _inverse_cholesky(H, percdamp)

    # Work on Wᵀ (cols x rows) so that a column of W is a contiguous vector.
    Wt = W.T.contiguous()
    del W
    losses = torch.zeros(Wt.shape[1], device=Wt.device)
    maskT = torch.zeros_like(Wt, dtype=torch.bool)
    # columns updated eagerly; the rest lazily by one matmul per sub-block (a whole number of N:M groups)
    inner = -(-32 // pattern.m) * pattern.m if pattern.structured else 32
    for i1 in range(0, cols, inner):
        i2 = min(i1 + inner, cols)
        if i1 % blocksize == 0 and not pattern.structured:
            _select_block_mask(Wt, U, maskT, segments, i1, min(i1 + blocksize, cols))
        W1, U1 = Wt[i1:i2], U[i1:i2, i1:i2]
        d = torch.diag(U1)
        Err1 = torch.empty_like(W1)
        for c in range(i2 - i1):
            if pattern.structured and c % pattern.m == 0:  # per row, prune the M−N least salient
                score = W1[c:c + pattern.m].square() / d[c:c + pattern.m, None].square()
                idx = torch.topk(score, pattern.m - pattern.n, dim=0, largest=False).indices
                maskT[i1 + c:i1 + c + pattern.m].scatter_(0, idx, True)
            err = Err1[c]
            torch.mul(W1[c], maskT[i1 + c], out=err).div_(d[c])
            W1[c + 1:].addr_(U1[c, c + 1:], err, alpha=-1.0)
        W1.masked_fill_(maskT[i1:i2], 0.0)
        losses += Err1.square().sum(0) / 2
        Wt[i2:].addmm_(U[i1:i2, i2:].T, Err1, alpha=-1.0)
    W = Wt.T

    results: list[list[Pruned]] = [[] for _ in weights]
    for i, ratio, rows in segments:
        Wi = W[rows]
        results[i].append(Pruned(weight=Wi.to(weights[i].dtype).to(weights[i].device).reshape(weights[i].shape),
                                 ratio=float((Wi == 0).sum()) / Wi.numel(),
                                 sq_norm=float(Wi.double().square().sum()), error=float(losses[rows].sum())))
    return results


def _select_block_mask(Wt, U, maskT, segments, j1: int, j2: int) -> None:
    """Unstructured mask for columns j1:j2: per matrix and ratio, the k least salient w²/U_cc².

    k is allocated so that every matrix ends with exactly round(ratio·rows·cols) zeros.
    """
    score = Wt[j1:j2].square() / torch.diag(U)[j1:j2, None].square()
    for _, ratio, rows in segments:
        n_rows = rows.stop - rows.start
        k = round(ratio * n_rows * j2) - round(ratio * n_rows * j1)
        if k > 0:
            seg = score[:, rows]
            idx = torch.topk(seg.flatten(), k, largest=False).indices
            seg_mask = torch.zeros(seg.numel(), dtype=torch.bool, device=seg.device)
            seg_mask[idx] = True
            maskT[j1:j2, rows] = seg_mask.view(seg.shape)
