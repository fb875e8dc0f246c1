"""A whole search on Ray: connect, start the actors, run the search driver, apply the best policy.

Outputs in the run directory (a local path or a pyarrow.fs URI), besides the checkpoint files:
    model/           the dense model pruned sequentially with the best policy, with the evolved
                     projector (save_pretrained + processor + policy.json + sparsity.json)
    policy.json      ratios per block (or per matrix), level indices, mean sparsity, F, L_proxy, G
    history.parquet  one row per candidate per generation (search.checkpoint.read_history)
"""
from __future__ import annotations

import json
import re
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from efficientllava.actors.config import ConfigError, RayOptions, RunConfig
from efficientllava.actors.storage import absolute, exists, is_uri, read_file, write_file
from efficientllava.search.checkpoint import CONFIG, RunStore, read_history, read_saved
from efficientllava.search.config import SearchConfig
from efficientllava.search.protocol import Evaluation

Log = Callable[[str], None]


# worker log lines that stay in the actors' logs (dashboard) and are not repeated on the console
_QUIET_WORKER_LINES = re.compile(r"^\[[^\]]*\] evaluator \d+: candidate |Loading weights|Writing model shards|"
                                 r"it/s\]|s/it\]")


def check_ray_address(address: str | None) -> str | None:
    """Before ray.init: the cluster at `address` answers (a socket connect, seconds), else a one-line error.

    Returns the address to pass to ray.init: "local" for a new local cluster, None for the cluster
    named by RAY_ADDRESS (as inside `ray job submit`), else `address`."""
    import os
    import socket

    if address is None:
        return None if os.environ.get("RAY_ADDRESS") else "local"
    if address == "local":
        return address
    target = address
    if address == "auto":
        from ray._private.services import get_ray_address_from_environment

        try:
            target = get_ray_address_from_environment("auto", None)
        except ConnectionError:
            target = None
        if not target or target == "auto":
            raise ConfigError("--address auto: no running Ray cluster found on this node (start one with "
                              "`ray start --head`, or leave --address out to start a local cluster)")
    hostport = target.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address {address}: expected 'auto', host:port or ray://host:port")
    try:
        with socket.create_connection((host, int(port)), timeout=3):
            pass
    except OSError as exc:
        raise ConfigError(f"--address {address}: no Ray cluster answers at {hostport} ({exc.strerror or exc}); "
                          "check the address, or leave --address out to start a local cluster") from None
    return address


def _token_available() -> bool:
    import os

    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                or (Path.home() / ".ray" / "auth_token").is_file())


def _quiet_ray_console(address: str | None) -> None:
    """Before ray.init: no token-auth warning, no colour codes when piped, no weight-loading bars."""
    import os
    import sys

    # Ray >= 2.60 turns token authentication on for a new local cluster (generating ~/.ray/auth_token)
    # and warns unless RAY_AUTH_MODE is explicit: make it explicit. A cluster we connect to gets the
    # token when one is available (else connecting to a cluster without authentication must work).
    if "RAY_AUTH_MODE" not in os.environ and (address == "local" or _token_available()):
        os.environ["RAY_AUTH_MODE"] = "token"
        try:  # Ray caches its config at import: refresh it, as Ray does when it turns the mode on itself
            from ray._raylet import Config

            Config.initialize("")
        except Exception:  # noqa: BLE001
            pass
    if not sys.stderr.isatty():
        os.environ["RAY_COLOR_PREFIX"] = "0"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def _filter_worker_logs() -> None:
    """Actor log lines on the console: without the per-candidate lines and progress bars (they stay in
    each actor's log in the dashboard). Uses Ray's log dispatcher; left as is if its API changed."""
    try:
        from ray._private import worker as ray_worker
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

        ignore_prefix = ray_worker._should_ignore_worker_log_prefix(ray_worker.global_worker)

        def forward(data: dict) -> None:
            lines = [line for line in data.get("lines", []) if not _QUIET_WORKER_LINES.search(line)]
            if lines:
                ray_worker.print_to_stdstream(dict(data, lines=lines), ignore_prefix=ignore_prefix)

        dispatcher.remove_handler("ray_print_logs")
        dispatcher.add_handler("ray_print_logs", forward)
    except Exception:  # noqa: BLE001  (private API: keep Ray's own printing)
        pass


def metrics_url() -> str | None:
    """The Prometheus endpoint of the driver's node (custom metrics: ray_efficientllava_*)."""
    import ray

    try:
        node_id = ray.get_runtime_context().get_node_id()
        for node in ray.nodes():
            if node.get("NodeID") == node_id and node.get("MetricsExportPort"):
                return f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    except Exception:  # noqa: BLE001
        return None
    return None


