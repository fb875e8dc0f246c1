"""What the search drives: any object with this shape (a synthetic function in
tests, Ray actors in production). The search never holds a model."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass
class Evaluation:
    l_proxy: float  # mean token cross-entropy (or KL) of the pruned model on the proxy samples
    log_norm_ratio: np.ndarray  # shape (K,): log(||W_hat_k||_F / ||W_k||_F) per decoder block
    seconds: float = 0.0  # evaluator-reported wall time for this candidate


@runtime_checkable
class Evaluator(Protocol):
    param_counts: np.ndarray  # prunable params per policy entry (block or matrix granularity)
    identity: dict  # model identity, JSON-able (saved in checkpoints, checked on resume)

    def evaluate(self, ratios: list[np.ndarray], projector_version: int) -> list[Evaluation]:
        """Float sparsity per policy entry for each candidate; results in input order."""
        ...

    def projector_step(self, ratios: list[np.ndarray], weights: np.ndarray, steps: int, lr: float) -> int:
        """Search-space evolution: update the projector to minimise sum_m weights[m] * L_m;
        returns the new projector version."""
        ...

    def projector_state(self) -> bytes:
        """Projector + optimizer state, for checkpoints."""
        ...

    def load_projector_state(self, state: bytes, version: int) -> None:
        ...


# Optional attributes the driver reads: ``has_projector`` (default True; False for
# text-only evaluators, the projector step is then skipped) and ``projector_version``
# (the version before any step, default 0).


def has_projector(evaluator: object) -> bool:
    """Text-only evaluators set ``has_projector = False``; the driver then skips the step."""
    return bool(getattr(evaluator, "has_projector", True)) and hasattr(evaluator, "projector_step")
