"""The eta sweep (0, 0.1, 0.25, 0.5, 1.0) on smol-llava as a Ray Tune experiment.

    .venv/bin/python benchmarks/eta_sweep.py [--preset default --generations 3 --eval-vqa 100]

A thin wrapper around the user-facing command (same code path, actors/tune.py):

    efficientllava tune --model smol-llava --eta 0,0.1,0.25,0.5,1.0 --preset default \\
        --mm-calib easy-vqa:train,fashion-mnist:train --storage runs/tune --name eta-sweep

One trial = one search run, scored on the validation split (wiki:val perplexity, easy-vqa and
Fashion-MNIST validation accuracy, and the shifted validation sets: Python-docs perplexity, the
validation wordings); test data is never read. Interrupted? Run the same command again: Tune restores the experiment
(finished trials kept, an unfinished search resumed from its checkpoint). Writes
benchmarks/results/eta_sweep.md and .json (--results: another name, e.g. for another calibration seed).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import write_results  # noqa: E402


def against_default(rows: list[dict], metrics: list[str], default_eta: float) -> dict[str, dict[str, float]]:
    """Each other trial against the default eta's: perplexities as % change (+: higher, worse), accuracies in
    points (+: better). Empty when the default eta is not among the finished trials."""
    base = next((r for r in rows if r["eta"] == default_eta), None)
    if base is None:
        return {}
    return {f"{r['eta']:g}": {m: (100 * (r[m] - base[m]) / base[m] if m.startswith("ppl") else 100 * (r[m] - base[m]))
                              for m in metrics}
            for r in rows if r is not base}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smol-llava")
    ap.add_argument("--eta", default="0,0.1,0.25,0.5,1.0")
    ap.add_argument("--target", type=float, default=0.5)
    ap.add_argument("--preset", default="default", help="search settings (actors.config.PRESETS)")
    ap.add_argument("--generations", type=int, default=None, help="default: the preset's")
    ap.add_argument("--time-budget", type=float, default=None, metavar="S",
                    help="search wall-clock seconds per trial (search.time_budget_s; the default preset then sizes "
                         "its screening to fit, as the demo does; default: none, the preset's children per generation)")
    ap.add_argument("--eval-segments", type=int, default=16)
    ap.add_argument("--eval-vqa", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--actors", type=int, default=None, help="evaluator actors per trial (default: one per CPU)")
    ap.add_argument("--max-concurrent", type=int, default=1, help="trials at once")
    ap.add_argument("--storage", default="runs/tune")
    ap.add_argument("--name", default="eta-sweep-benchmark", help="Tune experiment name (under --storage)")
    ap.add_argument("--results", default="eta_sweep",
                    help="results file benchmarks/results/<results>.md|json (another name for another seed's sweep)")
    ap.add_argument("--finished-only", action="store_true",
                    help="run nothing: write the trials of the experiment that have finished (a partial sweep, "
                         "labelled as such; at least two finished trials)")
    args = ap.parse_args(argv)

    from efficientllava.actors.config import RunConfig, setting_default
    from efficientllava.actors.tune import NOT_FINISHED, TuneJob, finished_rows, format_rows, run_tune

    run = RunConfig.load(preset=args.preset, overrides={
        "search.target": args.target, "search.generations": args.generations, "search.seed": args.seed,
        "search.time_budget_s": args.time_budget,
        "engine.model": args.model, "data.mm_calib": "easy-vqa:train,fashion-mnist:train",
        "ray.actors": args.actors})
    from efficientllava.prune_engine.config import HeldoutConfig

    job = TuneJob(run=run.sections(without=("search.eta",)), etas=tuple(float(e) for e in args.eta.split(",")),
                  storage=args.storage, name=args.name, max_concurrent=args.max_concurrent,
                  heldout=HeldoutConfig(split="val", segments=args.eval_segments, vqa=args.eval_vqa,
                                        seed=args.seed))
    t0 = time.perf_counter()
    rows = finished_rows(job) if args.finished_only else run_tune(job)
    unfinished = [r["eta"] for r in rows if r["error"] == NOT_FINISHED]
    if args.finished_only:  # a partial sweep, said so; the unfinished trials are left out of every comparison
        if len(rows) - len(unfinished) < 2:
            print(f"eta sweep: fewer than two trials have finished in {job.experiment_dir}; nothing written",
                  file=sys.stderr)
            return 1
        rows = [r for r in rows if r["error"] != NOT_FINISHED]
    elif unfinished:  # nothing written: a partial sweep is not a result
        print(f"eta sweep interrupted before the trials eta = {', '.join(f'{e:g}' for e in unfinished)} finished; "
              f"run the same command again to resume it (finished trials are kept). Nothing written.",
              file=sys.stderr)
        return 1
    from efficientllava.search.checkpoint import RunStore

    for r in rows:  # what each search did: its generations, and its screened children per generation
        if r["error"] is None and RunStore(r["run_dir"]).exists():
            state, history, _ = RunStore(r["run_dir"]).load()
            screened = history.filter(pa.compute.equal(history["fidelity"], "screen"))["generation"].to_pylist()
            r["generations"] = state["generation"]
            r["children_per_generation"] = [screened.count(t) for t in range(1, state["generation"])]
    table = format_rows(rows, job.metric)
    print("\n" + table)
    ok = [r for r in rows if r["error"] is None]
    from efficientllava.actors.tune import METRICS

    metrics = [m for m in METRICS if all(r.get(m) is not None for r in ok)]
    best = {m: (min if m.startswith("ppl") else max)(ok, key=lambda r: r[m])["eta"] for m in metrics}
    tied = [m for m in metrics if len({r[m] for r in ok}) == 1]
    default_eta = setting_default("search.eta", args.preset)
    vs_default = against_default(ok, metrics, default_eta)
    policies = {tuple(json.loads(Path(r["run_dir"], "policy.json").read_text())["levels"]) for r in ok}
    partial = (f"PARTIAL SWEEP: the trials eta = {', '.join(f'{e:g}' for e in unfinished)} did not finish and are "
               "left out (written with --finished-only). " if unfinished else "")
    notes = (partial + "Validation split only (test data never read). Best eta by "
             + "; by ".join(f"validation {m}: {best[m]:g}" for m in metrics)
             + (f" (all {len(ok)} trials tie on {', '.join(tied)}: the first is named)" if tied else "")
             + (f". Against the default eta {default_eta:g}: " + "; ".join(
                 f"eta {e}: " + ", ".join(f"{m} {d:+.1f}{'%' if m.startswith('ppl') else ' points'}"
                                          for m, d in diffs.items()) for e, diffs in vs_default.items())
                if vs_default else "")
             + f". Distinct best policies over the trials: {len(policies)}. Settings: {args.model}, target {args.target}, "
             f"preset {args.preset} ({run.search.population} x {run.search.generations} generations, "
             + (f"screening sized to a {args.time_budget:g} s search budget (at most {run.search.offspring} children; "
                f"per trial, children per generation: "
                + "; ".join(f"eta {r['eta']:g}: {r.get('children_per_generation')}" for r in ok) + ")"
                if args.time_budget else f"{run.search.offspring} screened children per generation")
             + f", {run.engine.mode} mode, proxy "
             f"{run.data.nsamples}x{run.data.seqlen} wiki:calib + {run.data.mm_samples} image-text), validation "
             f"{args.eval_segments}x256 tokens per text set and {args.eval_vqa} questions per VQA set, seed {args.seed}. "
             f"Tune experiment: {job.experiment_dir} (restore: run the same command again).")
    print(notes)
    write_results(args.results, f"eta sweep on {args.model} (Ray Tune)", table,
                  {"seed": args.seed, "settings": vars(args), "rows": rows, "best": best, "vs_default": vs_default,
                   "unfinished": unfinished,
                   "seconds": time.perf_counter() - t0}, notes)
    return 0 if len(ok) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
