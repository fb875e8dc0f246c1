"""Observability: Ray custom metrics (dashboard / Prometheus) and console progress.

Both subscribe to the search driver's events (search/events.py) and to the evaluator pool's
per-candidate callback, which passes each candidate's `Evaluation` as it arrives (candidates finish
one by one while the driver waits for the whole generation).

Metrics (Prometheus names get Ray's ``ray_`` prefix), tagged with the run name:
    efficientllava_generation                generations completed
    efficientllava_best_fitness              best fitness of the last generation
    efficientllava_candidates_evaluated      candidates pruned and measured (counter, memo hits excluded)
    efficientllava_candidates_cached         memo hits (counter)
    efficientllava_seconds_per_candidate     seconds of the last evaluated candidate (gauge)
    efficientllava_candidate_seconds         seconds per candidate (histogram)
    efficientllava_projector_version         projector version after the last step
Evaluator actors add efficientllava_actor_candidates / _actor_blocks_pruned /
_actor_seconds_per_candidate, tagged with the actor index.
"""
from __future__ import annotations

import math
from typing import Callable

from efficientllava.search.events import (CandidateEvaluated, Event, GenerationFinished, GenerationStarted,
                                          OffspringSized, ProjectorStepped, Reranked, SearchFinished)
from efficientllava.search.protocol import Evaluation

METRIC_NAMES = ("efficientllava_generation", "efficientllava_best_fitness", "efficientllava_candidates_evaluated",
                "efficientllava_seconds_per_candidate")


class SearchMetrics:
    def __init__(self, run_name: str):
        from ray.util.metrics import Counter, Gauge, Histogram

        keys = ("run",)
        self.tags = {"run": run_name}
        self.generation = Gauge("efficientllava_generation", "Search generations completed", keys)
        self.best = Gauge("efficientllava_best_fitness", "Best fitness F of the last generation", keys)
        self.evaluated = Counter("efficientllava_candidates_evaluated", "Candidates pruned and measured", keys)
        self.cached = Counter("efficientllava_candidates_cached", "Candidates answered from the memo", keys)
        self.seconds = Gauge("efficientllava_seconds_per_candidate", "Seconds of the last evaluated candidate", keys)
        self.seconds_hist = Histogram("efficientllava_candidate_seconds", "Seconds per evaluated candidate",
                                      boundaries=[0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000], tag_keys=keys)
        self.version = Gauge("efficientllava_projector_version", "Projector version", keys)
        self.generation.set(0, self.tags)

    def on_candidate(self, e: Evaluation) -> None:
        self.evaluated.inc(1.0, self.tags)
        self.seconds.set(float(e.seconds), self.tags)
        self.seconds_hist.observe(float(e.seconds), self.tags)

    def on_event(self, e: Event) -> None:
        if isinstance(e, CandidateEvaluated) and e.cached:
            self.cached.inc(1.0, self.tags)
        elif isinstance(e, GenerationFinished):
            self.generation.set(e.generation + 1, self.tags)
            self.best.set(e.best_fitness, self.tags)
            self.version.set(e.projector_version, self.tags)


