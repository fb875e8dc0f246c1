"""Item 5 (the Algorithm-1 loop) and acceptance (d): the ablation switches."""
from __future__ import annotations

import numpy as np
import pytest
from test_search_synthetic import SyntheticEvaluator

from efficientllava.search import (CandidateEvaluated, ConfigError, Evaluation, GenerationFinished, GenerationStarted,
                    ProjectorStepped, ProjectorUpdate, SearchConfig, SearchDriver, SearchFinished, effective_candidates,
                    feasible_space, neighbour_weights, srm_scale)
from efficientllava.search.fitness import FitnessError


def _run(tmp_path, ev=None, **kw):
    kw = dict(dict(population=8, elites=2, generations=4, seed=1), **kw)
    events = []
    ev = ev or SyntheticEvaluator(n_blocks=6)
    result = SearchDriver(SearchConfig(**kw), ev, str(tmp_path / "run"), on_event=events.append).run()
    return result, ev, events, result.history.to_pydict()


def test_event_stream_and_history_rows(tmp_path):
    result, ev, events, h = _run(tmp_path)
    kinds = [type(e).__name__ for e in events]
    one = ["GenerationStarted"] + ["CandidateEvaluated"] * 8 + ["ProjectorStepped", "GenerationFinished"]
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
    # every row is a feasible policy, and F = -L - eta * s * G with G the summed log-norm ratio and s
    # fixed from generation 0's spreads
    s = srm_scale([l for t, l in zip(h["generation"], h["l_proxy"]) if t == 0],
                  [g for t, g in zip(h["generation"], h["g"]) if t == 0])
    assert s != 1.0 and set(h["srm_scale"]) == {s}
    for p, m, l, g, f, lnr in zip(h["policy"], h["mean_sparsity"], h["l_proxy"], h["g"], h["fitness"], h["log_norm_ratio"]):
        assert abs(m - 0.5) <= 0.01 + 1e-9 and g == np.sum(lnr) and f == -l - 0.5 * s * g


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


def test_weighted_projector_steps_draw_by_neighbour_weight(tmp_path):
    _, ev, events, h = _run(tmp_path, projector_mode="weighted", projector_steps=3, projector_candidates=2,
                            projector_lr=0.01, projector_guard=False)
    assert len(ev.steps) == 4
    assert h["projector_version"] == [3 * g for g in range(4) for _ in range(8)]  # one version per mini-batch step
    assert not any(h["cached"])  # a new projector version means re-evaluation
    counts = np.zeros(8)
    for t, (ratios, draws, lr) in enumerate(ev.steps):
        pol = np.array([p for g, p in zip(h["generation"], h["policy"]) if g == t])
        c = neighbour_weights(pol, 5, 1.0)
        assert len(draws) == 3 and all(len(d) == 2 for d in draws) and lr == 0.01
        assert np.array_equal(np.array(ratios), 0.5 + 0.05 * (pol - 2))
        assert np.array_equal(c, [x for g, x in zip(h["generation"], h["c_m"]) if g == t])
        for d in draws:
            counts[d] += 1
    # the per-generation records: 1/sum c^2, sum c L before/after, projector change
    stepped = [e for e in events if isinstance(e, ProjectorStepped)]
    for t, e in enumerate(stepped):
        rows = [i for i, g in enumerate(h["generation"]) if g == t]
        c = np.array([h["c_m"][i] for i in rows])
        assert {h["effective_candidates"][i] for i in rows} == {effective_candidates(c)}
        assert {h["projector_loss_before"][i] for i in rows} == {e.loss_before}
        assert {h["projector_loss_after"][i] for i in rows} == {e.loss_after}
        assert {h["projector_change"][i] for i in rows} == {e.change} and e.change > 0


