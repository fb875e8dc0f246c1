"""Item 5 (the Algorithm-1 loop) and acceptance (d): the ablation switches."""
from __future__ import annotations

import numpy as np
import pytest
from test_search_synthetic import SyntheticEvaluator

from search import (CandidateEvaluated, ConfigError, Evaluation, GenerationFinished, GenerationStarted,
                    SearchConfig, SearchDriver, SearchFinished, neighbour_weights)


def _run(tmp_path, ev=None, **kw):
    kw = dict(dict(population=8, elites=2, generations=4, seed=1), **kw)
    events = []
    ev = ev or SyntheticEvaluator(n_blocks=6)
    result = SearchDriver(SearchConfig(**kw), ev, str(tmp_path / "run"), on_event=events.append).run()
    return result, ev, events, result.history.to_pydict()


def test_event_stream_and_history_rows(tmp_path):
    result, ev, events, h = _run(tmp_path)
    kinds = [type(e).__name__ for e in events]
    one = ["GenerationStarted"] + ["CandidateEvaluated"] * 8 + ["GenerationFinished"]
    assert kinds == one * 4 + ["SearchFinished"]
    assert [e.generation for e in events if isinstance(e, GenerationStarted)] == [0, 1, 2, 3]
    assert h["generation"] == [g for g in range(4) for _ in range(8)] and h["candidate"] == list(range(8)) * 4
    assert h["policy"][0] == [2] * 6  # the uniform policy opens generation 0
    cand = [e for e in events if isinstance(e, CandidateEvaluated)]
    assert [e.fitness for e in cand] == h["fitness"] and [e.cached for e in cand] == h["cached"]
    fin = [e for e in events if isinstance(e, GenerationFinished)]
    for e in fin:
        rows = [f for g, f in zip(h["generation"], h["fitness"]) if g == e.generation]
        assert e.best_fitness == max(rows)
    last = events[-1]
    assert isinstance(last, SearchFinished) and (last.generations, last.best_fitness, last.reason) == (4, result.fitness, "generations")
    assert np.array_equal(last.best_policy, result.policy) and np.array_equal(fin[-1].best_policy, result.policy)
    assert result.generations == 4 and result.stopped_by == "generations"
    assert np.allclose(result.ratios, 0.5 + 0.05 * (result.policy - 2))
    # every row is a feasible policy, and F = -L - eta * G with G the mean log-norm ratio
    for p, m, l, g, f, lnr in zip(h["policy"], h["mean_sparsity"], h["l_proxy"], h["g"], h["fitness"], h["log_norm_ratio"]):
        assert abs(m - 0.5) <= 0.01 + 1e-9 and g == np.mean(lnr) and f == -l - 0.5 * g


def test_eta_zero_is_auto_without_gen(tmp_path):
    _, _, _, h = _run(tmp_path, eta=0.0)
    assert h["fitness"] == [-x for x in h["l_proxy"]]
    assert any(g != 0 for g in h["g"])  # G is still measured and recorded


def test_projector_off_is_no_evo_and_memoises_elites(tmp_path):
    result, ev, _, h = _run(tmp_path, projector_mode="off")
    assert ev.steps == [] and set(h["projector_version"]) == {0} and result.projector_version == 0
    # the 2 elites of each generation come back from the memo instead of the evaluator
    assert h["cached"] == [False] * 8 + ([True] * 2 + [False] * 6) * 3
    assert len(ev.evaluated) == 8 + 6 * 3
    assert not any(n.startswith("projector-") for n in (p.name for p in (tmp_path / "run").iterdir()))


