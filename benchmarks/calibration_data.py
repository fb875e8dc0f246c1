"""How much calibration data uniform SparseGPT needs on smol-llava: held-out quality and its spread
over calibration seeds, per amount of text and image-text calibration data.

    .venv/bin/python benchmarks/calibration_data.py [--target 0.7] [--seeds 0,1,2]

A user gets one calibration draw, so the spread between draws matters as much as the mean: with
too few image-text samples the pruned model's VQA accuracy depends on which samples were drawn.
Every configuration prunes uniformly at --target with calibration seeds --seeds and is scored on the
same held-out data as benchmarks/ablation.py (64x256 wiki:eval tokens, 1,000 questions per VQA set);
rows are cached with the ablation's (benchmarks/variants.py), so a row shared with it is not re-run.
Writes benchmarks/results/calibration_data.md and .json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import markdown_table, write_results  # noqa: E402
from benchmarks.variants import Settings, over_seeds, run_variant  # noqa: E402

# text segments x tokens + image-text samples (half easy-vqa, half Fashion-MNIST training splits)
CONFIGS = {
    "16x128 + 16": {"nsamples": 16, "seqlen": 128, "mm_samples": 16},
    "16x128 + 64": {"nsamples": 16, "seqlen": 128, "mm_samples": 64},
    "32x256 + 64": {"nsamples": 32, "seqlen": 256, "mm_samples": 64},
    "32x256 + 64 balanced": {"nsamples": 32, "seqlen": 256, "mm_samples": 64, "mm_balance": True},
    "32x256 + 256": {"nsamples": 32, "seqlen": 256, "mm_samples": 256},
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", type=float, default=0.7)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"a subset of {list(CONFIGS)}")
    ap.add_argument("--name", default="calibration_data",
                    help="results file benchmarks/results/<name>.md|json (an experiment beside the table)")
    ap.add_argument("--work", type=Path, default=Path("runs/benchmarks"), help="run directories and the cache")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    names = args.configs.split(",")
    if unknown := set(names) - set(CONFIGS):
        ap.error(f"unknown configs {sorted(unknown)}; choose from {list(CONFIGS)}")
    base = Settings()
    t0 = time.perf_counter()
    rows, results = [], {}
    for name in names:
        settings = base.model_copy(update={"data": {**base.data, **CONFIGS[name]}})
        r = over_seeds([run_variant("uniform", args.target, settings.model_copy(update={"seed": s}), args.work)
                        for s in seeds])
        results[name] = r
        rows.append([name, ",".join(map(str, seeds)), f"{r['ppl']:.1f} ± {r['ppl_sd']:.1f}",
                     f"{r['easy_vqa']:.3f} ± {r['easy_vqa_sd']:.3f}",
                     f"{r['fashion_mnist']:.3f} ± {r['fashion_mnist_sd']:.3f}",
                     " / ".join(f"{x['easy_vqa']:.3f}" for x in r["per_seed"]),
                     f"{sum(x['prune_seconds'] for x in r['per_seed']) / len(seeds):.0f}"])
    headers = ["calibration (text segments x tokens + image-text samples)", "seeds", "held-out ppl",
               "easy-vqa acc", "Fashion-MNIST acc", "easy-vqa per seed", "prune seconds"]
    table = markdown_table(headers, rows)
    print("\n" + table)
    notes = (f"Uniform SparseGPT at {args.target} on {base.model}, calibration text {base.data['calib']}, image-text "
             f"{base.data['mm_calib']} (an even share of each; 'balanced': each drawn evenly over its answers). "
             f"'mean ± sd' over calibration seeds {seeds}. "
             f"Held-out: {base.heldout.segments}x{base.heldout.seqlen} tokens of {base.heldout.text}, "
             f"{base.heldout.vqa} questions per VQA set (seed {base.heldout.seed}), the same for every row. "
             "'prune seconds' includes loading the model and data.")
    write_results(args.name, f"Calibration data vs uniform SparseGPT at {args.target} ({base.model})", table,
                  {"target": args.target, "seeds": seeds, "configs": {n: CONFIGS[n] for n in names},
                   "heldout": base.heldout.model_dump(), "results": results, "seconds": time.perf_counter() - t0},
                  notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