class QuadraticProjector(SyntheticEvaluator):
    """A one-number projector: every step moves it by `jump`; the held-aside loss is (x - best)^2."""

    def __init__(self, jump, best, **kw):
        super().__init__(n_blocks=6, **kw)
        self.x, self.jump, self.best = 0.0, jump, best

    def projector_step(self, ratios, draws, lr):
        self.start, before = self.x, (self.x - self.best) ** 2
        self.x += self.jump
        self.projector_version += len(draws)
        self.last_update = before
        return ProjectorUpdate(self.projector_version, before, (self.x - self.best) ** 2, abs(self.jump))

    def rescale_projector_update(self, scale):
        self.rescales.append(scale)
        self.x = self.start + scale * self.jump
        self.projector_version += 1
        return ProjectorUpdate(self.projector_version, self.last_update, (self.x - self.best) ** 2,
                               abs(scale * self.jump), scale=scale)

    def projector_state(self):
        return np.array([self.x]).tobytes()

    def load_projector_state(self, state, version):
        self.x, self.projector_version = float(np.frombuffer(state)[0]), version


@pytest.mark.parametrize("jump, best, scales, kept", [
    (0.1, 10.0, [], 1.0),  # a step that lowers the held-aside loss is kept whole
    (1.0, 0.3, [0.5], 0.5),  # it overshoots: half of it lowers the loss (0.04 < 0.09) and is kept
    (1.0, -1.0, [0.5, 0.25, 0.0], 0.0),  # no fraction helps: the update is dropped, the projector restored
])
def test_the_guard_keeps_a_projector_update_only_as_far_as_it_helps(tmp_path, jump, best, scales, kept):
    ev = QuadraticProjector(jump, best)
    _, ev, events, h = _run(tmp_path, ev=ev, generations=1, projector_steps=3)
    assert ev.rescales == scales
    step = [e for e in events if isinstance(e, ProjectorStepped)][0]
    assert step.scale == kept and set(h["projector_scale"]) == {kept}
    assert ev.x == kept * jump and step.projector_version == 3 + len(scales)
    assert step.loss_before == (0 - best) ** 2 and step.loss_after <= step.loss_before
    assert set(h["projector_loss_after"]) == {step.loss_after}


class HeldAside(QuadraticProjector):
    """The same projector, but the held-aside loss is `before` before any update and `after` after a kept
    fraction of it (0: dropped, the loss before again); `held` held-aside samples reported (None: not said)."""

    def __init__(self, before, after, held):
        super().__init__(1.0, 0.0)
        self.losses, self.held = (before, after), held

    def projector_step(self, ratios, draws, lr):
        u = super().projector_step(ratios, draws, lr)
        return ProjectorUpdate(u.version, self.losses[0], self.losses[1], u.change, held_aside=self.held)

    def rescale_projector_update(self, scale):
        u = super().rescale_projector_update(scale)
        return ProjectorUpdate(u.version, self.losses[0], self.losses[0] if scale == 0 else self.losses[1], u.change,
                               scale=scale, held_aside=self.held)


@pytest.mark.parametrize("before, after, held, scales, kept", [
    (1.0, float("nan"), None, [0.5, 0.25, 0.0], 0.0),  # a non-finite loss after the update never counts as lower
    (1.0, float("inf"), 16, [0.5, 0.25, 0.0], 0.0),
    (float("nan"), 0.5, 16, [0.0], 0.0),  # measured, broken before the update: no fraction can show it helps
    (float("nan"), float("nan"), 16, [0.0], 0.0),
    (float("nan"), float("nan"), 0, [], 1.0),  # nothing held aside (said so): every update is kept
    (float("nan"), float("nan"), None, [], 1.0),  # nothing measured (not said): every update is kept
])
def test_the_guard_never_keeps_an_update_on_a_non_finite_loss(tmp_path, before, after, held, scales, kept):
    ev = HeldAside(before, after, held)
    _, ev, events, h = _run(tmp_path, ev=ev, generations=1, projector_steps=3)
    step = [e for e in events if isinstance(e, ProjectorStepped)][0]
    assert ev.rescales == scales and step.scale == kept and set(h["projector_scale"]) == {kept}
    assert ev.x == kept * 1.0 and step.projector_version == 3 + len(scales)


def test_the_guard_can_be_turned_off_or_given_no_halvings(tmp_path):
    _, ev, _, h = _run(tmp_path / "off", ev=QuadraticProjector(1.0, -1.0), generations=1, projector_guard=False)
    assert ev.rescales == [] and ev.x == 1.0 and set(h["projector_scale"]) == {1.0}
    _, ev, _, h = _run(tmp_path / "none", ev=QuadraticProjector(1.0, 0.3), generations=1, projector_backtrack=0)
    assert ev.rescales == [0.0] and ev.x == 0.0 and set(h["projector_scale"]) == {0.0}


