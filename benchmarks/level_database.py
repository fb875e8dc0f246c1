"""The level database's memory and build time per level count: what a wider level set costs (issue 26).

    .venv/bin/python benchmarks/level_database.py [--model smol-llava --target 0.7 --level-sets 0.1:0.05,0.2:0.05,0.2:0.025]

One calibrated pruner (the default preset's proxy data, one torch thread: what one evaluator actor
uses), then for each level set (span:step around the target) the database is built from scratch:
every linear of every decoder block pruned at every level. Reported per level count: build seconds,
entries, the bytes the entries hold (measured, and the plan's formula levels x linear parameters x
bytes per weight, actors/cluster_plan.py), the process's resident memory after the build, and the
policy space each gives at block and at matrix granularity (log10 of levels^entries). The same
formula then sizes the database of a LLaVA-1.5-7B in float16 for each level count (not measured:
no GPU here). Writes benchmarks/results/level_database.md and .json.
"""
from __future__ import annotations

import argparse
import gc
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import markdown_table, write_results  # noqa: E402

GiB = 2**30
MM_CALIB = "easy-vqa:train,fashion-mnist:train"


def resident_bytes() -> int:
    """This process's resident set size (Linux /proc)."""
    import os

    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smol-llava")
    ap.add_argument("--target", type=float, default=0.7)
    ap.add_argument("--level-sets", default="0.1:0.05,0.2:0.05,0.2:0.025",
                    help="comma-separated span:step pairs (levels target - span .. target + span)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (an evaluator actor's default: 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nsamples", type=int, default=None, help="calibration text segments (default: the preset's)")
    ap.add_argument("--seqlen", type=int, default=None, help="tokens per segment (default: the preset's)")
    ap.add_argument("--mm-samples", type=int, default=None, help="image-text samples (default: the preset's)")
    ap.add_argument("--name", default="level_database", help="results file name")
    args = ap.parse_args(argv)

    from efficientllava.actors.cluster_plan import SHAPES, actor_plan
    from efficientllava.actors.config import RunConfig
    from efficientllava.prune_engine.calibrated import build_pruner
    from efficientllava.search import SearchConfig
    from efficientllava.search.config import ConfigError
    from efficientllava.search.policy import levels_of

    sets = []
    for pair in args.level_sets.split(","):
        try:
            span, step = (float(x) for x in pair.split(":"))
            sets.append((span, step, levels_of(SearchConfig(target=args.target, span=span, step=step))))
        except (ValueError, ConfigError) as exc:
            print(f"level_database: bad level set '{pair}' (span:step around {args.target}): {exc}", file=sys.stderr)
            return 2
    run = RunConfig.load(preset="default", overrides={
        "search.target": args.target, "search.seed": args.seed, "engine.model": args.model,
        "engine.threads": args.threads, "data.mm_calib": MM_CALIB, "data.nsamples": args.nsamples,
        "data.seqlen": args.seqlen, "data.mm_samples": args.mm_samples})
    built = build_pruner(run.engine, run.data)
    pruner, adapter = built.pruner, built.adapter
    counts = adapter.param_counts()
    linear_params = sum(sum(block.values()) for block in counts)
    width = pruner.dtype.itemsize
    blocks, matrices = adapter.num_blocks, sum(len(block) for block in counts)
    print(f"{args.model}: {blocks} blocks, {matrices} linears, {linear_params / 1e6:.1f} M linear parameters, "
          f"{width} bytes each; {run.data.nsamples} x {run.data.seqlen} text tokens + {run.data.mm_samples} image-text "
          f"samples calibrate; {args.threads} thread(s)", flush=True)
    base_rss = resident_bytes()
    rows, table = [], []
    shape = SHAPES["llava-1.5-7b"]
    for span, step, levels in sets:
        pruner.database.clear()
        gc.collect()
        start = time.perf_counter()
        pruner.build_database(levels)
        seconds = time.perf_counter() - start
        held = sum(p.weight.numel() * p.weight.element_size() for p in pruner.database.values())
        formula = len(levels) * linear_params * width
        rss = resident_bytes()
        plan = actor_plan(shape, "database", len(levels), width=2, offload=True, on_disk=True)
        row = {"span": span, "step": step, "levels": len(levels), "level_values": levels,
               "entries": len(pruner.database), "build_s": seconds, "database_bytes": held,
               "formula_bytes": formula, "rss_after_bytes": rss, "rss_at_start_bytes": base_rss,
               "log10_space_block": blocks * math.log10(len(levels)),
               "log10_space_matrix": matrices * math.log10(len(levels)),
               "llava7b_database_gib_fp16": len(levels) * shape.layers * shape.block_linear_params * 2 / GiB,
               "llava7b_disk_gib_per_actor": plan.disk_bytes / GiB}
        rows.append(row)
        table.append([f"{levels[0]:.3g}..{levels[-1]:.3g} step {step:g}", len(levels), row["entries"],
                      round(seconds, 1), round(held / GiB, 3), "yes" if held == formula else f"no ({formula / GiB:.3f})",
                      round(rss / GiB, 2), round(row["log10_space_block"], 1), round(row["log10_space_matrix"], 1),
                      round(row["llava7b_database_gib_fp16"], 1)])
        print(f"  {len(levels)} levels: built in {seconds:.1f} s, {held / GiB:.3f} GiB held, RSS {rss / GiB:.2f} GiB",
              flush=True)
    headers = ["levels", "count", "entries", "build s", "database GiB", "= formula", "RSS after GiB",
               "log10 space (block)", "log10 space (matrix)", "LLaVA-1.5-7B database GiB (fp16, formula)"]
    first = rows[0]
    notes = (f"{args.model} at target {args.target}, the default preset's calibration data (seed {args.seed}), "
             f"{args.threads} torch thread(s), database in CPU memory. Build time per level, relative to "
             f"{first['levels']} levels: "
             + ", ".join(f"{r['levels']} levels {r['build_s'] / r['levels'] / (first['build_s'] / first['levels']):.2f}x"
                         for r in rows)
             + " (the Hessians are accumulated once per block whatever the level count; each level is one OBS pass). "
             "Memory grows linearly: levels x linear parameters x bytes per weight, the formula actors/cluster_plan.py "
             "plans with (a level is stored as a dense matrix with its zeros). The LLaVA-1.5-7B column is that formula "
             "in float16, not a measurement; with engine.offload_dir the database is files on local disk, "
             f"{rows[-1]['llava7b_disk_gib_per_actor']:.0f} GiB per actor at {rows[-1]['levels']} levels "
             "(dense linears included).")
    print("\n" + markdown_table(headers, table) + "\n\n" + notes)
    write_results(args.name, f"Level database: memory and build time per level count ({args.model})",
                  markdown_table(headers, table), {"seed": args.seed, "settings": vars(args), "rows": rows}, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
