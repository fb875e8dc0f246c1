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


@dataclass(frozen=True)
class GenerationFinished:
    generation: int
    best_fitness: float  # best of this generation (never decreases with elitism and a fixed projector)
    best_policy: np.ndarray
    evaluated: int  # candidates actually sent to the evaluator (not memo hits)
    projector_version: int  # after this generation's projector step
    elapsed_s: float  # search wall time so far, across resumes


@dataclass(frozen=True)
class SearchFinished:
    generations: int
    best_fitness: float
    best_policy: np.ndarray
    reason: str  # "generations" or "time_budget"


Event = GenerationStarted | CandidateEvaluated | GenerationFinished | SearchFinished