@pytest.mark.parametrize("jump, best, bound, scales, kept", [
    (0.1, 10.0, 0.25, [], 1.0),  # inside the trust region: untouched
    (1.0, 10.0, 0.25, [0.25], 0.25),  # outside: scaled to the bound, and the guard keeps what helps
    (1.0, 0.1, 0.5, [0.5, 0.25, 0.125], 0.125),  # the guard's halvings are of what the trust region kept
])
def test_the_trust_region_bounds_a_generations_projector_change(tmp_path, jump, best, bound, scales, kept):
    ev = QuadraticProjector(jump, best)
    _, ev, events, h = _run(tmp_path, ev=ev, generations=1, projector_steps=3, projector_max_change=bound)
    step = [e for e in events if isinstance(e, ProjectorStepped)][0]
    assert ev.rescales == scales and step.scale == kept and set(h["projector_scale"]) == {kept}
    assert ev.x == pytest.approx(kept * jump) and step.change <= bound
    assert step.loss_after <= step.loss_before


def test_neighbour_weights_spread_over_several_candidates(tmp_path):
    _, _, _, h = _run(tmp_path, population=16, elites=4)
    eff = sorted({(g, e) for g, e in zip(h["generation"], h["effective_candidates"])})
    assert all(2.0 < e <= 16 for _, e in eff), eff  # not one-hot (with T = 1 in level steps it was ~1.0)


def test_uniform_weights_is_evo_without_ub(tmp_path):
    _, ev, _, _ = _run(tmp_path, projector_mode="uniform", projector_steps=40, projector_candidates=1)
    draws = [m for _, ds, _ in ev.steps for d in ds for m in d]
    assert len(set(draws)) == 8  # every candidate is drawn with the same probability


def test_ablations_change_the_search(tmp_path):
    # the synthetic step raises its held-aside loss: without projector_guard=False the guard drops it
    runs = {mode: _run(tmp_path / mode, projector_mode=mode, projector_lr=0.05, projector_guard=False)[3]["fitness"]
            for mode in ("weighted", "uniform", "off")}
    assert runs["weighted"] != runs["uniform"] != runs["off"]


def test_synthetic_evaluator_meets_the_protocol():
    from efficientllava.search import EvaluationProtocol as Evaluator

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
        def evaluate(self, ratios, projector_version, fidelity="full", modalities=("text", "mm")):
            return [Evaluation(1.0, np.zeros(2)) for _ in ratios]

    with pytest.raises(RuntimeError, match=r"log_norm_ratio of shape \(2,\), expected \(6,\)"):
        _run(tmp_path, ev=Broken(n_blocks=6))


def test_same_seed_same_search(tmp_path):
    a = _run(tmp_path / "a")[3]
    b = _run(tmp_path / "b")[3]
    c = _run(tmp_path / "c", seed=2)[3]
    assert a == b and a["policy"] != c["policy"]


def test_srm_scale_is_fixed_once_and_eta_changes_the_choice(tmp_path):
    """G on L's scale: with eta = 0 and eta = 2 the search ends at different policies."""
    chosen = {}
    for eta in (0.0, 2.0):
        result, _, _, h = _run(tmp_path / f"eta{eta}", eta=eta, population=12, elites=3, generations=6)
        assert len(set(h["srm_scale"])) == 1
        chosen[eta] = result.policy.tolist()
    assert chosen[0.0] != chosen[2.0]


def test_fixed_srm_scale_is_used_as_given(tmp_path):
    _, _, _, h = _run(tmp_path, srm_scale=3.0)
    assert set(h["srm_scale"]) == {3.0}
    assert all(f == -l - 0.5 * 3.0 * g for l, g, f in zip(h["l_proxy"], h["g"], h["fitness"]))