def test_weighted_projector_step_gets_neighbour_weights(tmp_path):
    _, ev, _, h = _run(tmp_path, projector_mode="weighted", projector_steps=3, projector_lr=0.01)
    assert len(ev.steps) == 4
    assert h["projector_version"] == [g for g in range(4) for _ in range(8)]
    assert not any(h["cached"])  # a new projector version means re-evaluation
    for t, (ratios, weights, steps, lr) in enumerate(ev.steps):
        pol = np.array([p for g, p in zip(h["generation"], h["policy"]) if g == t])
        c = neighbour_weights(pol, 5, 1.0)
        assert np.array_equal(weights, c) and steps == 3 and lr == 0.01
        assert np.array_equal(np.array(ratios), 0.5 + 0.05 * (pol - 2))
        assert np.array_equal(c, [x for g, x in zip(h["generation"], h["c_m"]) if g == t])
    assert any(not np.allclose(w, w[0]) for _, w, _, _ in ev.steps)


def test_uniform_weights_is_evo_without_ub(tmp_path):
    _, ev, _, _ = _run(tmp_path, projector_mode="uniform")
    assert len(ev.steps) == 4
    assert all(np.array_equal(w, np.full(8, 1 / 8)) for _, w, _, _ in ev.steps)


def test_ablations_change_the_search(tmp_path):
    runs = {mode: _run(tmp_path / mode, projector_mode=mode, projector_lr=0.05)[3]["fitness"]
            for mode in ("weighted", "uniform", "off")}
    assert runs["weighted"] != runs["uniform"] != runs["off"]


def test_synthetic_evaluator_meets_the_protocol():
    from search import Evaluator

    assert isinstance(SyntheticEvaluator(), Evaluator)


def test_text_only_evaluator_skips_the_projector_step(tmp_path):
    result, ev, _, h = _run(tmp_path, ev=SyntheticEvaluator(n_blocks=6, projector=False), projector_mode="weighted")
    assert ev.steps == [] and set(h["projector_version"]) == {0}
    assert sum(h["cached"]) == 2 * 3


def test_matrix_granularity(tmp_path):
    ev = SyntheticEvaluator(n_blocks=3, granularity="matrix")
    result, ev, _, h = _run(tmp_path, ev=ev, granularity="matrix")
    assert len(result.policy) == 21 and all(len(p) == 21 for p in h["policy"])
    assert all(len(x) == 3 for x in h["log_norm_ratio"])
    assert all(r.shape == (21,) for r in ev.evaluated)


def test_time_budget_stops_between_generations(tmp_path):
    ev = SyntheticEvaluator(n_blocks=6, sleep=0.02)  # ~0.16 s per generation
    result, _, events, h = _run(tmp_path, ev=ev, generations=50, time_budget_s=0.4)
    assert result.stopped_by == "time_budget" and result.generations < 50
    assert max(h["generation"]) == result.generations - 1
    elapsed = [e.elapsed_s for e in events if isinstance(e, GenerationFinished)]
    assert len(elapsed) == result.generations and elapsed[-1] >= 0.4 and all(x < 0.4 for x in elapsed[:-1])
    assert events[-1].reason == "time_budget"


def test_infeasible_population_is_refused_before_any_evaluation(tmp_path):
    ev = SyntheticEvaluator(n_blocks=1)  # one block: only the uniform policy is feasible
    with pytest.raises(ConfigError, match="larger than the feasible space"):
        SearchDriver(SearchConfig(population=4, elites=1), ev, str(tmp_path / "run"))
    assert ev.evaluated == [] and not (tmp_path / "run").exists()


def test_bad_evaluator_output_is_reported(tmp_path):
    class Broken(SyntheticEvaluator):
        def evaluate(self, ratios, projector_version):
            return [Evaluation(1.0, np.zeros(2)) for _ in ratios]

    with pytest.raises(RuntimeError, match=r"log_norm_ratio of shape \(2,\), expected \(6,\)"):
        _run(tmp_path, ev=Broken(n_blocks=6))


def test_same_seed_same_search(tmp_path):
    a = _run(tmp_path / "a")[3]
    b = _run(tmp_path / "b")[3]
    c = _run(tmp_path / "c", seed=2)[3]
    assert a == b and a["policy"] != c["policy"]
