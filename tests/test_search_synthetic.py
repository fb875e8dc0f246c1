"""A cheap synthetic evaluator with a known optimum, the convergence acceptance test
(b), and a command-line entry point used by the SIGKILL resume tests:

    python tests/test_search_synthetic.py RUN_DIR [--resume] [--block-at-generation G]
                                                  [--die-in-checkpoint G]
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time

import numpy as np
import pytest

from efficientllava.search import Evaluation, GenerationFinished, ProjectorUpdate, SearchConfig, SearchDriver
from efficientllava.search.fitness import fitness


class SyntheticEvaluator:
    """Separable per-entry loss: L = L_dense + mean_e a_e r_e^2 (+ a small projector
    term), with L_dense = 2 nats like a small LM's cross-entropy;
    log-norm ratio per block = mean over its entries of log(1 - b_e r_e).
    The projector is a vector that each step moves with the weighted ratios."""

    def __init__(self, n_blocks=10, seed=1, granularity="block", projector=True, sleep=0.0, base_loss=2.0,
                 mm=False, screen_noise=0.0, text_independent=False, stage_noise=0.0, export=None):
        rng = np.random.default_rng(seed)
        self.per_block = 7 if granularity == "matrix" else 1
        size = n_blocks * self.per_block
        self.n_blocks = n_blocks
        self.param_counts = rng.integers(1, 4, size) * 1000
        self.a = np.exp(rng.uniform(np.log(0.2), np.log(5.0), size))
        self.b = rng.uniform(0.2, 0.6, size)
        self.identity = {"model": "synthetic-separable", "n_blocks": n_blocks, "seed": seed, "granularity": granularity}
        self.has_projector = projector
        self.projector = np.zeros(size)
        self.projector_version = 0
        self.sleep = sleep
        self.base_loss = base_loss
        self.mm = mm  # also report an image-text loss (it prefers low sparsity in the first blocks)
        self.screen_noise = screen_noise  # sd of the (deterministic) error of a screening evaluation
        self.stage_noise = stage_noise  # the same at the stage (multi-step selection): another fixed error
        self.export = export  # ratios -> what pruning as the final model adds to L_text (fidelity "export"; NaN: broken)
        # True: L_text has no projector term (like database mode), so the driver may reuse it across versions
        self.text_independent_of_projector = text_independent
        self.evaluated: list[np.ndarray] = []  # every ratio vector sent to evaluate()
        self.fidelities: list[str] = []
        self.modalities: list[tuple] = []
        self.steps: list[tuple[list[np.ndarray], list[list[int]], float]] = []
        self.rescales: list[float] = []  # every scale the driver's guard asked for
        self.before_evaluate = None  # hook(index) for the subprocess tests

    def entry_values(self, r):
        """(loss term, log-norm term) per entry."""
        return self.a * r**2 / r.size, np.log(1.0 - self.b * r)

    def mm_loss(self, r):
        r = np.asarray(r)
        early = r[: max(1, r.size // 3)]
        return float(1.0 + 3.0 * np.mean(early**2) + 0.05 * np.mean((np.tanh(self.projector) - r) ** 2))

    def evaluate(self, ratios, projector_version, fidelity="full", modalities=("text", "mm")):
        assert projector_version == self.projector_version, "driver and evaluator disagree on the projector"
        out = []
        for i, r in enumerate(ratios):
            if self.before_evaluate is not None:
                self.before_evaluate(i)
            if self.sleep:
                time.sleep(self.sleep)
            loss, lnr = self.entry_values(np.asarray(r))
            l_text = float(self.base_loss + loss.sum()) if self.text_independent_of_projector else \
                float(self.base_loss + loss.sum() + 0.01 * np.tanh(self.projector) @ r / r.size)
            sd = {"screen": self.screen_noise, "stage": self.stage_noise}.get(fidelity, 0.0)
            if sd:  # a fixed error per policy and fidelity, like a fixed token slice
                key = abs(hash(np.round(np.asarray(r), 6).tobytes())) % 2**32
                noise = np.random.default_rng([key, 0 if fidelity == "screen" else 1])
                l_text += float(noise.normal(0.0, sd))
            if fidelity == "export" and self.export is not None:
                l_text += float(self.export(np.asarray(r)))
            out.append(Evaluation(l_text, lnr.reshape(self.n_blocks, self.per_block).mean(axis=1),
                                  seconds=0.001 * (i + 1), l_mm=self.mm_loss(r) if self.mm else None))
            if "text" not in modalities:
                out[-1].l_text = float("nan")  # the driver must not use it
            self.evaluated.append(np.asarray(r).copy())
            self.fidelities.append(fidelity)
            self.modalities.append(tuple(modalities))
        return out

    def projector_step(self, ratios, draws, lr):
        self.steps.append((ratios, [list(d) for d in draws], lr))
        drawn = sorted({m for d in draws for m in d})
        before = float(np.mean([self.mm_loss(ratios[m]) for m in drawn]))
        old = self.projector.copy()
        for draw in draws:  # each step pulls tanh(projector) towards its drawn candidates' ratios (the
            # image-text loss then drops at lr <= 1e-3; larger rates overshoot and the guard drops the update)
            target = np.mean(np.stack([ratios[m] for m in draw]), axis=0)
            self.projector = self.projector + 1000.0 * lr * (target - np.tanh(self.projector))
            self.projector_version += 1
        after = float(np.mean([self.mm_loss(ratios[m]) for m in drawn]))
        change = float(np.linalg.norm(self.projector - old) / max(np.linalg.norm(old), 1e-12))
        self.last_update = (ratios, drawn, before, old, self.projector.copy())
        return ProjectorUpdate(self.projector_version, before, after, change)

    def rescale_projector_update(self, scale):
        ratios, drawn, before, start, end = self.last_update
        self.rescales.append(scale)
        self.projector = start + scale * (end - start)
        self.projector_version += 1
        after = float(np.mean([self.mm_loss(ratios[m]) for m in drawn]))
        change = float(np.linalg.norm(self.projector - start) / max(np.linalg.norm(start), 1e-12))
        return ProjectorUpdate(self.projector_version, before, after, change, scale=scale)

    def projector_state(self):
        return self.projector.tobytes()

    def load_projector_state(self, state, version):
        self.projector = np.frombuffer(state, dtype=np.float64).copy()
        self.projector_version = version


def exact_optimum(ev: SyntheticEvaluator, cfg: SearchConfig) -> float:
    """Best fitness over all feasible policies (projector at zero), by dynamic
    programming over the integer weighted level-offset sum."""
    m = round(cfg.span / cfg.step)
    offsets = np.arange(-m, m + 1)
    w = ev.param_counts // 1000
    bound = cfg.tolerance * w.sum() / cfg.step + 1e-9
    best = {0: 0.0}  # weighted offset sum -> best partial fitness
    for e in range(len(w)):
        r = cfg.target + cfg.step * offsets
        loss = ev.a[e] * r**2 / len(w)
        lnr = np.log(1.0 - ev.b[e] * r)  # G sums the per-block terms (block granularity: one entry each)
        value = -loss - cfg.eta * cfg.srm_scale * lnr
        nxt: dict[int, float] = {}
        for s, v in best.items():
            for j, o in enumerate(offsets):
                key = s + int(w[e] * o)
                if nxt.get(key, -np.inf) < v + value[j]:
                    nxt[key] = v + value[j]
        best = nxt
    return max(v for s, v in best.items() if abs(s) <= bound) - ev.base_loss


def test_exact_optimum_matches_brute_force():
    import itertools

    from efficientllava.search import PolicySpace

    ev = SyntheticEvaluator(n_blocks=6, seed=4, projector=False)
    cfg = SearchConfig(srm_scale=1 / 6)
    space = PolicySpace.from_config(cfg, ev.param_counts)
    best = -np.inf
    for p in itertools.product(range(5), repeat=6):
        if space.is_feasible(np.array(p)):
            (e,) = ev.evaluate([space.ratios(np.array(p))], 0)
            best = max(best, fitness(e.l_text, e.log_norm_ratio, cfg.eta, cfg.srm_scale))
    assert exact_optimum(ev, cfg) == pytest.approx(best, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_finds_known_optimum_within_one_percent(tmp_path, seed):
    ev = SyntheticEvaluator(n_blocks=10, seed=seed + 10, projector=False)
    cfg = SearchConfig(population=16, generations=10, seed=seed, eta=0.5, srm_scale=0.1)
    best_per_generation = []
    driver = SearchDriver(cfg, ev, str(tmp_path), on_event=lambda e: isinstance(e, GenerationFinished)
                          and best_per_generation.append(e.best_fitness))
    result = driver.run()
    opt = exact_optimum(ev, cfg)
    (u,) = ev.evaluate([np.full(10, 0.5)], 0)
    uniform = fitness(u.l_text, u.log_norm_ratio, cfg.eta, cfg.srm_scale)
    assert opt - uniform > 0.03 * abs(opt), "non-trivial: the uniform policy is not within 1%"
    assert result.fitness <= opt + 1e-12
    assert opt - result.fitness <= 0.01 * abs(opt), (result.fitness, opt)
    assert opt - result.fitness <= 0.2 * (opt - uniform), "closes most of the uniform-to-optimum gap"
    assert len(best_per_generation) == 10
    assert all(b2 >= b1 for b1, b2 in zip(best_per_generation, best_per_generation[1:]))
    assert result.fitness == max(result.history.column("fitness").to_pylist())


# ---- subprocess entry point for the SIGKILL tests ---------------------------------
def resume_config() -> SearchConfig:
    return SearchConfig(population=16, generations=7, seed=7, projector_mode="weighted", projector_lr=1e-3)


def resume_evaluator(**kw) -> SyntheticEvaluator:
    return SyntheticEvaluator(n_blocks=12, seed=3, **kw)


def _main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--block-at-generation", type=int, default=None)
    ap.add_argument("--die-in-checkpoint", type=int, default=None)
    args = ap.parse_args(argv)
    ev = resume_evaluator()
    generation = {"now": -1}

    def on_event(e):
        if hasattr(e, "candidates"):  # GenerationStarted
            generation["now"] = e.generation
            print(f"GEN {e.generation}", flush=True)

    def before_evaluate(i):  # park in the middle of the chosen generation, wait for SIGKILL
        if generation["now"] == args.block_at_generation and i == 8:
            print("READY", flush=True)
            time.sleep(120)

    ev.before_evaluate = before_evaluate
    if args.die_in_checkpoint is not None:
        from efficientllava.search import checkpoint

        original = checkpoint.RunStore._move

        def move(self, src, dst):  # die between the temp write and the rename of state.json
            if dst.endswith(checkpoint.STATE) and generation["now"] == args.die_in_checkpoint:
                print("READY", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            original(self, src, dst)

        checkpoint.RunStore._move = move
    driver = SearchDriver.resume(args.run_dir, ev, on_event) if args.resume else SearchDriver(resume_config(), ev, args.run_dir, on_event)
    result = driver.run()
    print(f"DONE {result.fitness!r}", flush=True)


if __name__ == "__main__":
    _main(sys.argv[1:])
