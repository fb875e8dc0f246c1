"""Accuracy vs sparsity on smol-llava (paper Figure 1): uniform SparseGPT vs the EfficientLLaVA search.

    .venv/bin/python benchmarks/accuracy_vs_sparsity.py [--targets 0.3,0.4,0.5,0.6,0.7]

At each target: uniform SparseGPT and the full search (eta = 0.5, projector evolution), same
proxy data and seed (settings as in benchmarks/ablation.py; runs it shares with the ablation
are taken from the cache under --work). Writes benchmarks/results/accuracy_vs_sparsity.md,
.json and .png (held-out perplexity, easy-vqa and Fashion-MNIST accuracy against sparsity).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.ablation import add_common_args, settings_from_args  # noqa: E402
from benchmarks.common import RESULTS, markdown_table, write_results  # noqa: E402
from benchmarks.variants import ray_started, run_variant  # noqa: E402


def plot(dense: dict, results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = sorted(results)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, metric, title in zip(axes, ("ppl", "easy_vqa", "fashion_mnist"),
                                 ("held-out Wikipedia perplexity (lower is better)", "easy-vqa accuracy",
                                  "Fashion-MNIST accuracy")):
        for variant, style, label in (("uniform", "o--", "uniform SparseGPT"), ("full", "s-", "EfficientLLaVA search")):
            ax.plot([results[t][variant]["sparsity"] for t in targets], [results[t][variant][metric] for t in targets],
                    style, label=label)
        ax.axhline(dense[metric], color="grey", lw=0.8, ls=":", label="dense")
        ax.set_xlabel("mean sparsity of the LM's linears")
        ax.set_title(title, fontsize=10)
        if metric == "ppl":
            ax.set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default="0.3,0.4,0.5,0.6,0.7")
    add_common_args(ap)
    args = ap.parse_args(argv)
    targets = [float(t) for t in args.targets.split(",")]
    settings = settings_from_args(args)
    ray_started(settings)
    t0 = time.perf_counter()
    dense = run_variant("dense", None, settings, args.work)
    results = {t: {v: run_variant(v, t, settings, args.work) for v in ("uniform", "full")} for t in targets}
    headers = ["target", "uniform sparsity", "searched sparsity", "uniform ppl", "searched ppl", "uniform easy-vqa",
               "searched easy-vqa", "uniform FMNIST", "searched FMNIST"]
    rows = [[t, r["uniform"]["sparsity"], r["full"]["sparsity"], r["uniform"]["ppl"], r["full"]["ppl"],
             r["uniform"]["easy_vqa"], r["full"]["easy_vqa"], r["uniform"]["fashion_mnist"],
             r["full"]["fashion_mnist"]] for t, r in results.items()]
    table = markdown_table(headers, rows)
    print(f"\ndense: ppl {dense['ppl']:.2f}, easy-vqa {dense['easy_vqa']:.3f}, "
          f"Fashion-MNIST {dense['fashion_mnist']:.3f}\n" + table)
    wins = {m: sum((r["full"][m] < r["uniform"][m]) if m == "ppl" else (r["full"][m] > r["uniform"][m])
                   for r in results.values()) for m in ("ppl", "easy_vqa", "fashion_mnist")}
    notes = (f"Dense: ppl {dense['ppl']:.2f}, easy-vqa {dense['easy_vqa']:.3f}, Fashion-MNIST "
             f"{dense['fashion_mnist']:.3f}. The search beats uniform at "
             + ", ".join(f"{n} of {len(results)} targets on {m}" for m, n in wins.items())
             + f". Settings: {settings.model_dump_json()}. Plot: accuracy_vs_sparsity.png.")
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(dense, results, RESULTS / "accuracy_vs_sparsity.png")
    write_results("accuracy_vs_sparsity", f"Accuracy vs sparsity on {settings.model}", table,
                  {"seed": settings.seed, "settings": settings.model_dump(), "dense": dense,
                   "results": {str(t): r for t, r in results.items()}, "wins": wins,
                   "seconds": time.perf_counter() - t0}, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
