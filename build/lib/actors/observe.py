"""Observability: Ray custom metrics (dashboard / Prometheus) and console progress.

Both subscribe to the search driver's events (search/events.py) and to the Ray evaluator's
per-candidate callback (candidates finish one by one while the driver waits for the whole
generation).

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

from typing import Callable

from search.events import CandidateEvaluated, Event, GenerationFinished, GenerationStarted, SearchFinished

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

    def on_candidate(self, summary: dict) -> None:
        self.evaluated.inc(1.0, self.tags)
        self.seconds.set(float(summary["seconds"]), self.tags)
        self.seconds_hist.observe(float(summary["seconds"]), self.tags)

    def on_event(self, e: Event) -> None:
        if isinstance(e, CandidateEvaluated) and e.cached:
            self.cached.inc(1.0, self.tags)
        elif isinstance(e, GenerationFinished):
            self.generation.set(e.generation + 1, self.tags)
            self.best.set(e.best_fitness, self.tags)
            self.version.set(e.projector_version, self.tags)


class ConsoleProgress:
    """rich progress bars (generations, candidates, blocks) plus one line per generation."""

    def __init__(self, generations: int, population: int, blocks: int, start_generation: int = 0,
                 enabled: bool = True, log: Callable[[str], None] | None = None):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True)
        self.log = log or (lambda m: self.console.print(m, highlight=False))
        self.population, self.blocks = population, blocks
        self.enabled = enabled
        self.progress = Progress(TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=self.console,
                                 disable=not enabled, transient=True)
        self.t_gen = self.progress.add_task("generations", total=generations, completed=start_generation, info="")
        self.t_cand = self.progress.add_task("candidates", total=population, info="")
        self.t_block = self.progress.add_task("blocks", total=population * blocks, info="")
        self._blocks_run = 0

    def __enter__(self) -> "ConsoleProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def on_candidate(self, summary: dict) -> None:
        self.progress.advance(self.t_cand)
        self.progress.update(self.t_block, advance=self.blocks,
                             info=f"last: {summary['blocks_run']} block passes")
        self._blocks_run += summary["blocks_run"]

    def on_event(self, e: Event) -> None:
        if isinstance(e, GenerationStarted):
            self.progress.reset(self.t_cand, total=e.candidates)
            self.progress.reset(self.t_block, total=e.candidates * self.blocks)
            self.progress.update(self.t_gen, info=f"generation {e.generation}, projector v{e.projector_version}")
            self._blocks_run = 0
        elif isinstance(e, CandidateEvaluated) and e.cached:
            self.progress.advance(self.t_cand)
            self.progress.advance(self.t_block, self.blocks)
        elif isinstance(e, GenerationFinished):
            self.progress.advance(self.t_gen)
            self.log(f"generation {e.generation}: best F {e.best_fitness:.4f}, {e.evaluated} evaluated, "
                     f"{self._blocks_run} block passes (prefix reuse skips shared ones; database mode counts its "
                     f"build), projector v{e.projector_version}, "
                     f"{e.elapsed_s:.1f} s")
        elif isinstance(e, SearchFinished):
            self.log(f"search finished after {e.generations} generation(s) ({e.reason}): best F {e.best_fitness:.4f}")
