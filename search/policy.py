"""The policy space (docs/method.md §2).

A policy is a plain numpy int array of LEVEL INDICES, one per policy entry (a
decoder block, or one of its 7 matrices q,k,v,o,gate,up,down at matrix
granularity). It is feasible when its parameter-weighted mean sparsity lies within
``target ± tolerance``.
"""
from __future__ import annotations

import numpy as np

from .config import ConfigError, SearchConfig

MATRICES_PER_BLOCK = 7  # q, k, v, o, gate, up, down
_EPS = 1e-9  # float slack on the tolerance band


def levels_of(config: SearchConfig) -> list[float]:
    """The sparsity levels of the policy space: target ± k·step for k = 0..span/step."""
    m = round(config.span / config.step)
    return [float(x) for x in np.round(config.target + config.step * np.arange(-m, m + 1), 12)]


class PolicySpace:
    def __init__(
        self,
        levels: np.ndarray,
        param_counts: np.ndarray,
        tolerance: float,
        target: float | None = None,
        entries_per_block: int = 1,
    ) -> None:
        self.levels = np.asarray(levels, dtype=np.float64)
        self.param_counts = np.asarray(param_counts, dtype=np.float64)
        self.n_levels = len(self.levels)
        self.size = len(self.param_counts)
        self.target = float(self.levels[self.n_levels // 2] if target is None else target)
        self.tolerance = float(tolerance)
        self.entries_per_block = int(entries_per_block)
        if self.n_levels == 0 or np.any(np.diff(self.levels) <= 0):
            raise ConfigError("levels must be a non-empty, strictly increasing list of ratios")
        if self.levels[0] < 0 or self.levels[-1] >= 1:
            raise ConfigError(f"levels must lie in [0, 1), got {self.levels[0]:.4g} .. {self.levels[-1]:.4g}")
        if self.size == 0 or np.any(self.param_counts <= 0) or not np.all(np.isfinite(self.param_counts)):
            raise ConfigError("param_counts must be a non-empty array of positive numbers")
        if self.size % self.entries_per_block:
            raise ConfigError(f"{self.size} policy entries do not split into blocks of {self.entries_per_block}")
        if self.tolerance < 0:
            raise ConfigError(f"tolerance must be >= 0, got {self.tolerance}")
        hits = np.flatnonzero(np.isclose(self.levels, self.target, rtol=0, atol=1e-9))
        if hits.size == 0:
            raise ConfigError(f"target {self.target} is not one of the levels {self.levels.tolist()}")
        self.target_level = int(hits[0])
        self.weights = self.param_counts / self.param_counts.sum()  # parameter share per entry
        self.band = (self.target - self.tolerance - _EPS, self.target + self.tolerance + _EPS)
        self.block_of_entry = np.arange(self.size) // self.entries_per_block
        self.n_blocks = self.size // self.entries_per_block

    @classmethod
    def from_config(cls, config: SearchConfig, param_counts: np.ndarray) -> "PolicySpace":
        per_block = MATRICES_PER_BLOCK if config.granularity == "matrix" else 1
        return cls(np.array(levels_of(config)), param_counts, config.tolerance, config.target, per_block)

    # ---- queries ------------------------------------------------------------
    def ratios(self, policy: np.ndarray) -> np.ndarray:
        return self.levels[np.asarray(policy)]

    def mean_sparsity(self, policy: np.ndarray) -> float:
        return float(self.weights @ self.ratios(policy))

    def in_range(self, policy: np.ndarray) -> bool:
        p = np.asarray(policy)
        return p.shape == (self.size,) and bool(np.all((p >= 0) & (p < self.n_levels)))

    def is_feasible(self, policy: np.ndarray) -> bool:
        lo, hi = self.band
        return self.in_range(policy) and lo <= self.mean_sparsity(policy) <= hi

    def uniform(self) -> np.ndarray:
        return np.full(self.size, self.target_level, dtype=np.int64)

    # ---- the size of the feasible space ---------------------------------------
    def enumerate_feasible(
        self,
        limit: int,
        rng: np.random.Generator | None = None,
        exclude: set[bytes] = frozenset(),
        max_nodes: int = 30_000,
    ) -> tuple[list[np.ndarray], bool]:
        """Up to ``limit`` feasible policies (not in ``exclude``, as ``tobytes()`` keys) by
        depth-first search over the entries, heaviest first, pruned by the reachable
        mean range. With ``rng`` the levels are tried in random order. Returns
        (policies, complete): complete is False when the node budget ran out first."""
        order = np.argsort(-self.param_counts, kind="stable")
        w = self.weights[order]
        lo_level, hi_level = self.levels[0], self.levels[-1]
        rest_min = np.append(np.cumsum((w * lo_level)[::-1])[::-1], 0.0)
        rest_max = np.append(np.cumsum((w * hi_level)[::-1])[::-1], 0.0)
        lo, hi = self.band
        found: list[np.ndarray] = []
        chosen = np.zeros(self.size, dtype=np.int64)
        nodes = 0

        def visit(i: int, partial: float) -> None:
            nonlocal nodes
            nodes += 1
            if i == self.size:
                policy = np.empty(self.size, dtype=np.int64)
                policy[order] = chosen
                if self.is_feasible(policy) and policy.tobytes() not in exclude:
                    found.append(policy)
                return
            for level in rng.permutation(self.n_levels) if rng is not None else range(self.n_levels):
                if len(found) >= limit or nodes >= max_nodes:
                    return
                s = partial + w[i] * self.levels[level]
                if s + rest_min[i + 1] <= hi and s + rest_max[i + 1] >= lo:
                    chosen[i] = level
                    visit(i + 1, s)

        visit(0, 0.0)
        return found, len(found) >= limit or nodes < max_nodes

    def check_population(self, population: int) -> None:
        """One-line ConfigError when fewer than ``population`` distinct policies are feasible."""
        found, complete = self.enumerate_feasible(population)
        if complete and len(found) < population:
            raise ConfigError(
                f"population {population} is larger than the feasible space: only {len(found)} "
                f"policies over {self.size} entries keep the mean sparsity within "
                f"{self.target:g} ± {self.tolerance:g}"
            )


def feasible_space(config: SearchConfig, param_counts: np.ndarray) -> PolicySpace:
    """The policy space of ``config`` over ``param_counts``, checked up front (before any
    model is loaded): one-line ConfigError when the levels or the population do not fit."""
    space = PolicySpace.from_config(config, param_counts)
    space.check_population(config.population)
    return space
