"""The re-rank (SearchConfig.rerank): the last generation's best policies and uniform, pruned as the final model is
(fidelity "export"), scored again; the best of them is the result, a broken one never."""
from __future__ import annotations

import math

import numpy as np
import pytest
from test_search_synthetic import SyntheticEvaluator

from efficientllava.search import ConfigError, Reranked, SearchConfig, SearchDriver, SearchFinished, srm_scale


def _run(tmp_path, ev, name="run", **kw):
    kw = dict(dict(population=8, elites=2, generations=3, seed=1, mm=None), **kw)
    kw.pop("mm")
    events = []
    result = SearchDriver(SearchConfig(**kw), ev, str(tmp_path / name), on_event=events.append).run()
    return result, events, result.history.to_pydict()


def _export_rows(h):
    return [i for i, f in enumerate(h["fidelity"]) if f == "export"]


def test_off_by_default_no_export_scores(tmp_path):
    assert SearchConfig().rerank == 0
    ev = SyntheticEvaluator(n_blocks=6, export=lambda r: 1.0)
    result, events, h = _run(tmp_path, ev)
    assert "export" not in ev.fidelities and not _export_rows(h)
    assert not any(isinstance(e, Reranked) for e in events)
    with pytest.raises(ConfigError, match="rerank"):
        SearchConfig(rerank=-1)


def test_the_best_of_the_pruned_candidates_is_the_result(tmp_path):
    # pruning as the final model costs more the sparser the last block: it reorders the candidates
    plain, _, _ = _run(tmp_path, SyntheticEvaluator(n_blocks=6), name="plain")
    ev = SyntheticEvaluator(n_blocks=6, export=lambda r: 5.0 * r[-1])
    result, events, h = _run(tmp_path, ev, rerank=3)
    assert not np.array_equal(result.policy, plain.policy)  # another of the population is exported
    rows = _export_rows(h)
    last = max(h["generation"])
    full = [i for i, (g, f) in enumerate(zip(h["generation"], h["fidelity"])) if g == last and f == "full"]
    best3 = sorted({tuple(h["policy"][i]) for i in full}, key=lambda p: -max(
        h["fitness"][i] for i in full if tuple(h["policy"][i]) == p))[:3]
    uniform = (2,) * 6
    assert [tuple(h["policy"][i]) for i in rows][:3] == best3
    assert len(rows) == 3 + (uniform not in best3) and tuple(h["policy"][rows[-1]]) in (*best3, uniform)
    assert all(h["generation"][i] == last and h["projector_version"][i] == result.projector_version for i in rows)
    if uniform not in best3:
        assert h["candidate"][rows[-1]] == -1
    # every export score is a fresh, all-modality evaluation under the final projector
    assert ev.fidelities.count("export") == len(rows)
    assert all(m == ("text", "mm") for m, f in zip(ev.modalities, ev.fidelities) if f == "export")
    # the run's fitness (same eta, same SRM scale) ranks them; the result is the best
    s = h["srm_scale"][0]
    for i in rows:
        assert h["srm_scale"][i] == s and h["fitness"][i] == -h["l_proxy"][i] - 0.5 * s * h["g"][i]
    b = max(rows, key=lambda i: h["fitness"][i])
    assert result.policy.tolist() == h["policy"][b] and result.fitness == h["fitness"][b]
    ev_r = next(e for e in events if isinstance(e, Reranked))
    assert ev_r.fitness == result.fitness and ev_r.candidates == len(rows) and ev_r.chosen == "population"
    assert ev_r.search_fitness == plain.fitness  # the search itself is the same as without the re-rank
    assert [type(e).__name__ for e in events][-2:] == ["Reranked", "SearchFinished"]
    assert isinstance(events[-1], SearchFinished) and events[-1].best_fitness == result.fitness


def test_uniform_wins_when_pruning_undoes_the_search(tmp_path):
    # the final prune costs every non-uniform policy more than the search gained: uniform is exported
    ev = SyntheticEvaluator(n_blocks=6, export=lambda r: 0.0 if np.allclose(r, r[0]) else 5.0)
    result, events, h = _run(tmp_path, ev, rerank=2)
    assert result.policy.tolist() == [2] * 6
    assert next(e for e in events if isinstance(e, Reranked)).chosen == "uniform"


def test_a_broken_prune_is_never_chosen(tmp_path):
    plain, _, _ = _run(tmp_path, SyntheticEvaluator(n_blocks=6), name="plain")
    best = plain.ratios.copy()
    ev = SyntheticEvaluator(n_blocks=6, export=lambda r: math.nan if np.allclose(r, best) else 0.0)
    result, events, h = _run(tmp_path, ev, rerank=3)
    assert not np.allclose(result.ratios, best) and math.isfinite(result.fitness)
    broken = [i for i in _export_rows(h) if np.allclose(0.5 + 0.05 * (np.array(h["policy"][i]) - 2), best)]
    assert broken and all(h["infeasible"][i] == "l_text is nan" for i in broken)
    # every prune broken: the search's own best stays
    ev = SyntheticEvaluator(n_blocks=6, export=lambda r: math.nan)
    result, events, h = _run(tmp_path, ev, name="all-broken", rerank=3)
    assert np.allclose(result.ratios, best) and result.fitness == plain.fitness
    r = next(e for e in events if isinstance(e, Reranked))
    assert r.chosen == "search" and r.fitness == -math.inf


def test_resume_does_not_rerank_twice_and_reranks_after_more_generations(tmp_path):
    def export(r):
        return 0.2 * float(np.cos(1e3 * r @ np.arange(1, r.size + 1)))

    ev = SyntheticEvaluator(n_blocks=6, export=export)
    first, _, h1 = _run(tmp_path, ev, rerank=2)
    n = len(ev.evaluated)
    again = SearchDriver.resume(str(tmp_path / "run"), ev).run()
    assert len(ev.evaluated) == n and np.array_equal(again.policy, first.policy) and again.fitness == first.fitness
    longer = SearchDriver.resume(str(tmp_path / "run"), ev, config=SearchConfig(
        population=8, elites=2, generations=4, seed=1, rerank=2)).run()
    h = longer.history.to_pydict()
    assert sorted({h["generation"][i] for i in _export_rows(h)}) == [2, 3]
    # the same as a run of 4 generations from the start
    straight, _, h4 = _run(tmp_path, SyntheticEvaluator(n_blocks=6, export=export), name="straight", generations=4,
                           rerank=2)
    assert np.array_equal(straight.policy, longer.policy) and straight.fitness == longer.fitness
