"""What the search drives: the evaluation protocol (a synthetic function in tests, Ray actors in production)
and the one candidate result it returns (`Evaluation`). The search never holds a model."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from .fitness import norm_term

#: all proxy data; the screening slice (multi-fidelity selection); the larger stage slice that the survivors of the
#: screening are ranked on (multi-step selection, search.survivors); all proxy data, the candidate pruned as the final
#: model is (sequentially from the dense model, whatever the search mode: the re-rank, search.rerank)
FIDELITIES = ("full", "screen", "stage", "export")


@dataclass
class Evaluation:
    """One candidate's result, in the one shape it travels in: measured by the scorer
    (prune_engine/scoring.py), stamped by the evaluator actor with where it ran, carried as is by Ray
    to the evaluator pool, its progress subscribers and the driver (which ranks by the scores)."""

    l_text: float  # mean token loss (cross-entropy or KL to dense) on the text proxy tokens (all of it for text-only;
    # NaN: no text batch was scored, e.g. an image-text-only re-score)
    log_norm_ratio: np.ndarray  # shape (K,), float64: log(||W_hat_k||_F / ||W_k||_F) per decoder block
    seconds: float = 0.0  # evaluator-reported wall time for this candidate
    l_mm: float | None = None  # the same on the answer tokens of the image-text proxy samples (None: none)
    mean_sparsity: float = math.nan  # the parameter-weighted sparsity the pruning achieved
    blocks_run: int = 0  # decoder blocks actually pruned or run (prefix reuse skips the rest)
    fidelity: str = "full"  # "full", "screen", "stage" or "export" (FIDELITIES)
    # where it ran, set by an evaluator actor (None where it was scored in process)
    cpu_seconds: float | None = None
    projector_version: int | None = None
    actor: int | None = None
    pid: int | None = None
    restarted: bool | None = None

    def __post_init__(self) -> None:
        self.log_norm_ratio = np.asarray(self.log_norm_ratio, dtype=np.float64)

    @property
    def g(self) -> float:
        """G, the SRM term: sum_k log(||W_hat_k|| / ||W_k||) (search/fitness.py)."""
        return norm_term(self.log_norm_ratio)


@dataclass
class ProjectorUpdate:
    """What one generation's search-space evolution did (NaN where an evaluator does not measure it)."""

    version: int  # projector version after the update
    loss_before: float = math.nan  # sum_m c_m L_m (answer-token cross-entropy), estimated on a draw by c_m, before
    loss_after: float = math.nan  # the same after the update
    change: float = math.nan  # ||W_p,new - W_p,old|| / ||W_p,old||
    steps: list = field(default_factory=list)  # per mini-batch step: the mean loss of its drawn candidates
    scale: float = 1.0  # fraction of the generation's update kept (the guard: 1, 1/2, 1/4, ... or 0 = dropped)
    # image-text samples held aside that loss_before / loss_after are measured on: 0 = none (nothing is
    # measured, the guard keeps every update); None = not reported (then NaN in both means none)
    held_aside: int | None = None


@runtime_checkable
class EvaluationProtocol(Protocol):
    param_counts: np.ndarray  # prunable params per policy entry (block or matrix granularity)
    identity: dict  # model identity, JSON-able (saved in checkpoints, checked on resume)

    def evaluate(self, ratios: list[np.ndarray], projector_version: int, fidelity: str = "full",
                 modalities: tuple[str, ...] = ("text", "mm")) -> list[Evaluation]:
        """Float sparsity per policy entry for each candidate; results in input order. With
        modalities ("mm",) only the image-text loss is needed (the driver knows the rest)."""
        ...

    def projector_step(self, ratios: list[np.ndarray], draws: list[list[int]], lr: float) -> ProjectorUpdate:
        """Search-space evolution: one mini-batch step per entry of ``draws``, each on the mean
        loss of the candidates it names (drawn by neighbour weight, so the expected update
        follows sum_m c_m grad L_m)."""
        ...

    def rescale_projector_update(self, scale: float) -> ProjectorUpdate:
        """Set the projector to W_start + scale (W_end - W_start) for the update of the last
        ``projector_step`` (scale 0 drops it) as a new version, measured like that step (same
        candidates, same held-aside samples; loss_before unchanged)."""
        ...

    def projector_state(self) -> bytes:
        """Projector + optimizer state, for checkpoints."""
        ...

    def load_projector_state(self, state: bytes, version: int) -> None:
        ...


# Optional attributes the driver reads: ``has_projector`` (default True; False for
# text-only evaluators, the projector step is then skipped), ``projector_version``
# (the version before any step, default 0) and ``text_independent_of_projector``
# (default False: after a projector step every candidate is re-scored on all modalities;
# True only where L_text and the norms cannot depend on the projector by construction,
# e.g. masks stitched from a level database built once from the dense model: the driver
# then re-scores known policies on their image-text samples only).


def has_projector(evaluator: object) -> bool:
    """Text-only evaluators set ``has_projector = False``; the driver then skips the step."""
    return bool(getattr(evaluator, "has_projector", True)) and hasattr(evaluator, "projector_step")


def text_independent_of_projector(evaluator: object) -> bool:
    """Whether the evaluator's L_text and log-norm ratios are the same under every projector version
    (default False: unknown, so the driver never reuses them across versions)."""
    return bool(getattr(evaluator, "text_independent_of_projector", False))