def test_fitness_weights_the_modalities(tmp_path):
    ev = SyntheticEvaluator(n_blocks=6, mm=True)
    _, _, _, h = _run(tmp_path, ev=ev, mm_weight=0.25)
    for lt, lm, l in zip(h["l_text"], h["l_mm"], h["l_proxy"]):
        assert lm is not None and l == pytest.approx(0.75 * lt + 0.25 * lm, abs=1e-15)
    text_only = _run(tmp_path / "text", ev=SyntheticEvaluator(n_blocks=6))[3]
    assert set(text_only["l_mm"]) == {None} and text_only["l_proxy"] == text_only["l_text"]


def test_multi_fidelity_screens_children_and_keeps_the_best(tmp_path):
    ev = SyntheticEvaluator(n_blocks=8, screen_noise=0.001)
    result, ev, events, h = _run(tmp_path, ev=ev, population=6, elites=2, offspring=20, generations=3)
    screen = [i for i, f in enumerate(h["fidelity"]) if f == "screen"]
    # the children drawn after generation t are screened at the start of t+1: none after the last one
    assert len(screen) == 20 * 2 and ev.fidelities.count("screen") == len(screen)
    fins = [e for e in events if isinstance(e, GenerationFinished)]
    assert [e.screened for e in fins] == [0, 20, 20]
    for t in (1, 2):  # generation t = the elites of t-1 + the best children screened at the start of t
        rows = [i for i in screen if h["generation"][i] == t]
        best = sorted(rows, key=lambda i: -h["fitness"][i])[:4]
        nxt = [p for g, p, f in zip(h["generation"], h["policy"], h["fidelity"]) if g == t and f == "full"]
        assert sorted(map(tuple, nxt[2:])) == sorted(tuple(h["policy"][i]) for i in best)
        assert all(h["c_m"][i] is None for i in rows)


def test_multi_step_selection_ranks_the_screenings_survivors_on_the_stage(tmp_path):
    """survivors: the best 8 of 20 screened children are scored again on the stage slice, and the best 4 of them
    by the stage's ranking (not the screening's) complete the population."""
    ev = SyntheticEvaluator(n_blocks=8, screen_noise=0.05, stage_noise=0.0005)
    result, ev, events, h = _run(tmp_path, ev=ev, population=6, elites=2, offspring=20, survivors=8, generations=3)
    assert ev.fidelities.count("screen") == 20 * 2 and ev.fidelities.count("stage") == 8 * 2
    fins = [e for e in events if isinstance(e, GenerationFinished)]
    assert [e.screened for e in fins] == [0, 20, 20]  # children screened; a survivor is not counted twice
    rows = lambda t, fid: [i for i, (g, f) in enumerate(zip(h["generation"], h["fidelity"])) if g == t and f == fid]
    differs = 0
    for t in (1, 2):
        screen, stage = rows(t, "screen"), rows(t, "stage")
        by_screen = sorted(screen, key=lambda i: -h["fitness"][i])
        # the survivors are the screening's best 8, recorded under the same candidate numbers
        assert sorted(h["candidate"][i] for i in stage) == sorted(h["candidate"][i] for i in by_screen[:8])
        assert all(h["policy"][i] == h["policy"][j] for i in stage for j in screen
                   if h["candidate"][i] == h["candidate"][j])
        best_stage = sorted(stage, key=lambda i: -h["fitness"][i])[:4]
        population = [p for g, p, f in zip(h["generation"], h["policy"], h["fidelity"]) if g == t and f == "full"]
        assert sorted(map(tuple, population[2:])) == sorted(tuple(h["policy"][i]) for i in best_stage)
        differs += {tuple(h["policy"][i]) for i in best_stage} != {tuple(h["policy"][i]) for i in by_screen[:4]}
    assert differs  # the stage changed the choice at least once (else this test could not tell the two apart)


def test_survivors_needs_screening_and_enough_of_them():
    with pytest.raises(ConfigError, match="needs offspring"):
        SearchConfig(population=6, elites=2, survivors=8)
    with pytest.raises(ConfigError, match="at least population - elites"):
        SearchConfig(population=6, elites=2, offspring=20, survivors=3)


def test_projector_update_is_recorded_nan_free_without_projector(tmp_path):
    _, _, _, h = _run(tmp_path, projector_mode="off")
    assert all(x != x for x in h["projector_change"])  # NaN: no update happened


