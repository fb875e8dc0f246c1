"""Ablation of EfficientLLaVA on smol-llava (paper Tables 1-2), at target sparsity 0.5 and 0.7.

    .venv/bin/python benchmarks/ablation.py [--targets 0.5,0.7] [--population 8 --generations 3]

Variants (same proxy data and seed for all; see benchmarks/variants.py): Uniform SparseGPT,
OWL-style per-block ratios, Auto w/o Gen (eta = 0), Full (eta = 0.5), No Evo (no projector
update), Evo w/o UB (projector update with all c_m equal). Metrics on held-out data: achieved
mean sparsity of the decoder's linears, Wikipedia perplexity (wiki:eval articles, never used for
calibration), easy-vqa and Fashion-MNIST test accuracy (constrained choice, seeded subsets).
Finished variants are cached under --work, so an interrupted run continues where it stopped.
Writes benchmarks/results/ablation.md and .json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import markdown_table, write_results  # noqa: E402
from benchmarks.variants import LABELS, SEARCHES, Settings, ray_started, run_variant, seed_from_demo  # noqa: E402

VARIANTS = ["uniform", "owl", *SEARCHES]


def settings_from_args(args) -> Settings:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return Settings(population=args.population, generations=args.generations, elites=args.elites, mode=args.mode,
                    nsamples=args.nsamples, seqlen=args.seqlen, mm_samples=args.mm_samples,
                    eval_segments=args.eval_segments, eval_seqlen=args.eval_seqlen, eval_vqa=args.eval_vqa, seed=args.seed, actors=args.actors,
                    model=args.model)


def add_common_args(ap: argparse.ArgumentParser) -> None:
    d = Settings()
    ap.add_argument("--model", default=d.model)
    ap.add_argument("--population", type=int, default=d.population)
    ap.add_argument("--generations", type=int, default=d.generations)
    ap.add_argument("--elites", type=int, default=d.elites)
    ap.add_argument("--mode", default=d.mode, choices=["database", "sequential"])
    ap.add_argument("--nsamples", type=int, default=d.nsamples, help="proxy text segments")
    ap.add_argument("--seqlen", type=int, default=d.seqlen, help="tokens per proxy segment")
    ap.add_argument("--mm-samples", type=int, default=d.mm_samples, help="image-text proxy samples (easy-vqa train)")
    ap.add_argument("--eval-segments", type=int, default=d.eval_segments, help="held-out text segments")
    ap.add_argument("--eval-seqlen", type=int, default=d.eval_seqlen, help="tokens per held-out segment")
    ap.add_argument("--eval-vqa", type=int, default=d.eval_vqa, help="held-out questions per VQA set")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--actors", type=int, default=None, help="evaluator actors (default: one per CPU)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads of this process (pruning baselines, evaluation); default: torch's")
    ap.add_argument("--work", type=Path, default=Path("runs/benchmarks"), help="run directories and the cache")
    ap.add_argument("--from-demo", type=Path, default=None,
                    help="reuse dense/uniform/searched of a finished `efficientllava demo` run with the same settings")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default="0.5,0.7")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    add_common_args(ap)
    args = ap.parse_args(argv)
    targets = [float(t) for t in args.targets.split(",")]
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        ap.error(f"unknown variants {sorted(unknown)}; choose from {VARIANTS}")
    settings = settings_from_args(args)
    if args.from_demo:
        seed_from_demo(args.from_demo, settings, args.work)
    ray_started(settings)
    t0 = time.perf_counter()
    print(f"ablation on {settings.model}: targets {targets}, variants {variants}")
    dense = run_variant("dense", None, settings, args.work)
    results = {t: {v: run_variant(v, t, settings, args.work, log=print) for v in variants} for t in targets}
    headers = ["target", "variant", "sparsity", "held-out ppl", "easy-vqa acc", "Fashion-MNIST acc", "F", "seconds"]
    rows = [["-", LABELS["dense"], dense["sparsity"], dense["ppl"], dense["easy_vqa"], dense["fashion_mnist"], "-",
             "-"]]
    for t, by_variant in results.items():
        for v, r in by_variant.items():
            rows.append([t, LABELS[v], r["sparsity"], r["ppl"], r["easy_vqa"], r["fashion_mnist"],
                         r.get("fitness", "-"),
                         "-" if r["prune_seconds"] != r["prune_seconds"] else round(r["prune_seconds"])])
    table = markdown_table(headers, rows)
    print("\n" + table)
    verdict = []
    for t, by_variant in results.items():
        if "uniform" in by_variant and "full" in by_variant:
            u, f = by_variant["uniform"], by_variant["full"]
            better = [m for m, lower in (("ppl", True), ("easy_vqa", False), ("fashion_mnist", False))
                      if (f[m] < u[m] if lower else f[m] > u[m])]
            verdict.append(f"At {t}: Full beats Uniform on {', '.join(better) if better else 'nothing'}"
                           f" (ppl {u['ppl']:.2f} -> {f['ppl']:.2f}, easy-vqa {u['easy_vqa']:.3f} -> "
                           f"{f['easy_vqa']:.3f}, Fashion-MNIST {u['fashion_mnist']:.3f} -> {f['fashion_mnist']:.3f}).")
    notes = (f"Settings: {settings.model_dump_json()}. Searches: population {settings.population}, "
             f"{settings.generations} generations, {settings.mode} mode; proxy data {settings.nsamples}x"
             f"{settings.seqlen} tokens of {settings.calib} + {settings.mm_samples} {settings.mm_calib} samples; "
             f"held-out: {settings.eval_segments}x{settings.eval_seqlen} tokens of {settings.eval_text}, "
             f"{settings.eval_vqa} questions per VQA set (seed {settings.seed}). 'seconds' = search (or prune) wall "
             f"time incl. the final sequential prune.\n\n" + "\n".join(verdict))
    reused = sorted({f"{v} at {t}" for t, by in results.items() for v, r in by.items() if r.get("from_demo")})
    if reused or dense.get("from_demo"):
        notes += (f"\n\nTaken from the `efficientllava demo` run with identical settings (same computation; 2 actors, "
                  f"so its seconds are not comparable with the 1-actor runs): dense, {', '.join(reused)}.")
    notes += ("\n\nF = -L_proxy - eta*G is comparable only between runs with the same eta. Identical rows for "
              "Auto w/o Gen and Full mean both searches chose the same policy and projector.")
    print("\n" + "\n".join(verdict))
    write_results("ablation", f"Ablation on {settings.model} (Tables 1-2)", table,
                  {"seed": settings.seed, "settings": settings.model_dump(), "dense": dense,
                   "results": {str(t): r for t, r in results.items()}, "seconds": time.perf_counter() - t0},
                  notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
