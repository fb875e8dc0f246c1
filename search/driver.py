"""The search loop (docs/method.md §4, Algorithm 1). Per generation t:

    evaluate G_t on the full proxy data (memoised by policy and projector version) -> fitness F
    select the top-k elites
    neighbour weights c_m over G_t -> projector step (mini-batch steps on candidates drawn by c_m,
                                                    or drawn uniformly, or none), kept only as far
                                                    as it lowers their loss on held-aside samples
    vary: G_{t+1} = elites + children; with `offspring`, many children are drawn now and screened
          on a slice of the proxy data under the new projector at the start of generation t+1, the
          best filling G_{t+1} (multi-fidelity; a run that stops after t never screens them); with
          `survivors`, the best screened children are ranked again on a larger slice first (multi-step)
    checkpoint (state after the variation step)

until tau generations are done or the wall-clock budget is spent. The result is the best
policy of the last evaluated generation; with `rerank`, the best of its `rerank` best policies and the
uniform policy once each is pruned as the final model is (sequentially, fidelity "export") and scored
again: the search ranks candidates as its evaluator scores them (database mode: stitched from blocks
pruned on dense inputs), the user gets the sequential prune, and the two can disagree. The SRM scale
s (F = -L - eta s G) is fixed from generation 0's spreads and checkpointed. The driver never holds a model.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import pyarrow as pa

from .checkpoint import HISTORY_SCHEMA, CheckpointError, RunStore, check_compatible, normalise
from .config import SearchConfig
from .protocol import Evaluation, EvaluationProtocol, ProjectorUpdate, has_projector, text_independent_of_projector
from .events import (CandidateEvaluated, Event, GenerationFinished, GenerationStarted, OffspringSized, ProjectorStepped,
                     Reranked, SearchFinished)
from .fitness import FitnessError, fitness, infeasible_reason, norm_term, proxy_loss, srm_scale
from .neighbours import effective_candidates, neighbour_weights
from .operators import initial_population, next_generation, select_elites
from .policy import feasible_space


@dataclass
class SearchResult:
    policy: np.ndarray  # level indices
    ratios: np.ndarray  # sparsity per policy entry
    fitness: float
    l_proxy: float
    g: float
    generations: int  # generations completed
    projector_version: int
    history: pa.Table
    stopped_by: str  # "generations" or "time_budget"


class SearchDriver:
    def __init__(
        self,
        config: SearchConfig,
        evaluator: EvaluationProtocol,
        run_dir: str,
        on_event: Callable[[Event], None] | None = None,
        app: dict | None = None,
    ) -> None:
        """app: the settings of the program that runs the search (JSON-able, never read here): saved in app.yaml
        when the run starts and in every checkpoint (the app slot), so the run directory alone rebuilds the run."""
        self.config = config
        self.evaluator = evaluator
        self.on_event = on_event
        self.app = app
        self.param_counts = np.asarray(evaluator.param_counts)
        self.space = feasible_space(config, self.param_counts)
        self.store = RunStore(run_dir)
        self.use_projector = config.projector_mode != "off" and has_projector(evaluator)
        # search state: everything a checkpoint holds
        self.generation = 0
        self.rng = np.random.default_rng(config.seed)
        self.population: list[np.ndarray] = []
        self.children: list[np.ndarray] = []  # drawn for the next generation, not screened yet (offspring > 0)
        self.offspring_sized: int | None = None  # children per generation chosen for the time budget (offspring_budget)
        # the generations that fit the time budget with them: (generation count, the budget it was decided for)
        self.generation_limit: tuple[int, float] | None = None
        self.projector_version = int(getattr(evaluator, "projector_version", 0))
        self.elapsed_s = 0.0
        self.srm_scale: float | None = config.srm_scale
        self.best: dict | None = None
        self.reranked: int | None = None  # the generation count when the re-rank (rerank) last ran
        self.rows: list[dict] = []  # the history, one row per candidate per generation
        self._memo: dict[tuple[bytes, int, str], Evaluation] = {}
        # text losses and norms, kept across projector versions where they cannot depend on the projector
        # (text_independent_of_projector): after a step a known policy is then re-scored on image-text only
        self._text_memo: dict[tuple[bytes, str], Evaluation] = {}
        self._config_record = config.to_dict()
        self._started = False

    # ---- resume -------------------------------------------------------------------
    @classmethod
    def resume(
        cls,
        run_dir: str,
        evaluator: EvaluationProtocol,
        on_event: Callable[[Event], None] | None = None,
        config: SearchConfig | None = None,
    ) -> "SearchDriver":
        """A driver positioned at the last checkpoint in ``run_dir``; call ``.run()``.
        ``config`` (optional) must match the saved one except ``resume_mutable`` fields."""
        store = RunStore(run_dir)
        state, history, projector = store.load()
        saved = state["config"]
        if config is None:
            config = SearchConfig.from_dict({k: v for k, v in saved.items() if k in SearchConfig.model_fields})
        elif diff := config.differences(saved):
            raise CheckpointError(f"checkpoint in {store.uri} was made with another search config (differs in: {', '.join(diff)})")
        check_compatible(state, evaluator.identity, normalise(np.asarray(evaluator.param_counts).tolist()), store.uri)
        driver = cls(config, evaluator, run_dir, on_event, app=state.get("app"))  # the app slot as first saved
        driver._config_record = saved | {k: config.to_dict()[k] for k in config.resume_mutable}
        driver.generation = state["generation"]
        driver.population = [np.array(p, dtype=np.int64) for p in state["population"]]
        driver.children = [np.array(p, dtype=np.int64) for p in state.get("children", [])]
        driver.offspring_sized = state.get("offspring_sized")
        limit = state.get("generation_limit")
        driver.generation_limit = tuple(limit) if limit is not None else None
        driver.rng.bit_generator.state = state["rng"]
        driver.projector_version = state["projector_version"]
        driver.elapsed_s = state["elapsed_s"]
        driver.srm_scale = state["srm_scale"]
        driver.best = state["best"]
        driver.reranked = state.get("reranked")
        driver.rows = history.to_pylist()
        if driver.use_projector:
            if projector is None:
                raise CheckpointError(f"checkpoint in {store.uri} has no projector state but the evaluator has a projector")
            evaluator.load_projector_state(projector, driver.projector_version)
        for r in driver.rows:  # memo: what was evaluated under the current projector version
            if not r["cached"] and r["projector_version"] == driver.projector_version:
                key = (np.array(r["policy"], dtype=np.int64).tobytes(), r["projector_version"], r["fidelity"])
                driver._memo[key] = Evaluation(r["l_text"], np.array(r["log_norm_ratio"]), r["seconds"], r["l_mm"])
        for r in driver.rows:
            key = (np.array(r["policy"], dtype=np.int64).tobytes(), r["fidelity"])
            driver._text_memo.setdefault(key, Evaluation(r["l_text"], np.array(r["log_norm_ratio"]), 0.0))
        driver._started = True
        return driver

    # ---- the loop -----------------------------------------------------------------
    def run(self) -> SearchResult:
        t0, base = time.monotonic(), self.elapsed_s
        clock = lambda: base + time.monotonic() - t0  # noqa: E731
        if not self._started and self.store.exists():
            raise CheckpointError(f"{self.store.uri} already holds a checkpoint: resume it or use another run directory")
        if not self._started:
            self.store.check_not_orphaned()  # files of a run whose state.json is lost: never overwrite them
        self.store.write_config(self._config_record, self.app)
        if not self._started:
            self.population = initial_population(self.space, self.config.population, self.rng, self.config.init,
                                                 self.config.mutation_switches)
            self._started = True
        while (reason := self._stop_reason(clock())) is None:
            self._generation(clock)
        if self.config.rerank and self.reranked != self.generation:
            self._rerank()
            self.elapsed_s = clock()
            self._checkpoint()
        result = self.result(reason)
        self._emit(SearchFinished(result.generations, result.fitness, result.policy, reason))
        return result

    def _stop_reason(self, elapsed: float) -> str | None:
        if self.generation >= self.config.generations:
            return "generations"
        budget = self.config.time_budget_s
        if budget is not None and self.generation > 0 and elapsed >= budget:
            return "time_budget"
        if self.generation_limit is not None and budget == self.generation_limit[1] \
                and self.generation >= self.generation_limit[0]:
            return "time_budget"  # measured (offspring_budget): the next generation would end past the budget
        return None

    def _generation(self, clock: Callable[[], float]) -> None:
        cfg, t, version = self.config, self.generation, self.projector_version
        size = len(self.population) + min(len(self.children), cfg.population - len(self.population))
        self._emit(GenerationStarted(t, size, version))
        screened = self._screen_children(t, version) if self.children else 0  # multi-fidelity: the best fill G_t
        pop = self.population
        started = clock()
        evals, cached = self._evaluate(pop, version, "full")
        losses = np.array([self._loss(e) for e in evals])
        if self.srm_scale is None:  # fixed once per run (the first measurement, with srm_rescale)
            self._fix_srm_scale(losses, evals, version)
        elif cfg.srm_rescale:  # measured again on this generation's population; kept when it cannot be
            try:
                self.srm_scale = self._measured_srm_scale(losses, evals, f"generation {t}")
            except FitnessError:
                pass
        f = np.array([fitness(l, e.log_norm_ratio, cfg.eta, self.srm_scale) for l, e in zip(losses, evals)])
        c = neighbour_weights(np.stack(pop), cfg.neighbours, cfg.temperature)
        first_row = len(self.rows)
        for m, (p, e) in enumerate(zip(pop, evals)):
            self._record(t, m, p, version, "full", e, losses[m], f[m], c[m], cached[m])
        b = int(select_elites(f, 1)[0])
        self.best = dict(generation=t, policy=pop[b].tolist(), fitness=float(f[b]), l_proxy=float(losses[b]),
                         g=norm_term(evals[b].log_norm_ratio))
        elites = [pop[i] for i in select_elites(f, cfg.elites)]
        update = ProjectorUpdate(version)
        if self.use_projector and np.isfinite(f).any():  # search-space evolution
            w = c if cfg.projector_mode == "weighted" else np.full(len(pop), 1.0 / len(pop))
            if not np.isfinite(f).all():  # an infeasible candidate never trains the projector
                w = np.where(np.isfinite(f), w, 0.0)
                w = w / w.sum() if w.sum() > 0 else np.isfinite(f) / np.isfinite(f).sum()
            draws = [self.rng.choice(len(pop), size=cfg.projector_candidates, p=w).tolist()
                     for _ in range(cfg.projector_steps)]
            update = self.evaluator.projector_step([self.space.ratios(p) for p in pop], draws, cfg.projector_lr)
            if cfg.projector_max_change is not None and update.change > cfg.projector_max_change:  # trust region
                update = self.evaluator.rescale_projector_update(cfg.projector_max_change / update.change)
            if cfg.projector_guard:
                update = self._guard(update)
            self.projector_version = int(update.version)
            self._emit(ProjectorStepped(t, self.projector_version, update.loss_before, update.loss_after, update.change,
                                        update.scale))
        for row in self.rows[first_row:]:
            row.update(effective_candidates=effective_candidates(c), projector_loss_before=update.loss_before,
                       projector_loss_after=update.loss_after, projector_change=update.change,
                       projector_scale=update.scale if self.use_projector else None)
        if cfg.offspring:  # multi-fidelity: many children, screened at the start of the next generation
            n = self._offspring_count(pop, self.projector_version, clock() - started, clock)
            pool = next_generation(elites, self.space, len(elites) + n, self.rng, cfg.mutation_switches,
                                   strict=False)  # a small feasible space may hold fewer children
            self.population, self.children = elites, pool[len(elites):]
        else:
            self.population = next_generation(elites, self.space, cfg.population, self.rng, cfg.mutation_switches)
        self.generation = t + 1
        self.elapsed_s = clock()
        self._checkpoint()
        self._emit(GenerationFinished(t, float(f[b]), pop[b], len(pop) - sum(cached), self.projector_version,
                                      self.elapsed_s, screened, effective_candidates(c)))

    def _screen_children(self, t: int, version: int) -> int:
        """Score the pending children on the screening slice (recorded in generation t) and complete the
        population (the elites) with the best of them; with `survivors`, the best `survivors` of them are
        scored on the stage slice first and the population is completed by that ranking. Returns how many
        were scored (not memo hits; a survivor scored at both stages counts once)."""
        cfg, children, needed = self.config, self.children, self.config.population - len(self.population)
        ranked = list(range(len(children)))
        scored = 0
        for fidelity, keep in (("screen", cfg.survivors), ("stage", needed)) if cfg.survivors else (("screen", needed),):
            if fidelity == "stage" and len(ranked) <= needed:
                break  # every survivor fills the population: a stage would not change the choice
            evals, cached = self._evaluate([children[j] for j in ranked], version, fidelity)
            loss = np.array([self._loss(e) for e in evals])
            f = np.array([fitness(l, e.log_norm_ratio, cfg.eta, self.srm_scale) for l, e in zip(loss, evals)])
            for i, (j, e) in enumerate(zip(ranked, evals)):
                self._record(t, cfg.population + j, children[j], version, fidelity, e, loss[i], f[i], math.nan,
                             cached[i])
            scored += (len(ranked) - sum(cached)) if fidelity == "screen" else 0
            ranked = [ranked[i] for i in select_elites(f, min(keep, len(ranked)))]
        self.population = self.population + [children[j] for j in ranked[:needed]]
        self.children = []
        return scored

    def _offspring_count(self, pop: list[np.ndarray], version: int, generation_s: float,
                         clock: Callable[[], float]) -> int:
        """Children to draw now: `offspring`, or with `offspring_budget` and a time budget as many as fit it,
        decided once at the end of generation 0 from two measurements made here: the generation's wall time
        without screening (`generation_s`), and the wall time of screening its policies (not recorded, no
        memo: the search's draws and history are the same as with that count fixed); with `survivors`, the
        stage's cost (its policies scored on the stage slice, times survivors / population) joins the
        generation's."""
        cfg = self.config
        if not (cfg.offspring_budget and cfg.time_budget_s is not None):
            return cfg.offspring
        if self.offspring_sized is not None:
            return self.offspring_sized
        t0 = clock()
        self.evaluator.evaluate([self.space.ratios(p) for p in pop], version, "screen")
        per_child = (clock() - t0) / len(pop)
        if cfg.survivors:  # the stage's survivors cost the same every generation: part of the generation's time
            t0 = clock()
            self.evaluator.evaluate([self.space.ratios(p) for p in pop], version, "stage")
            generation_s += cfg.survivors * (clock() - t0) / len(pop)
        screenings = max(cfg.generations - self.generation - 1, 0)  # children drawn after the last are never screened
        left = cfg.time_budget_s - clock()
        floor, cap = cfg.population - cfg.elites, cfg.offspring
        # the generations that fit even with the fewest children; the screening of those that do not is spent on
        # those that do (the search then stops at the budget, between generations)
        fitting = min(screenings, math.floor(left / (generation_s + floor * per_child))) if left > 0 else 0
        fit = math.floor((left - fitting * generation_s) / (fitting * per_child)) if fitting else floor
        n = min(max(fit, floor), cap)
        limited_by = "offspring" if fit >= cap else ("population" if fit <= floor else "budget")
        self.offspring_sized = n
        self.generation_limit = (self.generation + 1 + fitting, float(cfg.time_budget_s))
        self._emit(OffspringSized(self.generation, n, per_child, generation_s, left, limited_by, fitting))
        return n

    def _guard(self, update: ProjectorUpdate) -> ProjectorUpdate:
        """Keep the update only as far as it lowers the drawn candidates' answer loss on held-aside
        samples: halve it up to `projector_backtrack` times, else drop it (scale 0). A non-finite loss
        after the update never counts as lower; a non-finite loss before it (measured, so a drawn candidate
        is broken) cannot show any fraction helps: dropped at once. Only an evaluator that measures
        nothing (no held-aside samples: ``held_aside == 0``, or not reported and both losses NaN) keeps
        every update; the history then shows NaN losses with scale 1, never a dropped update."""
        if not self._guard_measures(update):
            return update
        if not math.isfinite(update.loss_before):
            return self.evaluator.rescale_projector_update(0.0)
        scale = update.scale  # 1, or what the trust region kept: the halvings are of that
        for _ in range(self.config.projector_backtrack):
            if self._lowers(update):
                return update
            scale /= 2
            update = self.evaluator.rescale_projector_update(scale)
        if self._lowers(update):
            return update
        return self.evaluator.rescale_projector_update(0.0)

    @staticmethod
    def _guard_measures(update: ProjectorUpdate) -> bool:
        """Whether the held-aside loss was measured at all (an evaluator without held-aside samples
        says ``held_aside=0``; one that does not say is taken to measure nothing when both are NaN)."""
        if update.held_aside is not None:
            return update.held_aside > 0
        return not (math.isnan(update.loss_before) and math.isnan(update.loss_after))

    @staticmethod
    def _lowers(update: ProjectorUpdate) -> bool:
        """The update lowered the held-aside loss (a non-finite loss never counts as lower)."""
        return math.isfinite(update.loss_after) and update.loss_after < update.loss_before

    def _fix_srm_scale(self, losses: np.ndarray, evals: list[Evaluation], version: int) -> None:
        """s = sd(L) / sd(G) over generation 0, or over `srm_sample` random feasible policies (recorded
        with fidelity "scale"): a first generation around the uniform policy has too little spread in G
        to put it on L's scale (s then comes out ~10x too large and G drowns L later on). Only candidates
        with a finite L and G count; a FitnessError when fewer than 2 of them are left."""
        cfg = self.config
        if not cfg.srm_sample:
            self.srm_scale = self._measured_srm_scale(losses, evals, f"generation {self.generation}")
            return
        rng = np.random.default_rng([cfg.seed, 0x5C41E])  # a stream of its own: the search's draws are unchanged
        sample = initial_population(self.space, cfg.srm_sample + 1, rng, "random")[1:]  # less the uniform policy
        s_evals, s_cached = self._evaluate(sample, version, "full")
        s_loss = np.array([self._loss(e) for e in s_evals])
        self.srm_scale = self._measured_srm_scale(s_loss, s_evals, "the srm_sample policies")
        for j, (p, e) in enumerate(zip(sample, s_evals)):
            f = fitness(s_loss[j], e.log_norm_ratio, cfg.eta, self.srm_scale)
            self._record(self.generation, -1 - j, p, version, "scale", e, s_loss[j], f, math.nan, s_cached[j])

    @staticmethod
    def _measured_srm_scale(losses: np.ndarray, evals: list[Evaluation], where: str) -> float:
        """srm_scale over the candidates of `where`, its error naming them."""
        try:
            return srm_scale(losses, [norm_term(e.log_norm_ratio) for e in evals])
        except FitnessError as exc:
            raise FitnessError(f"{where}: {exc}") from None

    def _rerank(self) -> None:
        """The best `rerank` distinct feasible policies of the last generation with a feasible one, and the uniform
        policy, pruned as the final model is (fidelity "export") under the current projector and scored on all
        proxy data with the run's fitness; the best becomes the result (ties: the search's order, its own best
        first). Recorded in the history as that generation's "export" rows (candidate -1: uniform, when the
        population did not hold it). A broken prune (a non-finite score) is never chosen; if every one is
        broken the search's own best stays."""
        cfg, version = self.config, self.projector_version
        search_best = self._last_feasible()
        last = search_best["generation"]
        rows = sorted((r for r in self.rows if r["fidelity"] == "full" and r["generation"] == last
                       and r["infeasible"] is None), key=lambda r: -r["fitness"])  # stable: the search's order
        picked, index, seen = [], [], set()
        for r in rows:
            key = np.array(r["policy"], dtype=np.int64).tobytes()
            if len(picked) == cfg.rerank:
                break
            if key not in seen:
                seen.add(key)
                picked.append(np.array(r["policy"], dtype=np.int64))
                index.append(int(r["candidate"]))
        uniform = self.space.uniform()
        u = next((i for i, p in enumerate(picked) if np.array_equal(p, uniform)), None)
        if u is None:
            picked.append(uniform)
            index.append(-1)
            u = len(picked) - 1
        evals, cached = self._evaluate(picked, version, "export")
        losses = np.array([self._loss(e) for e in evals])
        f = np.array([fitness(l, e.log_norm_ratio, cfg.eta, self.srm_scale) for l, e in zip(losses, evals)])
        for i, (p, e) in enumerate(zip(picked, evals)):
            self._record(last, index[i], p, version, "export", e, losses[i], f[i], math.nan, cached[i])
        b = int(np.argmax(f))  # the first of ties
        self.reranked = self.generation
        if not np.isfinite(f[b]):
            self._emit(Reranked(last, len(picked), "search", search_best["fitness"], -math.inf, float(f[u])))
            return
        chosen = "search" if b == 0 else ("uniform" if b == u else "population")
        self.best = dict(generation=last, policy=picked[b].tolist(), fitness=float(f[b]), l_proxy=float(losses[b]),
                         g=norm_term(evals[b].log_norm_ratio), fidelity="export")
        self._emit(Reranked(last, len(picked), chosen, search_best["fitness"], float(f[b]), float(f[u])))

    def _loss(self, e: Evaluation) -> float:
        """L_proxy; non-finite when a measured loss is (never L_text alone: the candidate is infeasible)."""
        return proxy_loss(e.l_text, e.l_mm, self.config.mm_weight)

    def _record(self, t, m, p, version, fidelity, e: Evaluation, loss, f, c_m, cached) -> None:
        g = norm_term(e.log_norm_ratio)
        seconds = 0.0 if cached else float(e.seconds)
        self.rows.append(dict(
            generation=t, candidate=m, policy=p.tolist(), mean_sparsity=self.space.mean_sparsity(p),
            projector_version=version, fidelity=fidelity, l_proxy=float(loss), l_text=float(e.l_text),
            l_mm=None if e.l_mm is None else float(e.l_mm), g=g, srm_scale=float(self.srm_scale), fitness=float(f),
            infeasible=infeasible_reason(e.l_text, e.l_mm, e.log_norm_ratio),
            c_m=None if math.isnan(c_m) else float(c_m), seconds=seconds, cached=bool(cached),
            log_norm_ratio=np.asarray(e.log_norm_ratio, dtype=np.float64).tolist(),
            effective_candidates=None, projector_loss_before=None, projector_loss_after=None, projector_change=None,
            projector_scale=None,
        ))
        self._emit(CandidateEvaluated(t, m, p, float(loss), g, float(f), bool(cached), seconds, fidelity))

    def _evaluate(self, pop: list[np.ndarray], version: int, fidelity: str) -> tuple[list[Evaluation], list[bool]]:
        self._memo = {k: e for k, e in self._memo.items() if k[1] == version}
        keys = [(p.tobytes(), version, fidelity) for p in pop]
        todo, seen = [], set()
        for m, k in enumerate(keys):  # first occurrence of each policy not memoised yet
            if k not in self._memo and k not in seen:
                seen.add(k)
                todo.append(m)
        # text scores are reused across projector versions only where they cannot depend on the projector
        # ("export" prunes sequentially: its text scores depend on the projector whatever the mode)
        reuse = text_independent_of_projector(self.evaluator) and fidelity != "export"
        known = [m for m in todo if reuse and (keys[m][0], fidelity) in self._text_memo]
        unknown = [m for m in todo if not (reuse and (keys[m][0], fidelity) in self._text_memo)]
        for subset, modalities in ((unknown, ("text", "mm")), (known, ("mm",))):
            if not subset:
                continue
            results = list(self.evaluator.evaluate([self.space.ratios(pop[m]) for m in subset], version, fidelity,
                                                   modalities))
            if len(results) != len(subset):
                raise RuntimeError(f"evaluator returned {len(results)} results for {len(subset)} candidates")
            for m, e in zip(subset, results):
                if modalities == ("mm",):  # the text part and the norms come from the memo
                    text = self._text_memo[(keys[m][0], fidelity)]
                    e = replace(e, l_text=text.l_text, log_norm_ratio=text.log_norm_ratio)
                if np.shape(e.log_norm_ratio) != (self.space.n_blocks,):
                    raise RuntimeError(f"evaluator returned log_norm_ratio of shape {np.shape(e.log_norm_ratio)}, "
                                       f"expected ({self.space.n_blocks},)")
                self._memo[keys[m]] = e
                if reuse:
                    self._text_memo.setdefault((keys[m][0], fidelity), e)
        return [self._memo[k] for k in keys], [m not in todo for m in range(len(pop))]

    def _checkpoint(self) -> None:
        state = dict(
            generation=self.generation,
            population=[p.tolist() for p in self.population],
            children=[p.tolist() for p in self.children],
            offspring_sized=self.offspring_sized,
            generation_limit=list(self.generation_limit) if self.generation_limit is not None else None,
            rng=self.rng.bit_generator.state,
            projector_version=self.projector_version,
            elapsed_s=self.elapsed_s,
            srm_scale=self.srm_scale,
            best=self.best,
            reranked=self.reranked,
            config=self._config_record,
            app=self.app,
            identity=normalise(self.evaluator.identity),
            param_counts=normalise(self.param_counts.tolist()),
        )
        projector = self.evaluator.projector_state() if self.use_projector else None
        self.store.save(state, self.history(), projector)

    # ---- outputs ------------------------------------------------------------------
    def history(self) -> pa.Table:
        return pa.Table.from_pylist(self.rows, schema=HISTORY_SCHEMA)

    def result(self, stopped_by: str = "generations") -> SearchResult:
        """The best policy of the last evaluated generation; if all of it is infeasible, the best of the
        latest generation with a feasible candidate (a FitnessError when no candidate was feasible)."""
        if self.best is None:
            raise RuntimeError("no generation has been evaluated yet")
        best = self.best if math.isfinite(self.best["fitness"]) else self._last_feasible()
        policy = np.array(best["policy"], dtype=np.int64)
        return SearchResult(policy, self.space.ratios(policy), best["fitness"], best["l_proxy"],
                            best["g"], self.generation, self.projector_version, self.history(), stopped_by)

    def _last_feasible(self) -> dict:
        """The best feasible candidate of the population of the latest generation that has one."""
        rows = [r for r in self.rows if r["fidelity"] == "full" and r["infeasible"] is None]
        if not rows:
            reasons = sorted({r["infeasible"] for r in self.rows if r["infeasible"]})
            raise FitnessError(f"no feasible candidate in {self.generation} generation(s): every one had a "
                               f"non-finite score ({', '.join(reasons[:3])}; see the history's infeasible column)")
        last = max(r["generation"] for r in rows)
        best = max((r for r in rows if r["generation"] == last), key=lambda r: r["fitness"])  # first of ties
        return {k: best[k] for k in ("generation", "policy", "fitness", "l_proxy", "g")}

    def _emit(self, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(event)