class ConsoleProgress:
    """rich progress bars (generations, candidates, blocks) on a terminal; in a piped log, plain
    lines instead: one per generation and per projector update, and a status line whenever
    nothing was printed for `heartbeat_s` seconds (so a log never goes quiet for long)."""

    def __init__(self, generations: int, population: int, blocks: int, start_generation: int = 0,
                 enabled: bool = True, log: Callable[[str], None] | None = None, heartbeat_s: float = 20.0,
                 screening: str = "screening", evaluators: int = 1):
        import threading
        import time

        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True)
        self._log = log or (lambda m: self.console.print(m, highlight=False))
        self.population, self.blocks, self.generations = population, blocks, generations
        self.screening, self.evaluators = screening, evaluators  # e.g. "bfloat16 screening", 2
        self.interactive = enabled and self.console.is_terminal
        self.progress = Progress(TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=self.console,
                                 disable=not self.interactive, transient=True)
        self.t_gen = self.progress.add_task("generations", total=generations, completed=start_generation, info="")
        self.t_cand = self.progress.add_task("candidates", total=population, info="")
        self.t_block = self.progress.add_task("blocks", total=population * blocks, info="")
        self._blocks_run = 0
        self._generation, self._done, self._screened, self._full = start_generation, 0, 0, 0
        self._clock = time.monotonic
        self._start = self._last = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.heartbeat_s = heartbeat_s
        self._thread = threading.Thread(target=self._beat, daemon=True) if enabled and not self.interactive else None

    def log(self, message: str) -> None:
        with self._lock:
            self._last = self._clock()
        self._log(message)

    def _beat(self) -> None:
        while not self._stop.wait(1.0):
            if self._clock() - self._last >= self.heartbeat_s:
                self.log(f"  ... generation {self._generation}: {self._full} evaluated on all proxy data, "
                         f"{self._screened} screened, {self._clock() - self._start:.0f} s elapsed")

    def __enter__(self) -> "ConsoleProgress":
        self.progress.start()
        if self._thread is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self.progress.stop()

    def on_candidate(self, e: Evaluation) -> None:
        if e.fidelity in ("screen", "stage"):  # scored on a slice: screened, or a survivor ranked on the stage slice
            self._screened += 1
        else:
            self._full += 1
        self.progress.advance(self.t_cand)
        self.progress.update(self.t_block, advance=self.blocks,
                             info=f"last: {e.blocks_run} block passes")
        self._blocks_run += e.blocks_run

    def on_event(self, e: Event) -> None:
        if isinstance(e, GenerationStarted):
            self.progress.reset(self.t_cand, total=e.candidates)
            self.progress.reset(self.t_block, total=e.candidates * self.blocks)
            self.progress.update(self.t_gen, info=f"generation {e.generation}, projector v{e.projector_version}")
            self._blocks_run, self._generation, self._screened, self._full = 0, e.generation, 0, 0
        elif isinstance(e, CandidateEvaluated) and e.cached:
            self.progress.advance(self.t_cand)
            self.progress.advance(self.t_block, self.blocks)
        elif isinstance(e, ProjectorStepped):
            kept = "dropped" if e.scale == 0 else ("kept" if e.scale == 1 else f"{e.scale:g} kept")
            self.log(f"generation {e.generation}: projector -> v{e.projector_version}, sum c_m L_m (held aside) "
                     f"{e.loss_before:.4f} -> {e.loss_after:.4f}, update {kept}, relative change {e.change:.4f}")
        elif isinstance(e, GenerationFinished):
            self.progress.advance(self.t_gen)
            self.log(f"generation {e.generation + 1}/{self.generations}: best F {e.best_fitness:.4f}, "
                     f"{e.evaluated} evaluated + {e.screened} screened, 1/sum(c^2) {e.effective_candidates:.2f}, "
                     f"{self._blocks_run} block passes, projector v{e.projector_version}, {e.elapsed_s:.1f} s")
        elif isinstance(e, OffspringSized):
            why = {"budget": "what fits the time budget",
                   "offspring": "the most the preset draws (the budget would allow more)",
                   "population": "the fewest that refill the population: the budget is too small for more"
                   }[e.limited_by]
            planned = self.generations - e.generation - 1
            if e.generations_left < planned:
                why += (f"; the budget holds {e.generations_left} of the {planned} generations left, the search "
                        "stops at it")
            self.log(f"screening sized: {self.screening}, {e.seconds_per_child:.2f} s a child on {self.evaluators} "
                     f"evaluator(s), a generation {e.seconds_per_generation:.0f} s without screening, "
                     f"{e.budget_left_s:.0f} s of the time budget left: {e.children} children per generation "
                     f"({why})")
        elif isinstance(e, Reranked):
            what = {"search": "the search's own best", "population": "another policy of its population",
                    "uniform": "the uniform policy"}[e.chosen]
            if not math.isfinite(e.fitness):
                self.log(f"re-rank: every one of the {e.candidates} policies pruned as the final model is scored "
                         "non-finite; the search's own best is kept")
            else:
                self.log(f"re-rank of generation {e.generation}'s best and uniform, {e.candidates} policies pruned as "
                         f"the final model is: {what} (F {e.fitness:.4f}; the search scored its best "
                         f"{e.search_fitness:.4f}; uniform pruned so {e.uniform_fitness:.4f})")
        elif isinstance(e, SearchFinished):
            self.log(f"search finished after {e.generations} generation(s) ({e.reason}): best F {e.best_fitness:.4f}")


class heartbeat:
    """Context manager: `log("  ... <what> (N s)")` every `every` seconds while the block runs, so a
    piped log never goes quiet during a long step (a prune, an evaluation)."""

    def __init__(self, log: Callable[[str], None], what: str, every: float = 20.0):
        import threading

        self.log, self.what, self.every = log, what, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import time

        start = time.monotonic()
        while not self._stop.wait(self.every):
            self.log(f"  ... {self.what} ({time.monotonic() - start:.0f} s)")

    def __enter__(self) -> "heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