def test_after_a_projector_step_known_policies_are_rescored_on_image_text_only(tmp_path):
    ev = SyntheticEvaluator(n_blocks=6, mm=True, text_independent=True)  # L_text and G ignore the projector
    _, ev, _, h = _run(tmp_path, ev=ev, population=8, elites=3)
    mm_only = [i for i, m in enumerate(ev.modalities) if m == ("mm",)]
    # the 3 elites of generations 1-3, and any child that repeats a policy scored in an earlier generation
    known = sum(len({tuple(p) for g, p in zip(h["generation"], h["policy"]) if g == t}
                    & {tuple(p) for g, p in zip(h["generation"], h["policy"]) if g < t}) for t in range(1, 4))
    assert known >= 3 * 3 and len(mm_only) == known
    for t in range(1, 4):  # their text loss and norms are the ones measured before, their L_mm is new
        for p, lt, lm in [(p, lt, lm) for g, p, lt, lm in zip(h["generation"], h["policy"], h["l_text"], h["l_mm"])
                          if g == t][:3]:
            earlier = [(lt0, lm0) for g, p0, lt0, lm0 in zip(h["generation"], h["policy"], h["l_text"], h["l_mm"])
                       if g < t and p0 == p]
            assert earlier and earlier[-1][0] == lt and earlier[-1][1] != lm


class BrokenImageText(SyntheticEvaluator):
    """L_mm is NaN (measured and broken) for the policies `broken(ratios)` picks, with the lowest L_text
    of all: a fitness that fell back to L_text would rank them first."""

    def __init__(self, broken, **kw):
        super().__init__(n_blocks=6, mm=True, **kw)
        self.broken = broken

    def evaluate(self, ratios, projector_version, fidelity="full", modalities=("text", "mm")):
        out = super().evaluate(ratios, projector_version, fidelity, modalities)
        for r, e in zip(ratios, out):
            if self.broken(self, np.asarray(r)):
                e.l_text, e.l_mm = 0.5, float("nan")
        return out


def _uniform(ev, r):
    return bool(np.all(r == r[0]))


def test_a_nan_image_text_loss_ranks_last_and_is_recorded_infeasible(tmp_path):
    result, ev, events, h = _run(tmp_path, ev=BrokenImageText(_uniform), population=8, elites=2)
    uniform = [2] * 6  # candidate 0 of generation 0
    rows = [i for i, p in enumerate(h["policy"]) if p == uniform]
    assert rows[0] == 0 and all(h["infeasible"][i] == "l_mm is nan" and h["fitness"][i] == -np.inf
                                and np.isnan(h["l_proxy"][i]) for i in rows)
    assert all(x is None for i, x in enumerate(h["infeasible"]) if i not in rows)  # None L_mm never counts
    assert min(h["fitness"][i] for i in range(8)) == h["fitness"][0]  # ranked last in generation 0
    gen1 = [p for g, p in zip(h["generation"], h["policy"]) if g == 1]
    assert uniform not in gen1[:2]  # never an elite
    fins = [e for e in events if isinstance(e, GenerationFinished)]
    assert all(e.best_policy.tolist() != uniform for e in fins) and result.policy.tolist() != uniform
    assert np.isfinite(result.fitness)
    # s from generation 0's finite rows (one NaN no longer switches the SRM term off)
    gen0 = [i for i in range(8) if i not in rows]
    s = srm_scale([h["l_proxy"][i] for i in gen0], [h["g"][i] for i in gen0])
    assert s != 1.0 and set(h["srm_scale"]) == {s}
    assert srm_scale(h["l_proxy"][:8], h["g"][:8]) == s


def test_a_text_only_model_is_feasible_with_no_image_text_loss(tmp_path):
    _, _, _, h = _run(tmp_path, ev=SyntheticEvaluator(n_blocks=6, projector=False))
    assert set(h["l_mm"]) == {None} and set(h["infeasible"]) == {None} and all(np.isfinite(h["fitness"]))


