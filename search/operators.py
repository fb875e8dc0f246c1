"""Genetic operators (docs/method.md §2, §4 steps 2-3): pure functions on level-index
policies, every random choice drawn from the explicit ``rng`` passed in."""
from __future__ import annotations

import numpy as np

from .config import ConfigError
from .policy import PolicySpace


def repair(policy: np.ndarray, space: PolicySpace, rng: np.random.Generator) -> np.ndarray | None:
    """Move single entries one level toward the tolerance band until the policy is
    feasible. A move that lands in the band is taken first, otherwise a random move
    that does not jump past it; None when no such move exists."""
    p = np.array(policy, dtype=np.int64)
    lo, hi = space.band
    for _ in range(p.size * space.n_levels + 1):  # each move closes the gap, so this bounds it
        mean = space.mean_sparsity(p)
        if lo <= mean <= hi:
            return p
        way = -1 if mean > hi else 1
        movable = np.flatnonzero(p > 0) if way < 0 else np.flatnonzero(p < space.n_levels - 1)
        new_mean = mean + space.weights[movable] * (space.levels[p[movable] + way] - space.levels[p[movable]])
        lands = movable[(new_mean >= lo) & (new_mean <= hi)]
        short = movable[new_mean > hi] if way < 0 else movable[new_mean < lo]
        pool = lands if lands.size else short
        if pool.size == 0:
            return None
        p[rng.choice(pool)] += way
    return p if space.is_feasible(p) else None


def random_feasible(space: PolicySpace, rng: np.random.Generator) -> np.ndarray | None:
    return repair(rng.integers(0, space.n_levels, size=space.size), space, rng)


def crossover(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Uniform crossover: each entry from either parent with probability 1/2."""
    return np.where(rng.random(len(a)) < 0.5, a, b)


def mutate(policy: np.ndarray, space: PolicySpace, rng: np.random.Generator, switches: tuple[int, int] = (1, 3)) -> np.ndarray:
    """Level-switch mutation, repeated ``switches`` (lo..hi, inclusive) times: raise one
    entry one level and lower another one level (the mean is unchanged when their
    parameter counts are equal; repair handles the rest)."""
    p = np.array(policy, dtype=np.int64)
    for _ in range(int(rng.integers(switches[0], switches[1] + 1))):
        up = np.flatnonzero(p < space.n_levels - 1)
        if up.size == 0:
            break
        i = rng.choice(up)
        down = np.flatnonzero(p > 0)
        down = down[down != i]
        if down.size == 0:
            break
        j = rng.choice(down)
        p[i] += 1
        p[j] -= 1
    return p


def select_elites(fitness: np.ndarray, k: int) -> np.ndarray:
    """Indices of the top-k by fitness (ties: lower index first; NaN ranks last)."""
    f = np.asarray(fitness, dtype=np.float64)
    f = np.where(np.isnan(f), -np.inf, f)
    return np.argsort(-f, kind="stable")[:k]


def _fill(pop: list[np.ndarray], n: int, space: PolicySpace, rng: np.random.Generator,
          strict: bool = True) -> list[np.ndarray]:
    """Top ``pop`` up to ``n`` distinct feasible policies: random + repair first; for small
    feasible spaces, enumeration (random level order, then the fixed order that
    ``check_population`` used, which is known to reach ``n`` policies in its budget).
    With ``strict=False`` fewer than ``n`` is no error (screening pools larger than the space)."""
    seen = {p.tobytes() for p in pop}
    for _ in range(10 * n + 10):
        if len(pop) >= n:
            return pop
        p = random_feasible(space, rng)
        if p is not None and p.tobytes() not in seen:
            seen.add(p.tobytes())
            pop.append(p)
    for order in (rng, None):
        if len(pop) < n:
            extra, _ = space.enumerate_feasible(n - len(pop), order, exclude=seen)
            seen.update(p.tobytes() for p in extra)
            pop.extend(extra)
    if len(pop) < n and strict:
        raise ConfigError(f"could not find {n} distinct feasible policies (the feasible space is too small)")
    return pop


def initial_population(space: PolicySpace, n: int, rng: np.random.Generator, init: str = "random",
                       switches: tuple[int, int] = (1, 3)) -> list[np.ndarray]:
    """The uniform policy first, then (init "random", the paper's) random feasible policies, or
    (init "uniform", EvoPress's start) level-switch mutations of the uniform policy; all distinct."""
    pop = [space.uniform()]
    if init == "uniform":
        seen = {pop[0].tobytes()}
        for _ in range(20 * n):
            if len(pop) >= n:
                break
            child = repair(mutate(space.uniform(), space, rng, switches), space, rng)
            if child is not None and child.tobytes() not in seen:
                seen.add(child.tobytes())
                pop.append(child)
    return _fill(pop, n, space, rng)


def next_generation(
    elites: list[np.ndarray],
    space: PolicySpace,
    n: int,
    rng: np.random.Generator,
    switches: tuple[int, int] = (1, 3),
    strict: bool = True,
) -> list[np.ndarray]:
    """G_{t+1}: the elites, then children (uniform crossover of two elites, level-switch
    mutation, repair) with duplicates rejected, filled to ``n``."""
    pop = [np.array(e, dtype=np.int64) for e in elites]
    seen = {p.tobytes() for p in pop}
    for _ in range(10 * n):
        if len(pop) >= n:
            break
        i, j = rng.choice(len(elites), size=2, replace=False) if len(elites) > 1 else (0, 0)
        child = repair(mutate(crossover(pop[i], pop[j], rng), space, rng, switches), space, rng)
        if child is not None and child.tobytes() not in seen:
            seen.add(child.tobytes())
            pop.append(child)
    return _fill(pop, n, space, rng, strict)
