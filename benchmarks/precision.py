"""Held-out quality per model dtype: uniform SparseGPT at 0.5 on smol-llava pruned and evaluated in float32, bfloat16 and float16.

    .venv/bin/python benchmarks/precision.py [--sparsity 0.5] [--eval-vqa 200]

Each dtype prunes with the same calibration data and seed (engine.dtype / `prune --dtype`: the
model's weights and forward in that dtype, Hessians and OBS updates in float32) and is evaluated
in the same dtype by the held-out evaluation (prune_engine/evaluation/heldout.py): perplexity on
wiki:eval, easy-vqa and Fashion-MNIST test accuracy. The VQA noise column is one binomial standard
error of the float32 accuracy. Writes benchmarks/results/precision.md and .json. CPU only here:
half precision on a GPU has not run.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import markdown_table, write_results  # noqa: E402

DTYPES = ("float32", "bfloat16", "float16")


def report(rows: dict, args) -> None:
    """The table and result files of the dtypes measured so far (written after each one)."""
    ref = rows.get("float32")
    noise = {k: math.sqrt(ref[k] * (1 - ref[k]) / args.eval_vqa) for k in ("easy_vqa", "fashion_mnist")} if ref else {}
    headers = ["dtype", "sparsity", "held-out ppl", "ppl vs fp32", "easy-vqa", "easy-vqa vs fp32 (SE)",
               "Fashion-MNIST", "FMNIST vs fp32 (SE)", "prune s", "eval s"]
    table_rows = []
    for dtype, r in rows.items():
        rel = (r["ppl"] / ref["ppl"] - 1) if ref else float("nan")
        delta = {k: (r[k] - ref[k]) / noise[k] if ref and noise[k] > 0 else float("nan") for k in noise}
        r.update({"ppl_rel_to_fp32": rel, **{f"{k}_delta_in_se": v for k, v in delta.items()}})
        table_rows.append([dtype, r["sparsity"], r["ppl"], f"{rel:+.2%}", r["easy_vqa"],
                           f"{r['easy_vqa'] - ref['easy_vqa']:+.3f} ({delta.get('easy_vqa', float('nan')):+.1f} SE)",
                           r["fashion_mnist"],
                           f"{r['fashion_mnist'] - ref['fashion_mnist']:+.3f} "
                           f"({delta.get('fashion_mnist', float('nan')):+.1f} SE)",
                           round(r["prune_s"]), round(r["eval_s"])])
    table = markdown_table(headers, table_rows)
    print("\n" + table)
    within = {d: abs(r["ppl_rel_to_fp32"]) <= 0.02 for d, r in rows.items() if d != "float32"}
    missing = [d for d in args.dtypes.split(",") if d not in rows]
    notes = (f"Uniform SparseGPT at {args.sparsity} on {args.model}, pruned and evaluated in each dtype on this CPU "
             f"(same calibration data: {args.nsamples}x{args.seqlen} wiki:calib tokens + {args.mm_samples} "
             f"{args.mm_calib} samples, seed {args.seed}; held-out: {args.eval_segments}x{args.eval_seqlen} wiki:eval "
             f"tokens, {args.eval_vqa} questions per VQA set). SE: one binomial standard error of the float32 "
             "accuracy. Target: perplexity within 2% of float32 — "
             + ", ".join(f"{d}: {'met' if ok else 'NOT met'}" for d, ok in within.items())
             + (f". Not measured (the run had not reached them): {', '.join(missing)}" if missing else "")
             + ". CPU torch computes float16 and bfloat16 matrix products without native support here (see the "
             "ISA flags), so the seconds are not what a GPU would take; half precision has not run on a GPU.")
    write_results("precision", f"Held-out quality per dtype, uniform SparseGPT at {args.sparsity} on {args.model}",
                  table, {"seed": args.seed, "settings": vars(args), "rows": rows, "ppl_within_2pct": within}, notes)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smol-llava")
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--nsamples", type=int, default=16)
    ap.add_argument("--seqlen", type=int, default=128)
    ap.add_argument("--mm-calib", default="easy-vqa:train")
    ap.add_argument("--mm-samples", type=int, default=24)
    ap.add_argument("--eval-segments", type=int, default=16)
    ap.add_argument("--eval-seqlen", type=int, default=256)
    ap.add_argument("--eval-vqa", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtypes", default=",".join(DTYPES))
    args = ap.parse_args(argv)

    from efficientllava.prune_engine.config import DataConfig, HeldoutConfig
    from efficientllava.prune_engine.evaluation.heldout import heldout_metrics
    from efficientllava.prune_engine.prune import PruneJob, run_prune

    data = DataConfig(nsamples=args.nsamples, seqlen=args.seqlen, mm_calib=args.mm_calib,
                      mm_samples=args.mm_samples, seed=args.seed)
    heldout = HeldoutConfig(segments=args.eval_segments, seqlen=args.eval_seqlen, vqa=args.eval_vqa, seed=args.seed)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="precision-") as work:
        for dtype in args.dtypes.split(","):
            t0 = time.perf_counter()
            out = Path(work) / dtype
            run_prune(PruneJob(model=args.model, out=out, sparsity=args.sparsity, data=data, device="cpu",
                               dtype=dtype, progress=False), log=lambda m: None)
            prune_s = time.perf_counter() - t0
            row = heldout_metrics(str(out), heldout, device="cpu", dtype=dtype)
            rows[dtype] = {**row, "prune_s": prune_s, "eval_s": time.perf_counter() - t0 - prune_s}
            print(f"{dtype}: " + ", ".join(f"{k} {v:.4g}" for k, v in rows[dtype].items()), flush=True)
            report(rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
