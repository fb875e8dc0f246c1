"""Items 1-4: policy space, operators, fitness, neighbour weights. Acceptance (a):
property tests over random settings."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from efficientllava.search import (ConfigError, PolicySpace, SearchConfig, effective_candidates, fitness, neighbour_weights,
                    norm_term, proxy_loss, srm_scale)
from efficientllava.search.fitness import FitnessError, infeasible_reason
from efficientllava.search.operators import crossover, initial_population, mutate, next_generation, repair, select_elites


def _all_policies(space: PolicySpace) -> np.ndarray:
    return np.array(list(itertools.product(range(space.n_levels), repeat=space.size)), dtype=np.int64)


def _feasible_count(space: PolicySpace) -> int:
    means = space.levels[_all_policies(space)] @ space.weights
    return int(np.sum((means >= space.band[0]) & (means <= space.band[1])))


@st.composite
def search_settings(draw):
    granularity = draw(st.sampled_from(["block", "matrix"]))
    blocks = draw(st.integers(1, 9 if granularity == "block" else 3))
    size = blocks * (7 if granularity == "matrix" else 1)
    counts = draw(st.lists(st.integers(1, 10**6), min_size=size, max_size=size))
    step = draw(st.sampled_from([0.025, 0.05, 0.1]))
    population = draw(st.integers(2, 20))
    lo = draw(st.integers(0, 2))
    kw = dict(
        granularity=granularity, step=step, span=step * draw(st.sampled_from([0, 1, 1, 2, 2, 2, 3])),
        target=draw(st.sampled_from([0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.85, 0.9, 0.95])),
        tolerance=draw(st.sampled_from([0.0, 0.003, 0.01, 0.01, 0.02, 0.05])),
        population=population, elites=draw(st.integers(1, population - 1)),
        mutation_switches=(lo, lo + draw(st.integers(0, 2))), seed=draw(st.integers(0, 2**32 - 1)),
    )
    return kw, np.array(counts)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(search_settings())
def test_generated_policies_are_feasible_distinct_and_start_uniform(args):
    kw, counts = args
    try:
        cfg = SearchConfig(**kw)
    except ConfigError as e:  # only level sets outside [0, 1) are refused here
        assert "\n" not in str(e)
        assert kw["target"] - kw["span"] < -1e-12 or kw["target"] + kw["span"] >= 1 - 1e-12
        return
    space = PolicySpace.from_config(cfg, counts)
    assert np.all((space.levels >= 0) & (space.levels < 1)) and len(space.levels) == cfg.n_levels
    try:
        space.check_population(cfg.population)
    except ConfigError as e:  # refused only when the feasible space really is too small
        assert "\n" not in str(e) and "larger than the feasible space" in str(e)
        if space.n_levels ** space.size <= 20_000:
            assert _feasible_count(space) < cfg.population
        return
    rng = np.random.default_rng(cfg.seed)
    try:
        pop = initial_population(space, cfg.population, rng)
    except ConfigError as e:  # tiny feasible space the bounded enumeration could not size up front
        assert "\n" not in str(e) and "could not find" in str(e)
        if space.n_levels ** space.size <= 20_000:
            assert _feasible_count(space) < cfg.population
        return
    assert np.array_equal(pop[0], space.uniform())
    for generation in range(4):
        assert len(pop) == cfg.population
        assert len({p.tobytes() for p in pop}) == len(pop), "duplicates in a generation"
        for p in pop:
            assert p.dtype.kind == "i" and p.shape == (space.size,)
            assert p.min() >= 0 and p.max() < space.n_levels
            assert space.is_feasible(p)
            assert abs(space.mean_sparsity(p) - cfg.target) <= cfg.tolerance + 1e-9
        f = rng.normal(size=len(pop))
        elites = [pop[i] for i in select_elites(f, cfg.elites)]
        pop = next_generation(elites, space, cfg.population, rng, cfg.mutation_switches)
        assert all(np.array_equal(a, b) for a, b in zip(pop, elites)), "elites survive, in rank order"


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(1, 50), min_size=1, max_size=6), st.sampled_from([0.0, 0.01, 0.03]),
       st.integers(1, 40), st.integers(0, 1000))
def test_enumeration_matches_brute_force(counts, tolerance, limit, seed):
    space = PolicySpace([0.4, 0.45, 0.5, 0.55, 0.6], counts, tolerance)
    truth = {p.tobytes() for p in _all_policies(space) if space.is_feasible(p)}
    for rng in (None, np.random.default_rng(seed)):
        found, complete = space.enumerate_feasible(limit, rng)
        assert complete
        assert len(found) == min(limit, len(truth))
        assert {p.tobytes() for p in found} <= truth and len({p.tobytes() for p in found}) == len(found)


def test_policy_space_from_config():
    cfg = SearchConfig(granularity="matrix", tolerance=0.005)
    counts = np.tile([4, 1, 1, 4, 11, 11, 11], 3)
    space = PolicySpace.from_config(cfg, counts)
    assert np.allclose(space.levels, [0.4, 0.45, 0.5, 0.55, 0.6]) and space.target_level == 2
    assert space.n_blocks == 3 and space.block_of_entry.tolist() == [b for b in range(3) for _ in range(7)]
    u = space.uniform()
    assert u.tolist() == [2] * 21 and space.mean_sparsity(u) == pytest.approx(0.5) and space.is_feasible(u)
    p = u.copy()
    p[4] = 4  # one big gate matrix to 0.6: weighted mean 0.5 + 0.1 * 11/129, outside 0.5 ± 0.005
    assert space.ratios(p)[4] == pytest.approx(0.6)
    assert space.mean_sparsity(p) == pytest.approx(0.5 + 0.1 * 11 / 129)
    assert not space.is_feasible(p)
    q = p.copy()
    q[5] = 0  # and an equally big one to 0.4: back to 0.5
    assert space.is_feasible(q)
    assert not space.is_feasible(np.full(21, 5)) and not space.is_feasible(np.full(20, 2))


@pytest.mark.parametrize("kw, counts, words", [
    (dict(levels=[-0.1, 0.0, 0.1]), [1, 1], "[0, 1)"),
    (dict(levels=[0.5, 1.0]), [1, 1], "[0, 1)"),
    (dict(levels=[0.4, 0.5], target=0.45), [1, 1], "not one of the levels"),
    (dict(levels=[0.4, 0.5, 0.6], tolerance=-0.1), [1, 1], "tolerance"),
    (dict(levels=[0.4, 0.5, 0.6]), [1, 0], "param_counts"),
    (dict(levels=[0.4, 0.5, 0.6], entries_per_block=7), [1] * 8, "blocks of 7"),
])
def test_policy_space_errors(kw, counts, words):
    kw.setdefault("tolerance", 0.01)
    with pytest.raises(ConfigError) as info:
        PolicySpace(param_counts=counts, **kw)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_population_larger_than_feasible_space():
    space = PolicySpace.from_config(SearchConfig(), [1000])  # one block: only the uniform policy
    with pytest.raises(ConfigError, match=r"population 2 is larger than the feasible space: only 1"):
        space.check_population(2)
    two = PolicySpace.from_config(SearchConfig(tolerance=0.0), [5, 5])  # (2,2) (1,3) (3,1) (0,4) (4,0)
    two.check_population(5)
    with pytest.raises(ConfigError, match="only 5 policies"):
        two.check_population(6)


def test_operators():
    rng = np.random.default_rng(0)
    space = PolicySpace.from_config(SearchConfig(), np.ones(12))
    a, b = np.zeros(12, dtype=np.int64), np.full(12, 4)
    child = crossover(a, b, rng)
    assert set(child.tolist()) == {0, 4}  # every entry from one parent, both parents used
    m = mutate(space.uniform(), space, rng, (2, 2))
    assert np.abs(m - 2).sum() in (2, 4) and m.sum() == 24  # level switches keep the mean (equal counts)
    assert np.array_equal(mutate(m, space, rng, (0, 0)), m)
    fixed = repair(np.full(12, 4), space, rng)
    assert space.is_feasible(fixed) and fixed.max() <= 4
    # counts (2, 3), offsets (-1, +1): 1 above the band, yet every single move down overshoots it
    assert repair(np.array([1, 3]), PolicySpace.from_config(SearchConfig(tolerance=0.0), [2, 3]), rng) is None
    assert select_elites(np.array([0.1, np.nan, 0.3, 0.3, -1.0]), 3).tolist() == [2, 3, 0]


def test_operators_use_only_the_given_rng():
    space = PolicySpace.from_config(SearchConfig(), np.arange(1, 31) * 1000)
    runs = []
    for _ in range(2):
        rng = np.random.default_rng(42)
        np.random.seed(None)  # the global RNG must not matter
        pop = initial_population(space, 16, rng)
        runs.append(next_generation(pop[:4], space, 16, rng))
    assert all(np.array_equal(x, y) for x, y in zip(*runs))


def test_fitness_is_minus_loss_minus_eta_g():
    lnr = np.log([0.8, 0.9, 0.7])
    assert norm_term(lnr) == pytest.approx(np.sum(lnr))  # log of the product of norm ratios
    assert fitness(2.0, lnr, 0.5) == pytest.approx(-2.0 - 0.5 * np.sum(lnr))
    assert fitness(2.0, lnr, 0.5, scale=3.0) == pytest.approx(-2.0 - 1.5 * np.sum(lnr))
    assert fitness(2.0, lnr, 0.0) == -2.0  # 'Auto w/o Gen'
    assert fitness(2.0, np.log([0.7, 0.7, 0.7]), 0.5) > fitness(2.0, lnr, 0.5)  # smaller norms are better


def test_srm_scale_puts_g_on_the_loss_scale():
    losses, g = np.array([2.0, 2.2, 2.4]), np.array([-1.0, -1.01, -1.02])
    s = srm_scale(losses, g)
    assert s == pytest.approx(20.0) and np.std(s * g) == pytest.approx(np.std(losses))
    assert srm_scale(losses, np.zeros(3)) == 1.0 and srm_scale([2.0], [-1.0]) == 1.0


def test_proxy_loss_combines_the_modalities():
    assert proxy_loss(2.0, None, 0.5) == 2.0  # None: no image-text data (a text-only model)
    assert proxy_loss(2.0, 1.0, 0.25) == pytest.approx(1.75)
    assert np.isnan(proxy_loss(2.0, float("nan"), 0.5))  # NaN: measured and broken, never L_text alone


@pytest.mark.parametrize("l_text, l_mm, lnr, reason", [
    (2.0, float("nan"), [-0.1, -0.2], "l_mm is nan"),
    (float("inf"), 1.0, [-0.1, -0.2], "l_text is inf"),
    (2.0, None, [-0.1, float("-inf")], "g is -inf"),
    (2.0, 1.0, [np.nan, -0.2], "g is nan"),
])
def test_a_non_finite_score_makes_the_candidate_infeasible(l_text, l_mm, lnr, reason):
    loss = proxy_loss(l_text, l_mm, 0.5)
    assert infeasible_reason(l_text, l_mm, np.array(lnr)) == reason
    for eta in (0.0, 0.5):
        assert fitness(loss, np.array(lnr), eta, 2.0) == -np.inf
    healthy = fitness(2.5, np.array([-0.1, -0.2]), 0.5, 2.0)
    assert infeasible_reason(2.5, None, np.array([-0.1, -0.2])) is None and np.isfinite(healthy)
    # a broken candidate (L_text 2.0, L_mm NaN) ranks below a healthy one with a higher loss
    assert select_elites(np.array([fitness(loss, np.array(lnr), 0.5, 2.0), healthy]), 1).tolist() == [1]


def _pair_agreement_by_loops(score, key):
    """The reference: every pair by hand."""
    total = agree = 0.0
    for i in range(len(score)):
        for j in range(i + 1, len(score)):
            if score[i] == score[j]:
                continue
            total += 1
            same = (score[i] - score[j]) * (key[i] - key[j])
            agree += 1.0 if same > 0 else (0.5 if key[i] == key[j] else 0.0)
    return agree / total if total else float("nan")


@pytest.mark.parametrize("seed", range(5))
def test_pair_agreement_matches_a_loop_over_pairs(seed):
    from efficientllava.search.fitness import pair_agreement

    rng = np.random.default_rng(seed)
    score = rng.integers(0, 6, size=12).astype(float)  # ties in both
    key = rng.integers(0, 4, size=12).astype(float)
    assert pair_agreement(score, key) == pytest.approx(_pair_agreement_by_loops(score, key))
    assert pair_agreement(score, score) == 1.0 and pair_agreement(score, -score) == 0.0
    assert np.isnan(pair_agreement(np.ones(4), key[:4]))


def test_ranking_terms_say_which_term_orders_f():
    """With G's term spread far wider than L's, F's order is G's (the default's s measured around uniform);
    at eta 0 it is L's, by definition."""
    from efficientllava.search.fitness import fitness, ranking_terms

    loss = np.array([1.9, 1.7, 2.0, 1.8])
    g = np.array([-2.60, -2.56, -2.63, -2.50])
    terms = ranking_terms(loss, g, eta=0.5, scale=32.0)
    f = [fitness(l_, np.array([g_]), 0.5, 32.0) for l_, g_ in zip(loss, g)]
    assert terms["by_g"] == 1.0 and terms["by_l"] == pytest.approx(_pair_agreement_by_loops(f, -loss))
    assert terms["l_spread"] == pytest.approx(0.3) and terms["srm_spread"] == pytest.approx(0.5 * 32.0 * 0.13)
    assert ranking_terms(loss, g, eta=0.0, scale=32.0)["by_l"] == 1.0
    with_broken = ranking_terms(np.append(loss, np.nan), np.append(g, -9.0), eta=0.5, scale=32.0)
    assert with_broken == terms  # a non-finite candidate is left out


def test_select_elites_never_picks_an_infeasible_candidate_over_a_feasible_one():
    f = np.array([-np.inf, -50.0, np.nan, -np.inf, -60.0])
    assert select_elites(f, 2).tolist() == [1, 4]
    assert set(select_elites(f, 5)[:2].tolist()) == {1, 4}


def test_srm_scale_uses_the_finite_scores_only():
    losses, g = np.array([2.0, np.nan, 2.2, 2.4, 3.0]), np.array([-1.0, -1.5, -1.01, -1.02, -np.inf])
    assert srm_scale(losses, g) == srm_scale(losses[[0, 2, 3]], g[[0, 2, 3]]) == pytest.approx(20.0)
    with pytest.raises(FitnessError, match=r"^cannot fix the SRM scale: only 1 of 3 candidates have a finite") as exc:
        srm_scale([2.0, np.nan, 2.4], [-1.0, -1.0, np.inf])
    assert "\n" not in str(exc.value)
    assert issubclass(FitnessError, ValueError)


def test_neighbour_weights_by_hand():
    pol = np.array([[0, 0], [0, 1], [0, 3], [4, 4]])
    # squared level-step distances; k=1 nearest: 1, 1, 4, 17 (median - min = 1.5);
    # k=2: 1+9, 1+4, 4+9, 17+25 (median - min = 11.5 - 5 = 6.5)
    c = neighbour_weights(pol, k=1, temperature=1.0)
    e = np.exp(-np.array([1.0, 1.0, 4.0, 17.0]) / 1.5)
    assert np.allclose(c, e / e.sum())
    e2 = np.exp(-np.array([10.0, 5.0, 13.0, 42.0]) / (4.0 * 6.5))
    assert np.allclose(neighbour_weights(pol, k=2, temperature=4.0), e2 / e2.sum())
    assert effective_candidates(c) == pytest.approx(1 / np.sum(c**2)) and 1 < effective_candidates(c) < 4
    assert np.allclose(neighbour_weights(pol, k=5), neighbour_weights(pol, k=3))  # k capped at n-1
    assert neighbour_weights(pol[:1]).tolist() == [1.0]
    flat = neighbour_weights(pol, k=2, temperature=1e9)
    assert np.allclose(flat, 0.25)


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 20), st.integers(1, 12), st.integers(1, 6), st.floats(0.1, 10.0), st.integers(0, 10**6))
def test_neighbour_weights_properties(n, size, k, temperature, seed):
    rng = np.random.default_rng(seed)
    pol = rng.integers(0, 5, size=(n, size))
    c = neighbour_weights(pol, k, temperature)
    assert c.shape == (n,) and np.all(c >= 0) and c.sum() == pytest.approx(1.0)
    perm = rng.permutation(n)
    assert np.allclose(neighbour_weights(pol[perm], k, temperature), c[perm])  # equivariant
    d = np.array([np.sort([((p - q) ** 2).sum() for j, q in enumerate(pol) if j != i])[:k].sum()
                  for i, p in enumerate(pol)])
    assert np.all(np.diff(c[np.argsort(d, kind="stable")]) <= 1e-15)  # denser neighbourhood, larger weight


