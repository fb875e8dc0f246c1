"""What a whole search costs, against one sequential SparseGPT pass and against naive pruning.

    .venv/bin/python benchmarks/search_cost.py [--model smol-llava --population 8 --generations 2]

Runs, with the same proxy data, seed and ONE evaluator actor with one thread (so wall time is
compute time and nothing competes on this 2-core machine):
  * one layer-sequential SparseGPT pass at the target (in process, one thread);
  * the search in sequential mode with prefix reuse (candidates sorted, shared leading blocks
    kept from the previous candidate);
  * the same search without prefix reuse: every candidate pruned from scratch ("naive");
  * the search in database mode (every block pruned at every level once per projector version,
    candidates stitched from the cache).
Every search ends with the sequential re-prune of its best policy and includes actor start-up,
the projector steps (LLaVA) and the final save. Writes benchmarks/results/search_cost.md/.json.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import RESULTS, markdown_table, write_results  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smol-llava")
    ap.add_argument("--target", type=float, default=0.5)
    ap.add_argument("--population", type=int, default=8)
    ap.add_argument("--generations", type=int, default=2)
    ap.add_argument("--elites", type=int, default=3)
    ap.add_argument("--nsamples", type=int, default=16)
    ap.add_argument("--seqlen", type=int, default=128)
    ap.add_argument("--mm-samples", type=int, default=24, help="easy-vqa proxy samples (LLaVA models only)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("runs/benchmarks/search_cost"))
    ap.add_argument("--render-only", action="store_true",
                    help="rewrite the table and notes from benchmarks/results/search_cost.json (no runs)")
    args = ap.parse_args(argv)
    if args.render_only:
        import json

        data = json.loads((RESULTS / "search_cost.json").read_text())
        saved = argparse.Namespace(**data["settings"])
        write(saved, data["one_pass_s"], data["runs"], saved.model == "smol-llava" or data.get("llava", False),
              machine=data["machine"])
        return 0

    import ray

    from actors.config import RunConfig
    from actors.run import run_search
    from prune_engine.calibration import load_vqa, text_batches, vqa_batches
    from prune_engine.models import load_model, load_processor
    from prune_engine.pipeline import SequentialPruner

    torch.set_num_threads(1)
    processor = load_processor(args.model)
    llava = hasattr(processor, "image_processor")
    mm_calib = "easy-vqa:train" if llava else None
    batches = text_batches(processor, "wiki:calib", args.nsamples, args.seqlen, args.seed)
    if llava:
        batches += vqa_batches(processor, load_vqa(mm_calib, limit=args.mm_samples, seed=args.seed))
    adapter, _ = load_model(args.model, processor=processor)
    pruner = SequentialPruner(adapter, batches, progress=False)
    t0 = time.perf_counter()
    pruner.prune(args.target)
    one_pass = time.perf_counter() - t0
    del pruner, adapter
    print(f"one sequential pass at {args.target}: {one_pass:.1f} s")

    ray.init(num_cpus=1, namespace="efficientllava", include_dashboard=False, log_to_driver=False)
    shutil.rmtree(args.work, ignore_errors=True)
    runs = {}
    for name, mode, reuse in (("sequential + prefix reuse", "sequential", True),
                              ("sequential, no reuse (naive)", "sequential", False),
                              ("database mode", "database", True)):
        run = RunConfig.load(overrides={
            "search.target": args.target, "search.population": args.population,
            "search.generations": args.generations, "search.elites": args.elites, "search.seed": args.seed,
            "engine.model": args.model, "engine.nsamples": args.nsamples, "engine.seqlen": args.seqlen,
            "engine.mm_calib": mm_calib, "engine.mm_samples": args.mm_samples, "engine.mode": mode,
            "engine.prefix_reuse": reuse, "ray.actors": 1,
        })
        t0 = time.perf_counter()
        summary = run_search(run, str(args.work / mode / str(reuse)), progress=False, log=lambda m: None)
        wall = time.perf_counter() - t0
        stats = summary["stats"]
        runs[name] = {"wall_s": wall, "candidates": stats["candidates"], "blocks_run": stats["blocks_run"],
                      "final_prune_s": summary["final"]["seconds"], "fitness": summary["policy"]["fitness"],
                      "policy": summary["policy"]["levels"]}
        print(f"{name}: {wall:.1f} s, {stats['candidates']} candidates evaluated, {stats['blocks_run']} block passes")
    ray.shutdown()

    write(args, one_pass, runs, llava)
    return 0


def write(args, one_pass: float, runs: dict, llava: bool, machine: dict | None = None) -> None:
    blocks = 30 if args.model in ("smollm2", "smol-llava") else None
    rows = [["one sequential SparseGPT pass", round(one_pass, 1), 1, blocks or "-", 1.0, "-"]]
    for name, r in runs.items():
        rows.append([name, round(r["wall_s"], 1), r["candidates"], r["blocks_run"], r["wall_s"] / one_pass,
                     r["wall_s"] / r["candidates"]])
    table = markdown_table(["what", "wall s", "candidates", "block passes", "x one pass", "s per candidate"], rows)
    reuse, naive, db = (runs[k]["wall_s"] for k in ("sequential + prefix reuse", "sequential, no reuse (naive)",
                                                     "database mode"))
    same = runs["sequential + prefix reuse"]["policy"] == runs["sequential, no reuse (naive)"]["policy"]
    notes = (f"{args.model}, target {args.target}, population {args.population}, {args.generations} generations, "
             f"proxy {args.nsamples}x{args.seqlen} wiki:calib tokens" + (f" + {args.mm_samples} easy-vqa samples "
                                                                         "(projector step on)" if llava else "")
             + f", seed {args.seed}, one actor with one thread. Prefix reuse vs naive: {reuse / naive:.2f}x the "
             f"time ({'same' if same else 'DIFFERENT'} best policy); database mode vs naive: {db / naive:.2f}x. "
             "Every search row includes actor start-up, projector steps and the final sequential prune + save. "
             "Database mode prunes every block at every level from dense-model inputs (docs/method.md §1), so its "
             "candidates are approximations that the final sequential prune replaces.")
    print("\n" + table + "\n\n" + notes)
    write_results("search_cost", f"Search cost on {args.model}", table,
                  {"seed": args.seed, "settings": vars(args) | {"work": str(args.work)}, "one_pass_s": one_pass,
                   "runs": runs, "llava": llava, **({"machine": machine} if machine else {})}, notes)


if __name__ == "__main__":
    sys.exit(main())