def test_too_few_finite_scores_in_generation_0_is_a_clear_error(tmp_path):
    ev = BrokenImageText(lambda ev, r: not _uniform(ev, r))  # only the uniform policy is healthy
    with pytest.raises(FitnessError, match=r"^generation 0: cannot fix the SRM scale: only 1 of 8 candidates have a "
                                           r"finite loss and norm term \(set search.srm_scale") as exc:
        _run(tmp_path, ev=ev)
    assert "\n" not in str(exc.value) and not (tmp_path / "run" / "state.json").exists()
    ev = BrokenImageText(lambda ev, r: not _uniform(ev, r))
    with pytest.raises(FitnessError, match=r"^the srm_sample policies: cannot fix the SRM scale: only 0 of 6"):
        _run(tmp_path / "sampled", ev=ev, init="uniform", srm_sample=6)


def test_the_result_is_never_infeasible_when_a_feasible_candidate_exists(tmp_path):
    """After the first projector step every candidate breaks: the result is generation 0's best."""
    ev = BrokenImageText(lambda ev, r: ev.projector_version > 0)
    result, _, _, h = _run(tmp_path, ev=ev, projector_guard=False)
    assert all(x == "l_mm is nan" for g, x in zip(h["generation"], h["infeasible"]) if g > 0)
    gen0 = [i for i, g in enumerate(h["generation"]) if g == 0]
    best = max(gen0, key=lambda i: h["fitness"][i])
    assert (result.policy.tolist(), result.fitness, result.l_proxy) == (h["policy"][best], h["fitness"][best],
                                                                      h["l_proxy"][best])
    assert np.isfinite(result.fitness) and result.generations == 4
    ev = BrokenImageText(lambda ev, r: True)  # nothing feasible at all (s given, so the search runs)
    with pytest.raises(FitnessError, match=r"^no feasible candidate in 4 generation\(s\): every one had a non-finite "
                                           r"score \(l_mm is nan; see the history's infeasible column\)$"):
        _run(tmp_path / "none", ev=ev, srm_scale=1.0)


class Snapshots(SyntheticEvaluator):
    """Keeps the projector of every version it evaluated under, to score a policy afresh later."""

    def evaluate(self, ratios, projector_version, fidelity="full", modalities=("text", "mm")):
        self.snapshots = getattr(self, "snapshots", {})
        self.snapshots[projector_version] = self.projector.copy()
        return super().evaluate(ratios, projector_version, fidelity, modalities)

    def fresh(self, policy_ratios, version):
        """Score one policy on all modalities under projector `version` (the evaluator's state restored)."""
        saved = self.projector, self.projector_version, len(self.modalities), len(self.evaluated)
        self.projector, self.projector_version = self.snapshots[version], version
        try:
            return super().evaluate([policy_ratios], version)[0]
        finally:
            self.projector, self.projector_version = saved[0], saved[1]
            del self.modalities[saved[2]:], self.evaluated[saved[3]:], self.fidelities[saved[3]:]


@pytest.mark.parametrize("text_independent", [False, True])
def test_memoised_scores_equal_fresh_scores_after_a_projector_step(tmp_path, text_independent):
    """An evaluator whose L_text depends on the projector (sequential pruning: the Hessians see the
    projector's image-text activations) is re-scored on every modality after each projector step; only
    one that says its text scores cannot depend on it (database mode) has known policies re-scored on
    their image-text samples. Either way every recorded score is what a fresh evaluation gives."""
    ev = Snapshots(n_blocks=6, mm=True, text_independent=text_independent)
    _, ev, _, h = _run(tmp_path, ev=ev, population=8, elites=3, projector_lr=1e-3, projector_guard=False)
    assert len(set(h["projector_version"])) == 4  # every generation under a new projector
    calls = {m: ev.modalities.count(m) for m in set(ev.modalities)}
    fresh_rows = sum(not c for c in h["cached"])
    if text_independent:  # the known elites of generations 1-3 (at least) from the text memo
        assert calls[("mm",)] >= 9 and calls[("text", "mm")] + calls[("mm",)] == fresh_rows
    else:
        assert calls == {("text", "mm"): fresh_rows}
    space = feasible_space(SearchConfig(), ev.param_counts)  # the ratios the driver sends
    for p, v, lt, lm, g in zip(h["policy"], h["projector_version"], h["l_text"], h["l_mm"], h["g"]):
        e = ev.fresh(space.ratios(np.array(p)), v)
        assert (lt, lm, g) == (e.l_text, e.l_mm, float(np.sum(e.log_norm_ratio)))
    if not text_independent:  # the projector does move L_text here: a memo would have been stale
        moved = {}
        for p, v, lt in zip(h["policy"], h["projector_version"], h["l_text"]):
            moved.setdefault(tuple(p), set()).add(lt)
        assert any(len(x) > 1 for x in moved.values())


