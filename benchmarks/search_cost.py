"""What a whole search costs, against one sequential SparseGPT pass, for the two presets.

    .venv/bin/python benchmarks/search_cost.py [--model smol-llava --actors 2 --presets paper,default]

Measured in one run on this machine, same seed:
  * one layer-sequential SparseGPT pass at the target, in process with one thread, on the paper
    preset's calibration data (what its level database and final prune use);
  * the search with each preset (efficientllava search --preset ...) on a local Ray cluster with
    `--actors` evaluator actors of one thread each, start to finish: actor start-up, the level
    database (built in parts, one per actor), every generation, the projector steps and the final
    sequential prune + save.
Reported: wall time, the ratio to the one pass, candidates scored on the whole fitness set and on
the screening slice, candidate evaluations per minute. Writes benchmarks/results/search_cost.md/.json.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import markdown_table, write_results  # noqa: E402

MM_CALIB = "easy-vqa:train,fashion-mnist:train"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smol-llava")
    ap.add_argument("--target", type=float, default=0.5)
    ap.add_argument("--presets", default="paper,default")
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("runs/benchmarks/search_cost"))
    args = ap.parse_args(argv)
    presets = [p for p in args.presets.split(",") if p]

    import ray

    from efficientllava.actors.config import RunConfig
    from efficientllava.actors.run import run_search
    from efficientllava.prune_engine.data.calibration import calibration_vqa, text_batches, vqa_batches
    from efficientllava.prune_engine.models.loading import load_model, load_processor
    from efficientllava.prune_engine.pipeline import LayerwisePruner

    processor = load_processor(args.model)
    llava = hasattr(processor, "image_processor")
    mm_calib = MM_CALIB if llava else None
    runs_cfg = {p: RunConfig.load(preset=p, overrides={
        "search.target": args.target, "search.seed": args.seed, "engine.model": args.model,
        "data.mm_calib": mm_calib, "ray.actors": args.actors, "ray.num_cpus": args.actors}) for p in presets}
    ref = runs_cfg["paper"].data if "paper" in runs_cfg else next(iter(runs_cfg.values())).data
    torch.set_num_threads(1)
    batches = text_batches(processor, ref.calib, ref.nsamples, ref.seqlen, ref.seed)
    if llava:
        batches += vqa_batches(processor, calibration_vqa(mm_calib, ref.mm_samples, ref.seed))
    adapter, _ = load_model(args.model, processor=processor)
    pruner = LayerwisePruner(adapter, batches, progress=False)
    t0 = time.perf_counter()
    pruner.prune(args.target)
    one_pass = time.perf_counter() - t0
    del pruner, adapter
    print(f"one sequential pass at {args.target} ({ref.nsamples}x{ref.seqlen} text tokens"
          f"{f' + {ref.mm_samples} image-text samples' if llava else ''}): {one_pass:.1f} s", flush=True)

    shutil.rmtree(args.work, ignore_errors=True)
    runs = {}
    for name, run in runs_cfg.items():
        t0 = time.perf_counter()
        summary = run_search(run, str(args.work / name), progress=False, log=lambda m: print("  " + m, flush=True))
        wall = time.perf_counter() - t0
        stats = summary["stats"]
        s, e, d = run.search, run.engine, run.data
        runs[name] = {"wall_s": wall, "candidates": stats["candidates"], "screened": stats["screened"],
                      "gradients": stats["gradients"], "per_minute": 60.0 * stats["candidates"] / wall,
                      "x_one_pass": wall / one_pass, "fitness": summary["policy"]["fitness"],
                      "policy": summary["policy"]["levels"],
                      "settings": {"population": s.population, "generations": s.generations, "elites": s.elites,
                                   "offspring": s.offspring, "projector_steps": s.projector_steps,
                                   "calibration": f"{d.nsamples}x{d.seqlen}", "fitness_text": e.fitness_nsamples,
                                   "mm_samples": d.mm_samples, "screen": [e.screen_nsamples, e.screen_mm_samples],
                                   "loss": e.loss, "mode": e.mode}}
        print(f"{name}: {wall:.1f} s = {wall / one_pass:.1f}x one pass, {stats['candidates']} candidate evaluations "
              f"({stats['screened']} screened), {runs[name]['per_minute']:.1f} per minute", flush=True)
    ray.shutdown()

    rows = [["one sequential SparseGPT pass", round(one_pass, 1), 1.0, "-", "-", "-"]]
    for name, r in runs.items():
        rows.append([f"search, preset {name}", round(r["wall_s"], 1), round(r["x_one_pass"], 1), r["candidates"],
                     r["screened"], round(r["per_minute"], 1)])
    table = markdown_table(["what", "wall s", "x one pass", "candidate evaluations", "of them screened",
                            "evaluations per minute"], rows)
    notes = (f"{args.model}, target {args.target}, seed {args.seed}, {args.actors} evaluator actors with one thread "
             f"each on a local cluster; the one pass uses the paper preset's calibration data ({ref.nsamples}x"
             f"{ref.seqlen} wiki:calib tokens + {ref.mm_samples} image-text samples of {mm_calib}). "
             "Search rows include start-up, the level database, projector steps and the final sequential prune + "
             "save. Preset settings: " + "; ".join(f"{n}: {r['settings']}" for n, r in runs.items()))
    print("\n" + table + "\n\n" + notes)
    write_results("search_cost", f"Search cost on {args.model}", table,
                  {"seed": args.seed, "settings": vars(args) | {"work": str(args.work)}, "one_pass_s": one_pass,
                   "runs": runs, "llava": llava}, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