def test_initial_population_from_uniform_mutations():
    space = PolicySpace(np.linspace(0.4, 0.6, 5), np.full(12, 1000), tolerance=0.0, target=0.5)
    rng = np.random.default_rng(0)
    pop = initial_population(space, 10, rng, init="uniform", switches=(1, 3))
    assert np.array_equal(pop[0], space.uniform()) and len({p.tobytes() for p in pop}) == 10
    for p in pop[1:]:
        moved = np.abs(p - space.uniform()).sum()
        assert 2 <= moved <= 6 and space.is_feasible(p)  # 1-3 level switches, the budget kept exactly
        assert space.mean_sparsity(p) == pytest.approx(0.5, abs=1e-12)
    random = initial_population(space, 10, np.random.default_rng(0))
    assert max(np.abs(p - space.uniform()).sum() for p in random) > 6  # the paper's start is spread out


@pytest.mark.parametrize("span, step", [(0.1, 0.05), (0.2, 0.05), (0.2, 0.025)])
def test_matrix_level_operators_keep_a_real_models_budget_exact(span, step):
    """Per-matrix policies over SmolLM2-135M's 30 x 7 linears (q/o 576x576, k/v 576x192, gate/up/down 576x1536)
    at 0.7 with 5, 9 and 17 levels and no tolerance: every child the operators make (mutation, then repair) has
    mean sparsity 0.7 exactly (float slack only), and the generations stay distinct and full."""
    counts = np.tile([576 * 576, 576 * 192, 576 * 192, 576 * 576, 576 * 1536, 576 * 1536, 1536 * 576], 30)
    cfg = SearchConfig(target=0.7, span=span, step=step, tolerance=0.0, granularity="matrix", population=8, elites=3)
    space = PolicySpace.from_config(cfg, counts)
    assert space.n_levels == round(2 * span / step) + 1 and space.size == 210
    rng = np.random.default_rng(0)
    pop = initial_population(space, cfg.population, rng, "random", cfg.mutation_switches)
    reach = 0.0  # the farthest level from the target any child used
    for _ in range(20):
        children = next_generation(pop[:cfg.elites], space, 64, rng, cfg.mutation_switches, strict=False)
        assert len(children) == 64 and len({c.tobytes() for c in children}) == 64  # elites + 61 new children
        assert all(space.is_feasible(c) for c in children)
        assert max(abs(space.mean_sparsity(c) - 0.7) for c in children) < 1e-9
        reach = max(reach, max(float(np.abs(space.ratios(c) - 0.7).max()) for c in children))
        pop = children[:cfg.population]
    assert reach == pytest.approx(span)  # the whole level set is used, the widest levels included
