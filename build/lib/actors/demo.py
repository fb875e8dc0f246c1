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
    target: float = 0.5
    population: int = 8
    generations: int = 2
    elites: int = 3
    eta: float = 0.5
    calib: str = "wiki:calib"
    nsamples: int = 16
    seqlen: int = 128
    mm_calib: str | None = "easy-vqa:train"  # dropped for a text-only model
    mm_samples: int = 24
    mode: str = "database"
    projector_lr: float = 1e-4
    actors: int | None = None
    address: str | None = None
    seed: int = 0
    eval_text: str = "wiki:eval"
    eval_segments: int = 16
    eval_seqlen: int = 256
    eval_vqa: int = 200  # held-out samples per VQA set
    overwrite: bool = False


def _evaluate(model_dir_or_spec: str, cfg: DemoConfig, log) -> dict:
    from prune_engine.evaluate import heldout_metrics

    return heldout_metrics(model_dir_or_spec, cfg.eval_text, cfg.eval_segments, cfg.eval_seqlen,
                           vqa_samples=cfg.eval_vqa, seed=cfg.seed)


def run_demo(cfg: DemoConfig, log=print) -> dict:
    import shutil

    from actors.config import RunConfig
    from actors.run import check_new_run_dir, run_search
    from prune_engine.prune import PruneJob, run_prune

    out = cfg.out.resolve()
    if out.exists() and cfg.overwrite:
        shutil.rmtree(out)
    check_new_run_dir(str(out))
    from prune_engine.models import load_processor

    if not hasattr(load_processor(cfg.model), "image_processor"):  # text-only model: no image-text data
        cfg = cfg.model_copy(update={"mm_calib": None})
    run = RunConfig.load(overrides={
        "search.target": cfg.target, "search.population": cfg.population, "search.generations": cfg.generations,
        "search.elites": cfg.elites, "search.eta": cfg.eta, "search.seed": cfg.seed,
        "search.projector_lr": cfg.projector_lr,
        "engine.model": cfg.model, "engine.calib": cfg.calib, "engine.nsamples": cfg.nsamples,
        "engine.seqlen": cfg.seqlen, "engine.mm_calib": cfg.mm_calib, "engine.mm_samples": cfg.mm_samples,
        "engine.mode": cfg.mode, "ray.actors": cfg.actors, "ray.address": cfg.address,
    })
    t0 = time.perf_counter()
    log(f"[1/3] EfficientLLaVA search on {cfg.model}: population {cfg.population}, {cfg.generations} generations, "
        f"target {cfg.target}, {cfg.mode} mode")
    summary = run_search(run, str(out / "search"), log=log)
    search_s = time.perf_counter() - t0
    log(f"[2/3] uniform SparseGPT at {cfg.target} with the same proxy data")
    run_prune(PruneJob(model=cfg.model, out=out / "uniform", sparsity=cfg.target, calib=cfg.calib,
                       nsamples=cfg.nsamples, seqlen=cfg.seqlen, mm_calib=cfg.mm_calib, mm_samples=cfg.mm_samples,
                       seed=cfg.seed, progress=False), log=log)
    log(f"[3/3] held-out evaluation: {cfg.eval_segments}x{cfg.eval_seqlen} tokens of {cfg.eval_text}, "
        f"{cfg.eval_vqa} easy-vqa and {cfg.eval_vqa} Fashion-MNIST test questions per model")
    rows = {}
    for name, spec in (("dense", cfg.model), ("uniform", str(out / "uniform")),
                       ("searched", summary["model_dir"])):
        rows[name] = _evaluate(spec, cfg, log)
        log(f"  {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in rows[name].items()))
    result = {"config": json.loads(cfg.model_dump_json()), "search_seconds": search_s,
              "total_seconds": time.perf_counter() - t0, "rows": rows, "policy": summary["policy"]}
    (out / "demo.json").write_text(json.dumps(result, indent=2))
    table = format_table(rows)
    (out / "demo.md").write_text(table + "\n")
    log("\n" + table)
    log(f"\nsearch {search_s:.0f} s, total {result['total_seconds']:.0f} s; outputs in {out}")
    return result


def format_table(rows: dict[str, dict]) -> str:
    lines = ["| model | sparsity | held-out ppl | easy-vqa acc | Fashion-MNIST acc |", "|---|---|---|---|---|"]
    acc = lambda v: "n/a (text-only)" if v != v else f"{v:.3f}"  # noqa: E731  (nan: not measured)
    for name, r in rows.items():
        lines.append(f"| {name} | {r['sparsity']:.3f} | {r['ppl']:.2f} | {acc(r['easy_vqa'])} | "
                     f"{acc(r['fashion_mnist'])} |")
    return "\n".join(lines)