def test_srm_scale_from_a_random_sample_when_the_start_is_around_uniform(tmp_path):
    """init "uniform" + srm_sample: s is measured on random feasible policies (rows with fidelity
    "scale", negative candidate numbers), not on generation 0's near-uniform candidates, and the
    search's own draws are the same as without the sample (it has a stream of its own)."""
    result, _, _, h = _run(tmp_path / "sampled", init="uniform", srm_sample=6)
    scale_rows = [i for i, f in enumerate(h["fidelity"]) if f == "scale"]
    assert len(scale_rows) == 6 and [h["candidate"][i] for i in scale_rows] == [-1, -2, -3, -4, -5, -6]
    assert all(h["generation"][i] == 0 for i in scale_rows)
    s = srm_scale([h["l_proxy"][i] for i in scale_rows], [h["g"][i] for i in scale_rows])
    assert set(h["srm_scale"]) == {s}
    gen0 = [i for i, (t, f) in enumerate(zip(h["generation"], h["fidelity"])) if t == 0 and f == "full"]
    s_gen0 = srm_scale([h["l_proxy"][i] for i in gen0], [h["g"][i] for i in gen0])
    assert s != s_gen0  # measured on the random sample, not on generation 0
    plain = _run(tmp_path / "plain", init="uniform", srm_scale=s)[3]
    assert [p for p, f in zip(h["policy"], h["fidelity"]) if f != "scale"] == plain["policy"]


def test_srm_rescale_measures_s_on_every_generations_population(tmp_path):
    """srm_rescale: each generation's rows carry s = sd(L) / sd(G) over that generation's population and F from
    it; generation 0's s is the fixed-scale run's; a run stopped after 2 generations and resumed to 4 equals
    the uninterrupted one."""
    result, _, _, h = _run(tmp_path / "rescaled", init="uniform", offspring=20, srm_rescale=True)
    fixed = _run(tmp_path / "fixed", init="uniform", offspring=20)[3]
    scales = []
    for t in range(4):
        rows = [i for i, (g, f) in enumerate(zip(h["generation"], h["fidelity"])) if g == t and f == "full"]
        s = srm_scale([h["l_proxy"][i] for i in rows], [h["g"][i] for i in rows])
        assert {h["srm_scale"][i] for i in rows} == {s}
        for i in rows:
            assert h["fitness"][i] == pytest.approx(-h["l_proxy"][i] - 0.5 * s * h["g"][i], rel=1e-12, abs=1e-12)
        scales.append(s)
    assert scales[0] == fixed["srm_scale"][0] and len(set(scales)) == 4  # measured again, and it moved
    first = _run(tmp_path / "stopped", init="uniform", offspring=20, srm_rescale=True, generations=2)[1]
    resumed = SearchDriver.resume(str(tmp_path / "stopped" / "run"), first,
                                  config=SearchConfig(population=8, elites=2, generations=4, seed=1, init="uniform",
                                                      offspring=20, srm_rescale=True)).run()
    assert resumed.history.drop(["seconds"]).equals(result.history.drop(["seconds"]))
    assert np.array_equal(resumed.policy, result.policy) and resumed.fitness == result.fitness


