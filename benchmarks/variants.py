"""The pruning variants the ablation and accuracy-vs-sparsity benchmarks compare, run the same way.

Every variant at a target sparsity uses the same proxy (= calibration) data and seed; searches run
on Ray (a local cluster started once per benchmark) and end with the sequential re-prune of the
best policy; then the model is scored on held-out data (prune_engine.evaluate.heldout_metrics).
A finished variant is cached as JSON next to its outputs (keyed by its exact settings), so an
interrupted benchmark run continues where it stopped and two benchmarks share identical runs.

    uniform       uniform SparseGPT (every block at the target)
    owl           OWL-style per-block ratios (outlier ratio heuristic, lambda 0.08, M 5), SparseGPT
    auto_wo_gen   search with eta = 0 (no generalisation term), projector evolution on
    full          search with eta = 0.5, projector evolution with neighbour weights (EfficientLLaVA)
    no_evo        search with eta = 0.5, no projector update
    evo_wo_ub     search with eta = 0.5, projector update with all c_m equal
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

SEARCHES = {
    "auto_wo_gen": {"search.eta": 0.0},
    "full": {"search.eta": 0.5},
    "no_evo": {"search.eta": 0.5, "search.projector_mode": "off"},
    "evo_wo_ub": {"search.eta": 0.5, "search.projector_mode": "uniform"},
}
LABELS = {"dense": "Dense", "uniform": "Uniform SparseGPT", "owl": "OWL ratios + SparseGPT",
          "auto_wo_gen": "Auto w/o Gen (eta = 0)", "full": "Full (eta = 0.5)", "no_evo": "No Evo",
          "evo_wo_ub": "Evo w/o UB (c_m equal)"}


class Settings(BaseModel):
    """One set of settings shared by every variant of a benchmark (hashed into the cache key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = "smol-llava"
    population: int = 8
    generations: int = 2
    elites: int = 3
    mode: str = "database"
    calib: str = "wiki:calib"
    nsamples: int = 16
    seqlen: int = 128
    mm_calib: str = "easy-vqa:train"
    mm_samples: int = 24
    projector_lr: float = 1e-4
    owl_lambda: float = 0.08
    owl_m: float = 5.0
    seed: int = 0
    eval_text: str = "wiki:eval"
    eval_segments: int = 16
    eval_seqlen: int = 256
    eval_vqa: int = 200
    actors: int | None = None

    def key(self, variant: str, target: float) -> str:
        data = self.model_dump(exclude={"actors"})  # actors never change a result
        blob = json.dumps({"variant": variant, "target": target, **data}, sort_keys=True)
        return f"{variant}-{target:g}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def run_variant(variant: str, target: float | None, settings: Settings, work: Path, log=print) -> dict:
    """Prune (or search) one variant, evaluate it, cache and return its row."""
    from prune_engine.evaluate import heldout_metrics

    key = settings.key(variant, target if target is not None else 0.0)
    cached = work / f"{key}.json"
    if cached.exists():
        row = json.loads(cached.read_text())
        log(f"  {variant} at {target}: cached ({cached.name})")
        return row
    out = work / key
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    row: dict = {"variant": variant, "target": target}
    if variant == "dense":
        model_dir = settings.model
    elif variant in ("uniform", "owl"):
        from prune_engine.prune import PruneJob, run_prune

        summary = run_prune(PruneJob(model=settings.model, out=out, sparsity=target, calib=settings.calib,
                                     nsamples=settings.nsamples, seqlen=settings.seqlen, mm_calib=settings.mm_calib,
                                     mm_samples=settings.mm_samples, seed=settings.seed, progress=False,
                                     owl=settings.owl_lambda if variant == "owl" else None, owl_m=settings.owl_m),
                            log=lambda m: None)
        model_dir, row["ratios"] = str(out), summary["ratios"]
    elif variant in SEARCHES:
        from actors.config import RunConfig
        from actors.run import run_search

        run = RunConfig.load(overrides={
            "search.target": target, "search.population": settings.population,
            "search.generations": settings.generations, "search.elites": settings.elites,
            "search.seed": settings.seed, "search.projector_lr": settings.projector_lr, **SEARCHES[variant],
            "engine.model": settings.model, "engine.calib": settings.calib, "engine.nsamples": settings.nsamples,
            "engine.seqlen": settings.seqlen, "engine.mm_calib": settings.mm_calib,
            "engine.mm_samples": settings.mm_samples, "engine.mode": settings.mode, "ray.actors": settings.actors,
        })
        summary = run_search(run, str(out), progress=False, log=lambda m: None)
        doc = summary["policy"]
        model_dir = summary["model_dir"]
        row.update(ratios=doc["ratios"], fitness=doc["fitness"], l_proxy=doc["l_proxy"], g=doc["g"],
                   evaluated=summary["stats"].get("candidates"))
    else:
        raise ValueError(f"unknown variant {variant}")
    row["prune_seconds"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    row.update(heldout_metrics(model_dir, settings.eval_text, settings.eval_segments, settings.eval_seqlen,
                               vqa_samples=settings.eval_vqa, seed=settings.seed))
    row["eval_seconds"] = time.perf_counter() - t1
    if variant != "dense":
        shutil.rmtree(out / "model" if (out / "model").exists() else out, ignore_errors=True)  # weights: GBs
    work.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(row, indent=2))
    log(f"  {variant} at {target}: sparsity {row['sparsity']:.4f}, ppl {row['ppl']:.2f}, "
        f"easy-vqa {row['easy_vqa']:.3f}, Fashion-MNIST {row['fashion_mnist']:.3f} "
        f"({row['prune_seconds']:.0f} s + {row['eval_seconds']:.0f} s eval)")
    return row


DEMO_FIELDS = ("model", "population", "generations", "elites", "mode", "calib", "nsamples", "seqlen", "mm_calib",
               "mm_samples", "projector_lr", "seed", "eval_text", "eval_segments", "eval_seqlen", "eval_vqa")


def seed_from_demo(demo_dir: Path, settings: Settings, work: Path, log=print) -> list[str]:
    """Reuse a finished `efficientllava demo` run whose settings are exactly these (dense, uniform and
    full at its target are then the very same computations; results do not depend on the actor
    count). Returns the variants taken; nothing when any setting differs."""
    demo = json.loads((Path(demo_dir) / "demo.json").read_text())
    cfg = demo["config"]
    differs = [k for k in DEMO_FIELDS if cfg.get(k) != getattr(settings, k)]
    if differs or cfg.get("eta") != 0.5:
        log(f"  not reusing {demo_dir}: its settings differ in {differs or ['eta']}")
        return []
    target, rows, doc = cfg["target"], demo["rows"], demo["policy"]
    work.mkdir(parents=True, exist_ok=True)
    taken = []
    for variant, row in (("dense", rows["dense"]), ("uniform", rows["uniform"]), ("full", rows["searched"])):
        t = None if variant == "dense" else target
        entry = {"variant": variant, "target": t, **row, "from_demo": str(demo_dir)}
        if variant == "full":
            entry.update(ratios=doc["ratios"], fitness=doc["fitness"], l_proxy=doc["l_proxy"], g=doc["g"],
                         prune_seconds=demo["search_seconds"])
        cached = work / f"{settings.key(variant, t if t is not None else 0.0)}.json"
        if not cached.exists():
            cached.write_text(json.dumps({"prune_seconds": float("nan"), "eval_seconds": float("nan"), **entry},
                                         indent=2))
            taken.append(variant)
    log(f"  reused from {demo_dir}: {taken}")
    return taken


def ray_started(settings: Settings):
    """One local Ray cluster for all the searches of a benchmark (run_search reuses a connection)."""
    import ray

    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):  # join a running cluster (several benchmarks sharing one machine)
            ray.init(namespace="efficientllava", log_to_driver=False)
        else:
            ray.init(namespace="efficientllava", include_dashboard=False, log_to_driver=False)
    return ray