@contextmanager
def ray_session(opts: RayOptions, log: Log) -> Iterator[dict]:
    """Connect to `opts.address` or start a local cluster; an existing connection is reused as is."""
    import logging

    import ray

    if ray.is_initialized():
        yield {"started": False, "dashboard_url": None}
        return
    address = check_ray_address(opts.address)
    _quiet_ray_console(address)
    sigterm = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    kwargs = dict(namespace=opts.namespace, log_to_driver=True, logging_level=logging.WARNING)
    try:
        if address != "local":
            ctx = ray.init(address=address, **kwargs)
        else:
            if opts.metrics_export_port is not None:
                kwargs["_metrics_export_port"] = opts.metrics_export_port
            ctx = ray.init(address="local", num_cpus=opts.num_cpus, include_dashboard=opts.dashboard, **kwargs)
    except getattr(ray.exceptions, "AuthenticationError", ()):
        raise ConfigError(f"the Ray cluster at {opts.address} requires token authentication: export "
                          "RAY_AUTH_MODE=token (the token is read from ~/.ray/auth_token or RAY_AUTH_TOKEN; "
                          "see docs/cluster.md)") from None
    except ConnectionError as exc:
        raise ConfigError(f"cannot connect to the Ray cluster at {opts.address}: {str(exc).splitlines()[0]}") from None
    if callable(sigterm):  # ray.init replaces it with sys.exit: keep the caller's (the CLI's clean interrupt)
        signal.signal(signal.SIGTERM, sigterm)
    _filter_worker_logs()
    url = getattr(ctx, "dashboard_url", None)
    if url:
        log(f"Ray dashboard: http://{url}" if "://" not in url else f"Ray dashboard: {url}")
    metrics = metrics_url()
    if metrics:
        log(f"Ray metrics (Prometheus; custom metrics ray_efficientllava_*): {metrics}")
    try:
        yield {"started": True, "dashboard_url": url, "metrics_url": metrics}
    finally:
        ray.shutdown()


def check_new_run_dir(out: str) -> None:
    """Before Ray starts: the run directory must be new (or empty)."""
    if RunStore(out).exists() or exists(out, CONFIG):
        raise ConfigError(f"{out} already holds a search run: continue it with `efficientllava resume {out}` "
                          "or choose another --out")
    if not is_uri(out):
        from efficientllava.prune_engine.checks import check_output_dir

        check_output_dir(Path(out))
        p = Path(out)
        if p.exists() and not p.is_dir():
            raise ConfigError(f"--out {out} is a file, not a directory")
        if p.is_dir() and any(p.iterdir()):
            raise ConfigError(f"--out {out} exists and is not empty; choose a new run directory")


RUN_NAME = "run_name.txt"


def _run_name(opts: RayOptions, out: str) -> str:
    """--set ray.name, else the name stored in the run directory at its first start (actor names and
    the run= metric tag stay the same across resumes), else run directory name + job id (stored)."""
    import ray

    if opts.name:
        return opts.name
    if exists(out, RUN_NAME):
        name = read_file(out, RUN_NAME).decode().strip()
        if name:
            return name
    base = out.rstrip("/").rsplit("/", 1)[-1] or "run"
    return f"{base}-{ray.get_runtime_context().get_job_id()}"


def _store_run_name(out: str, name: str) -> None:
    """Once the search is about to start (nothing is written by a run that fails its checks)."""
    if not exists(out, RUN_NAME):
        write_file(out, RUN_NAME, (name + "\n").encode())


class _Fanout:
    """Passes the driver's events and the pool's per-candidate results (`Evaluation`) to every subscriber."""

    def __init__(self) -> None:
        self.event_subs: list = []
        self.candidate_subs: list = []

    def on_event(self, e) -> None:
        for f in self.event_subs:
            f(e)

    def on_candidate(self, e: Evaluation) -> None:
        for f in self.candidate_subs:
            f(e)


def run_search(run: RunConfig, out: str, *, resume_config: SearchConfig | None = None, resume: bool = False,
               saved_app: dict | None = None, progress: bool = True, log: Log = print, on_event=None, on_candidate=None,
               on_ready: Callable[[object], None] | None = None, deadline: float | None = None) -> dict:
    """Run (or, with `resume`, continue) a search and write the outputs. Returns a summary dict.

    resume_config, saved_app: the search config and the app slot a run directory holds (resume_search); a
    resumed run keeps them as first saved (the checkpoint of a new run holds `run.app()`).

    deadline: a time.monotonic() by which a new search should end; once the actors are up (and their
    level databases built) the time left becomes its search.time_budget_s (or shortens it).

    on_event / on_candidate: extra subscribers (tests); on_ready(evaluator) is called once the
    actors are up."""
    from efficientllava.actors.evaluator_pool import EvaluatorPool
    from efficientllava.actors.observe import ConsoleProgress, SearchMetrics
    from efficientllava.search.driver import SearchDriver

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
        evaluator = EvaluatorPool(run, run_name, on_candidate=fan.on_candidate, log_fn=log)
        try:
            if on_ready is not None:
                on_ready(evaluator)
            if resume:
                driver = SearchDriver.resume(out, evaluator, fan.on_event, config=resume_config)
                log(f"resuming {out} at generation {driver.generation} of {driver.config.generations}")
            else:
                config = resume_config or run.search
                if deadline is not None:
                    left = max(deadline - time.monotonic(), 1.0)
                    if config.time_budget_s is None or left < config.time_budget_s:
                        config = config.merge({"time_budget_s": round(left, 1)})
                    log(f"search time budget: {config.time_budget_s:.0f} s from now")
                app = saved_app if resume_config is not None else run.app()
                driver = SearchDriver(config, evaluator, out, fan.on_event, app=app)
            screening = f"{evaluator.facts[0]['screen_dtype']} screening"
            console = ConsoleProgress(driver.config.generations, driver.config.population, evaluator.n_blocks,
                                      driver.generation, enabled=progress, log=log, screening=screening,
                                      evaluators=evaluator.n_actors)
            fan.event_subs.append(console.on_event)
            fan.candidate_subs.append(console.on_candidate)
            _store_run_name(out, run_name)
            with console:
                result = driver.run()
            summary = finalize(driver, result, evaluator, run, out, log)
            summary.update(run_name=run_name, actors=evaluator.n_actors, stats=evaluator.run_stats(),
                           dashboard_url=session["dashboard_url"])
            return summary
        finally:
            evaluator.shutdown()


