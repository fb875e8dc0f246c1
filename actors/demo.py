"""The demo main job: an EfficientLLaVA search on the embedded smol-llava, then dense / uniform /
searched compared on held-out data. `make demo` runs it with the reduced defaults below (about
8 minutes on 2 cores); on a cluster the same command scales up by flags only.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict



class DemoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    out: Path = Path("runs/demo")
    model: str = "smol-llava"
    preset: str = "default"  # search settings (actors.config.PRESETS); the fields below override them
    target: float = 0.5
    population: int | None = None
    generations: int | None = None
    elites: int | None = None
    eta: float | None = None
    nsamples: int | None = None  # proxy data sizes (default: the preset's)
    seqlen: int | None = None
    mm_samples: int | None = None
    projector_lr: float | None = None
    calib: str = "wiki:calib"
    mm_calib: str | None = "easy-vqa:train,fashion-mnist:train"  # dropped for a text-only model
    mode: str | None = None
    actors: int | None = None
    address: str | None = None
    seed: int = 0
    eval_text: str = "wiki:eval"
    eval_segments: int = 16
    eval_seqlen: int = 256
    eval_vqa: int = 150  # held-out samples per VQA set (the benchmarks use 1,000)
    overwrite: bool = False


def _evaluate(model_dir_or_spec: str, cfg: DemoConfig, log) -> dict:
    from prune_engine.evaluation.perplexity import heldout_metrics

    return heldout_metrics(model_dir_or_spec, cfg.eval_text, cfg.eval_segments, cfg.eval_seqlen,
                           vqa_samples=cfg.eval_vqa, seed=cfg.seed)


def run_demo(cfg: DemoConfig, log=print) -> dict:
    import shutil

    from actors.config import RunConfig
    from actors.observe import heartbeat
    from actors.run import check_new_run_dir, run_search
    from prune_engine.prune import PruneJob, run_prune

    out = cfg.out.resolve()
    if out.exists() and cfg.overwrite:
        shutil.rmtree(out)
    check_new_run_dir(str(out))
    from prune_engine.models.loading import load_processor

    if not hasattr(load_processor(cfg.model), "image_processor"):  # text-only model: no image-text data
        cfg = cfg.model_copy(update={"mm_calib": None})
    run = RunConfig.load(preset=cfg.preset, overrides={
        "search.target": cfg.target, "search.population": cfg.population, "search.generations": cfg.generations,
        "search.eta": cfg.eta, "search.seed": cfg.seed, "search.elites": cfg.elites,
        "search.projector_lr": cfg.projector_lr, "engine.nsamples": cfg.nsamples, "engine.seqlen": cfg.seqlen,
        "engine.mm_samples": cfg.mm_samples, "engine.model": cfg.model, "engine.calib": cfg.calib,
        "engine.mm_calib": cfg.mm_calib, "engine.mode": cfg.mode, "ray.actors": cfg.actors,
        "ray.address": cfg.address,
    })
    s, e = run.search, run.engine
    t0 = time.perf_counter()
    log(f"[1/3] EfficientLLaVA search on {cfg.model} (preset {cfg.preset}): population {s.population}, "
        f"{s.generations} generations, {s.offspring} screened children per generation, target {s.target}, "
        f"{e.mode} mode, proxy data {e.nsamples}x{e.seqlen} text tokens + {e.mm_samples if e.mm_calib else 0} "
        f"image-text samples ({e.mm_calib or 'none'}), fitness {e.loss}")
    summary = run_search(run, str(out / "search"), log=log)
    search_s = time.perf_counter() - t0
    log(f"[2/3] uniform SparseGPT at {cfg.target} with the same proxy data")
    with heartbeat(log, "uniform SparseGPT"):
        run_prune(PruneJob(model=cfg.model, out=out / "uniform", sparsity=cfg.target, calib=e.calib,
                           nsamples=e.nsamples, seqlen=e.seqlen, mm_calib=e.mm_calib, mm_samples=e.mm_samples,
                           seed=e.seed, progress=False), log=log)
    log(f"[3/3] held-out evaluation: {cfg.eval_segments}x{cfg.eval_seqlen} tokens of {cfg.eval_text}, "
        f"{cfg.eval_vqa} easy-vqa and {cfg.eval_vqa} Fashion-MNIST test questions per model")
    rows = {}
    for name, spec in (("dense", cfg.model), ("uniform", str(out / "uniform")),
                       ("searched", summary["model_dir"])):
        t1 = time.perf_counter()
        with heartbeat(log, f"evaluating {name}"):
            rows[name] = _evaluate(spec, cfg, log)
        log(f"  {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in rows[name].items())
            + f" ({time.perf_counter() - t1:.0f} s)")
    stats = summary.get("stats", {})
    result = {"config": json.loads(cfg.model_dump_json()), "run": json.loads(json.dumps(yaml_sections(run))),
              "search_seconds": search_s, "total_seconds": time.perf_counter() - t0, "rows": rows,
              "policy": summary["policy"], "candidates": stats.get("candidates"), "screened": stats.get("screened")}
    (out / "demo.json").write_text(json.dumps(result, indent=2))
    table = format_table(rows)
    (out / "demo.md").write_text(table + "\n")
    log("\n" + table)
    log(f"\nsearch {search_s:.0f} s ({stats.get('candidates')} candidate evaluations, {stats.get('screened')} of "
        f"them screened on the slice), total {result['total_seconds']:.0f} s; outputs in {out}")
    return result


def yaml_sections(run) -> dict:
    import yaml

    return yaml.safe_load(run.to_yaml())


def format_table(rows: dict[str, dict]) -> str:
    lines = ["| model | sparsity | held-out ppl | easy-vqa acc | Fashion-MNIST acc |", "|---|---|---|---|---|"]
    acc = lambda v: "n/a (text-only)" if v != v else f"{v:.3f}"  # noqa: E731  (nan: not measured)
    for name, r in rows.items():
        lines.append(f"| {name} | {r['sparsity']:.3f} | {r['ppl']:.2f} | {acc(r['easy_vqa'])} | "
                     f"{acc(r['fashion_mnist'])} |")
    return "\n".join(lines)
