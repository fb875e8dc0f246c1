"""Progress events emitted by the driver, for a console (rich) or Ray metrics."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GenerationStarted:
    generation: int
    candidates: int
    projector_version: int


@dataclass(frozen=True)
class CandidateEvaluated:
    generation: int
    candidate: int
    policy: np.ndarray
    l_proxy: float
    g: float
    fitness: float
    cached: bool  # memo hit: same policy under the same projector version
    seconds: float
    fidelity: str = "full"  # "screen": a child scored on the screening slice of the proxy data; "stage": a
    # survivor of the screening scored on the stage slice (multi-step selection)


@dataclass(frozen=True)
class GenerationFinished:
    generation: int
    best_fitness: float  # best of this generation (never decreases with elitism and a fixed projector)
    best_policy: np.ndarray
    evaluated: int  # candidates actually sent to the evaluator (not memo hits)
    projector_version: int  # after this generation's projector step
    elapsed_s: float  # search wall time so far, across resumes
    screened: int = 0  # children scored on the screening slice (not memo hits)
    effective_candidates: float = 1.0  # 1 / sum c_m^2 of this generation's neighbour weights


@dataclass(frozen=True)
class ProjectorStepped:
    generation: int
    projector_version: int
    loss_before: float  # sum c_m L_m over the drawn candidates, before the update
    loss_after: float
    change: float  # ||delta W_p|| / ||W_p||
    scale: float = 1.0  # fraction of the update kept by the guard (0: dropped)


@dataclass(frozen=True)
class OffspringSized:
    """The children per generation chosen to fit the time budget (SearchConfig.offspring_budget)."""

    generation: int  # decided at the end of this generation (0)
    children: int  # per generation from now on
    seconds_per_child: float  # measured wall time of one screened child, all evaluators busy
    seconds_per_generation: float  # measured wall time of a generation without screening
    budget_left_s: float  # of time_budget_s, when the decision was made
    limited_by: str  # "budget", "offspring" (the cap) or "population" (the floor: the budget is too small)
    generations_left: int = 0  # generations after this one that fit the budget (fewer than planned: it stops then)


@dataclass(frozen=True)
class Reranked:
    """The re-rank (SearchConfig.rerank): the best policies of the last generation and the uniform policy, pruned
    as the final model is and scored again on all proxy data; the best of them is the result."""

    generation: int  # the generation whose population was re-ranked
    candidates: int  # policies pruned (the best `rerank` distinct ones, and uniform when it is not among them)
    chosen: str  # "search" (the search's own best), "population" (another of its population) or "uniform"
    search_fitness: float  # the search's best, as the search scored it
    fitness: float  # the chosen one, pruned as the final model is (-inf: every one broken, the search's best kept)
    uniform_fitness: float  # the uniform policy, pruned the same way


@dataclass(frozen=True)
class SearchFinished:
    generations: int
    best_fitness: float
    best_policy: np.ndarray
    reason: str  # "generations" or "time_budget"


Event = (GenerationStarted | CandidateEvaluated | ProjectorStepped | GenerationFinished | OffspringSized
         | Reranked | SearchFinished)