def policy_document(driver, result, run: RunConfig) -> dict:
    from efficientllava.prune_engine.models.adapter import MATRIX_NAMES
    from efficientllava.prune_engine.pipeline import round_ratio

    space, cfg = driver.space, driver.config
    ratios = [round_ratio(r) for r in result.ratios]
    if cfg.granularity == "matrix":
        short = [n.split(".")[-1] for n in MATRIX_NAMES]
        per_block = [dict(zip(short, ratios[i:i + len(short)])) for i in range(0, len(ratios), len(short))]
    else:
        per_block = ratios
    return {
        "ratios": per_block, "levels": result.policy.tolist(), "level_values": space.levels.tolist(),
        "granularity": cfg.granularity, "mean_sparsity": space.mean_sparsity(result.policy),
        "target": cfg.target, "tolerance": cfg.tolerance, "fitness": result.fitness, "l_proxy": result.l_proxy,
        "g": result.g, "srm_scale": driver.srm_scale, "eta": cfg.eta, "generations": result.generations, "stopped_by": result.stopped_by,
        # with search.rerank: fitness, l_proxy and g are then the exported policy's as pruned for export
        "rerank": cfg.rerank, "scored_as": "export" if (driver.best or {}).get("fidelity") == "export" else "search",
        "projector_version": result.projector_version, "projector_mode": cfg.projector_mode,
        "model": run.engine.model, "mode": run.engine.mode, "seed": cfg.seed,
    }


def finalize(driver, result, evaluator, run: RunConfig, out: str, log: Log) -> dict:
    """Apply the best policy: sequential pruning with the evolved projector; write the outputs."""
    doc = policy_document(driver, result, run)
    log(f"best policy: F {result.fitness:.4f}, L_proxy {result.l_proxy:.4f}, G {result.g:.4f}, "
        f"mean sparsity {doc['mean_sparsity']:.4f}; pruning the final model sequentially")
    model_dir = out.rstrip("/") + "/model"
    from efficientllava.actors.observe import heartbeat

    with heartbeat(log, "pruning the final model"):
        report = evaluator.export(result.ratios, model_dir, doc)
    doc.update(achieved_mean_sparsity=report["mean_sparsity"], calibration_loss=report["calibration_loss"],
               final_prune_seconds=report["seconds"])
    write_file(out, "policy.json", json.dumps(doc, indent=2).encode())
    sink = pa.BufferOutputStream()
    pq.write_table(read_history(out), sink)
    write_file(out, "history.parquet", sink.getvalue().to_pybytes())
    log(f"saved {model_dir} (mean sparsity {report['mean_sparsity']:.4f}), {out}/policy.json, {out}/history.parquet")
    return {"out": out, "model_dir": model_dir, "policy": doc, "final": report}


def resume_search(run_dir: str, ray_overrides: dict | None = None, generations: int | None = None,
                  progress: bool = True, log: Log = print, **hooks) -> dict:
    run_dir = absolute(run_dir)
    saved, app, has_checkpoint = read_saved(run_dir)  # refuses checkpoint files that lost their state.json
    run = RunConfig.from_saved(saved, ray_overrides, app=app)
    config = SearchConfig.from_dict({k: v for k, v in saved.items() if k in SearchConfig.model_fields})
    if generations is not None:
        config = config.merge({"generations": generations})
    return run_search(run, run_dir, resume_config=config, resume=has_checkpoint, saved_app=app, progress=progress,
                      log=log, **hooks)


def result_arrays(run_dir: str) -> dict:
    """What a finished run decided (for comparisons): best policy, its numbers, the history."""
    run_dir = absolute(run_dir)
    doc = json.loads(read_file(run_dir, "policy.json"))
    history = pq.read_table(pa.BufferReader(read_file(run_dir, "history.parquet")))
    return {"policy": np.array(doc["levels"]), "doc": doc, "history": history}
