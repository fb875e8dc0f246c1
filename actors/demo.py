"""The demo main job: an EfficientLLaVA search on the embedded smol-llava, then dense / uniform /
searched compared on held-out data. `make demo` runs it with the reduced defaults below (about
8 minutes on 2 cores); on a cluster the same command scales up by flags only.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from actors.config import RunConfig
from prune_engine.config import HeldoutConfig


#: the demo's own defaults where they differ from the presets' (shown in `demo --help`)
DEMO_DEFAULTS = {"engine.model": "smol-llava", "data.mm_calib": "easy-vqa:train,fashion-mnist:train"}
DEMO_HELDOUT_VQA = 150  # held-out questions per VQA set (the benchmarks use 1,000)


class DemoJob(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    out: Path = Path("runs/demo")
    run: RunConfig  # the search; its data section is also the uniform baseline's calibration data
    preset: str = "default"  # where `run` started (reported)
    heldout: HeldoutConfig = HeldoutConfig(vqa=DEMO_HELDOUT_VQA)
    overwrite: bool = False


def demo_run_config(settings: dict, config: Path | None = None, sets: list[str] | None = None,
                    preset: str = "default") -> RunConfig:
    """The search of the demo: the command's settings over the demo's defaults; no image-text data
    for a text-only model."""
    from actors.options import run_config
    from prune_engine.models.loading import load_processor

    chosen = {k: v for k, v in settings.items() if not k.startswith("heldout.")}
    for key, value in DEMO_DEFAULTS.items():
        if chosen.get(key) is None:
            chosen[key] = value
    if settings.get("data.mm_calib") is None and not hasattr(load_processor(chosen["engine.model"]),
                                                              "image_processor"):
        chosen["data.mm_calib"] = None  # text-only model: no image-text data
    return run_config(chosen, config, sets, preset)


def run_demo(job: DemoJob, log=print) -> dict:
    import shutil

    from actors.observe import heartbeat
    from actors.run import check_new_run_dir, run_search
    from prune_engine.evaluation.heldout import heldout_metrics
    from prune_engine.prune import PruneJob, run_prune

    out = job.out.resolve()
    if out.exists() and job.overwrite:
        shutil.rmtree(out)
    check_new_run_dir(str(out))
    run, h = job.run, job.heldout
    s, e, d = run.search, run.engine, run.data
    t0 = time.perf_counter()
    log(f"[1/3] EfficientLLaVA search on {e.model} (preset {job.preset}): population {s.population}, "
        f"{s.generations} generations, {s.offspring} screened children per generation, target {s.target}, "
        f"{e.mode} mode, proxy data {d.nsamples}x{d.seqlen} text tokens + {d.mm_samples if d.mm_calib else 0} "
        f"image-text samples ({d.mm_calib or 'none'}), fitness {e.loss}")
    summary = run_search(run, str(out / "search"), log=log)
    search_s = time.perf_counter() - t0
    log(f"[2/3] uniform SparseGPT at {s.target} with the same proxy data")
    with heartbeat(log, "uniform SparseGPT"):
        run_prune(PruneJob(model=e.model, out=out / "uniform", sparsity=s.target, data=d, progress=False), log=log)
    log(f"[3/3] held-out evaluation: {h.segments}x{h.seqlen} tokens of {h.text}, "
        f"{h.vqa} easy-vqa and {h.vqa} Fashion-MNIST test questions per model")
    rows = {}
    for name, spec in (("dense", e.model), ("uniform", str(out / "uniform")),
                       ("searched", summary["model_dir"])):
        t1 = time.perf_counter()
        with heartbeat(log, f"evaluating {name}"):
            rows[name] = heldout_metrics(spec, h)
        log(f"  {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in rows[name].items())
            + f" ({time.perf_counter() - t1:.0f} s)")
    stats = summary.get("stats", {})
    result = {"config": json.loads(job.model_dump_json(exclude={"run"})), "run": run.sections(),
              "search_seconds": search_s, "total_seconds": time.perf_counter() - t0, "rows": rows,
              "policy": summary["policy"], "candidates": stats.get("candidates"), "screened": stats.get("screened")}
    (out / "demo.json").write_text(json.dumps(result, indent=2))
    table = format_table(rows)
    (out / "demo.md").write_text(table + "\n")
    log("\n" + table)
    log(f"\nsearch {search_s:.0f} s ({stats.get('candidates')} candidate evaluations, {stats.get('screened')} of "
        f"them screened on the slice), total {result['total_seconds']:.0f} s; outputs in {out}")
    return result


def format_table(rows: dict[str, dict]) -> str:
    lines = ["| model | sparsity | held-out ppl | easy-vqa acc | Fashion-MNIST acc |", "|---|---|---|---|---|"]
    acc = lambda v: "n/a (text-only)" if v != v else f"{v:.3f}"  # noqa: E731  (nan: not measured)
    for name, r in rows.items():
        lines.append(f"| {name} | {r['sparsity']:.3f} | {r['ppl']:.2f} | {acc(r['easy_vqa'])} | "
                     f"{acc(r['fashion_mnist'])} |")
    return "\n".join(lines)