class _FakeTime:
    """A clock that only the evaluator advances: `cost` seconds per candidate and fidelity."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self):
        return self.now


def _timed_evaluator(clock, full_s, screen_s, stage_s=None, **kw):
    ev = SyntheticEvaluator(n_blocks=10, **kw)
    evaluate = ev.evaluate
    cost = {"full": full_s, "screen": screen_s, "stage": full_s if stage_s is None else stage_s}

    def timed(ratios, projector_version, fidelity="full", modalities=("text", "mm")):
        clock.now += len(ratios) * cost[fidelity]
        return evaluate(ratios, projector_version, fidelity, modalities)

    ev.evaluate = timed
    return ev


@pytest.mark.parametrize("budget, expected, limited_by", [
    (100.05, 407, "budget"),  # floor((100.05 - 6.6 - 2 * 6) / (2 * 0.1)) = 407
    (15.05, 24, "budget"),  # one more generation fits, not two: its screening gets the rest, floor(2.45 / 0.1)
    (10.0, 4, "population"),  # too small a budget: population - elites children, the floor
    (1e6, 500, "offspring"),  # the cap
])
def test_offspring_sized_to_the_time_budget_from_measured_costs(tmp_path, monkeypatch, budget, expected, limited_by):
    """offspring_budget: after generation 0 the driver measures a generation (6 candidates x 1 s, the projector step
    free) and a screened child (0.1 s), and draws as many children as let the search end within the budget."""
    import efficientllava.search.driver as driver_module

    clock = _FakeTime()
    monkeypatch.setattr(driver_module, "time", clock)
    ev = _timed_evaluator(clock, full_s=1.0, screen_s=0.1)
    result, _, events, h = _run(tmp_path, ev=ev, population=6, elites=2, generations=3, offspring=500,
                                offspring_budget=True, time_budget_s=budget)
    (sized,) = [e for e in events if isinstance(e, driver_module.OffspringSized)]
    assert (sized.generation, sized.children, sized.limited_by) == (0, expected, limited_by)
    assert sized.seconds_per_child == pytest.approx(0.1) and sized.seconds_per_generation == pytest.approx(6.0)
    screened = [sum(1 for g, f in zip(h["generation"], h["fidelity"]) if g == t and f == "screen")
                for t in range(1, result.generations)]
    assert screened == [expected] * (result.generations - 1)
    if limited_by == "population":  # a generation (6 s + 4 children) would end past the budget: none is started
        assert result.stopped_by == "time_budget" and result.generations == 1 and clock.now <= budget
    elif expected == 24:  # generation 1 (6 s + 24 children) ends within the budget, generation 2 would not
        assert result.stopped_by == "time_budget" and result.generations == 2 and clock.now <= budget
        assert sized.generations_left == 1
    else:
        assert result.stopped_by == "generations" and result.generations == 3 and sized.generations_left == 2
        assert limited_by == "offspring" or clock.now <= budget  # the whole search fitted
    # the decision is checkpointed: a resumed run keeps it
    resumed = SearchDriver.resume(str(tmp_path / "run"), _timed_evaluator(clock, 1.0, 0.1))
    assert resumed.offspring_sized == expected


def test_offspring_sized_to_the_time_budget_counts_the_stage_in_a_generation(tmp_path, monkeypatch):
    """With survivors, a generation costs its population (6 x 1 s) plus its 8 survivors on the stage slice
    (8 x 0.5 s); the children get what is left: floor((100.05 - 9.6 - 2 * 10) / (2 * 0.1)) = 352."""
    import efficientllava.search.driver as driver_module

    clock = _FakeTime()
    monkeypatch.setattr(driver_module, "time", clock)
    ev = _timed_evaluator(clock, full_s=1.0, screen_s=0.1, stage_s=0.5)
    result, _, events, h = _run(tmp_path, ev=ev, population=6, elites=2, generations=3, offspring=500,
                                survivors=8, offspring_budget=True, time_budget_s=100.05)
    (sized,) = [e for e in events if isinstance(e, driver_module.OffspringSized)]
    assert sized.seconds_per_generation == pytest.approx(10.0) and (sized.children, sized.limited_by) == (352, "budget")
    assert result.generations == 3 and clock.now <= 100.05
    assert [sum(1 for g, f in zip(h["generation"], h["fidelity"]) if g == t and f == "stage") for t in (1, 2)] == [8, 8]


def test_offspring_budget_without_a_time_budget_keeps_offspring(tmp_path):
    _, _, events, h = _run(tmp_path, population=6, elites=2, generations=2, offspring=20, offspring_budget=True)
    assert not [e for e in events if type(e).__name__ == "OffspringSized"]
    assert sum(1 for g, f in zip(h["generation"], h["fidelity"]) if g == 1 and f == "screen") == 20
