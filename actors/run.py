"""A whole search on Ray: connect, start the actors, run the search driver, apply the best policy.

Outputs in the run directory (a local path or a pyarrow.fs URI), besides the checkpoint files:
    model/           the dense model pruned sequentially with the best policy, with the evolved
                     projector (save_pretrained + processor + policy.json + sparsity.json)
    policy.json      ratios per block (or per matrix), level indices, mean sparsity, F, L_proxy, G
    history.parquet  one row per candidate per generation (search.checkpoint.read_history)
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from actors.config import ConfigError, RayOptions, RunConfig
from actors.storage import absolute, exists, is_uri, read_file, write_file
from search.checkpoint import CONFIG, RunStore, read_config, read_history
from search.config import SearchConfig

Log = Callable[[str], None]


@contextmanager
def ray_session(opts: RayOptions, log: Log) -> Iterator[dict]:
    """Connect to `opts.address` or start a local cluster; an existing connection is reused as is."""
    import ray

    if ray.is_initialized():
        yield {"started": False, "dashboard_url": None}
        return
    kwargs = dict(namespace=opts.namespace, log_to_driver=True)
    if opts.address:
        ctx = ray.init(address=opts.address, **kwargs)
    else:
        ctx = ray.init(num_cpus=opts.num_cpus, include_dashboard=opts.dashboard, **kwargs)
    url = getattr(ctx, "dashboard_url", None)
    if url:
        log(f"Ray dashboard: http://{url}" if "://" not in url else f"Ray dashboard: {url}")
    try:
        yield {"started": True, "dashboard_url": url}
    finally:
        ray.shutdown()


def check_new_run_dir(out: str) -> None:
    """Before Ray starts: the run directory must be new (or empty)."""
    if RunStore(out).exists() or exists(out, CONFIG):
        raise ConfigError(f"{out} already holds a search run: continue it with `efficientllava resume {out}` "
                          "or choose another --out")
    if not is_uri(out):
        p = Path(out)
        if p.exists() and not p.is_dir():
            raise ConfigError(f"--out {out} is a file, not a directory")
        if p.is_dir() and any(p.iterdir()):
            raise ConfigError(f"--out {out} exists and is not empty; choose a new run directory")


def _run_name(opts: RayOptions, out: str) -> str:
    import ray

    if opts.name:
        return opts.name
    base = out.rstrip("/").rsplit("/", 1)[-1] or "run"
    return f"{base}-{ray.get_runtime_context().get_job_id()}"


class _Fanout:
    def __init__(self) -> None:
        self.event_subs: list = []
        self.candidate_subs: list = []

    def on_event(self, e) -> None:
        for f in self.event_subs:
            f(e)

    def on_candidate(self, s: dict) -> None:
        for f in self.candidate_subs:
            f(s)


def run_search(run: RunConfig, out: str, *, resume_config: SearchConfig | None = None, resume: bool = False,
               progress: bool = True, log: Log = print, on_event=None, on_candidate=None,
               on_ready: Callable[[object], None] | None = None) -> dict:
    """Run (or, with `resume`, continue) a search and write the outputs. Returns a summary dict.

    on_event / on_candidate: extra subscribers (tests); on_ready(evaluator) is called once the
    actors are up."""
    from actors.evaluator import RayEvaluator
    from actors.observe import ConsoleProgress, SearchMetrics
    from search.driver import SearchDriver

    out = absolute(out)
    fan = _Fanout()
    with ray_session(run.ray, log) as session:
        run_name = _run_name(run.ray, out)
        metrics = SearchMetrics(run_name)
        fan.event_subs.append(metrics.on_event)
        fan.candidate_subs.append(metrics.on_candidate)
        if on_event is not None:
            fan.event_subs.append(on_event)
        if on_candidate is not None:
            fan.candidate_subs.append(on_candidate)
        evaluator = RayEvaluator(run, run_name, on_candidate=fan.on_candidate, log_fn=log)
        try:
            if on_ready is not None:
                on_ready(evaluator)
            if resume:
                driver = SearchDriver.resume(out, evaluator, fan.on_event, config=resume_config)
                log(f"resuming {out} at generation {driver.generation} of {driver.config.generations}")
            else:
                driver = SearchDriver(resume_config or run.search, evaluator, out, fan.on_event)
            console = ConsoleProgress(driver.config.generations, driver.config.population, evaluator.n_blocks,
                                      driver.generation, enabled=progress, log=log)
            fan.event_subs.append(console.on_event)
            fan.candidate_subs.append(console.on_candidate)
            with console:
                result = driver.run()
            summary = finalize(driver, result, evaluator, run, out, log)
            summary.update(run_name=run_name, actors=evaluator.n_actors, stats=dict(evaluator.stats),
                           dashboard_url=session["dashboard_url"])
            return summary
        finally:
            evaluator.shutdown()


def policy_document(driver, result, run: RunConfig) -> dict:
    from prune_engine.models import MATRIX_NAMES

    space, cfg = driver.space, driver.config
    ratios = [round(float(r), 6) for r in result.ratios]
    if cfg.granularity == "matrix":
        short = [n.split(".")[-1] for n in MATRIX_NAMES]
        per_block = [dict(zip(short, ratios[i:i + len(short)])) for i in range(0, len(ratios), len(short))]
    else:
        per_block = ratios
    return {
        "ratios": per_block, "levels": result.policy.tolist(), "level_values": space.levels.tolist(),
        "granularity": cfg.granularity, "mean_sparsity": space.mean_sparsity(result.policy),
        "target": cfg.target, "tolerance": cfg.tolerance, "fitness": result.fitness, "l_proxy": result.l_proxy,
        "g": result.g, "eta": cfg.eta, "generations": result.generations, "stopped_by": result.stopped_by,
        "projector_version": result.projector_version, "projector_mode": cfg.projector_mode,
        "model": run.engine.model, "mode": run.engine.mode, "seed": cfg.seed,
    }


def finalize(driver, result, evaluator, run: RunConfig, out: str, log: Log) -> dict:
    """Apply the best policy: sequential pruning with the evolved projector; write the outputs."""
    doc = policy_document(driver, result, run)
    log(f"best policy: F {result.fitness:.4f}, L_proxy {result.l_proxy:.4f}, G {result.g:.4f}, "
        f"mean sparsity {doc['mean_sparsity']:.4f}; pruning the final model sequentially")
    model_dir = out.rstrip("/") + "/model"
    report = evaluator.export(result.ratios, model_dir, {"policy.json": doc})
    doc.update(achieved_mean_sparsity=report["mean_sparsity"], calibration_loss=report["calibration_loss"],
               final_prune_seconds=report["seconds"])
    write_file(out, "policy.json", json.dumps(doc, indent=2).encode())
    sink = pa.BufferOutputStream()
    pq.write_table(read_history(out), sink)
    write_file(out, "history.parquet", sink.getvalue().to_pybytes())
    log(f"saved {model_dir} (mean sparsity {report['mean_sparsity']:.4f}), {out}/policy.json, {out}/history.parquet")
    return {"out": out, "model_dir": model_dir, "policy": doc, "final": report}


def saved_run(run_dir: str) -> tuple[dict, bool]:
    """The saved search config of a run directory and whether it has a checkpoint.

    A run whose checkpoint files lost (or corrupted) their commit record is an error: every
    file stays in place (the run is never restarted over its history)."""
    store = RunStore(run_dir)
    store.check_not_orphaned()
    if store.exists():
        return read_config(run_dir), True
    if exists(run_dir, CONFIG):  # stopped before its first checkpoint: starts again from the start
        try:
            return yaml.safe_load(read_file(run_dir, CONFIG)), False
        except yaml.YAMLError:
            raise ConfigError(f"{run_dir}/{CONFIG} is not valid YAML") from None
    raise ConfigError(f"{run_dir}: no search run to resume (neither state.json nor {CONFIG} found)")


def resume_search(run_dir: str, ray_overrides: dict | None = None, generations: int | None = None,
                  progress: bool = True, log: Log = print, **hooks) -> dict:
    run_dir = absolute(run_dir)
    saved, has_checkpoint = saved_run(run_dir)
    run = RunConfig.from_saved(saved, ray_overrides)
    config = SearchConfig.from_dict({k: v for k, v in saved.items() if k in SearchConfig.model_fields})
    if generations is not None:
        config = config.merge({"generations": generations})
    return run_search(run, run_dir, resume_config=config, resume=has_checkpoint, progress=progress, log=log, **hooks)


def result_arrays(run_dir: str) -> dict:
    """What a finished run decided (for comparisons): best policy, its numbers, the history."""
    run_dir = absolute(run_dir)
    doc = json.loads(read_file(run_dir, "policy.json"))
    history = pq.read_table(pa.BufferReader(read_file(run_dir, "history.parquet")))
    return {"policy": np.array(doc["levels"]), "doc": doc, "history": history}
