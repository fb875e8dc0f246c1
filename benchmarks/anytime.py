"""Anytime curves: held-out quality of the best policy so far against the search's wall time (issue 26).

    .venv/bin/python -m benchmarks.anytime [--presets default,quality,paper --targets 0.5,0.7 --eval-split val]

For each preset and target one search runs generation by generation: it is resumed with one more
generation each time (search.generations is a setting a resumed run may change; the search is then
the one an uninterrupted run makes, search/driver.py), and after each step its best policy so far is
pruned sequentially with the projector of that moment (the run's export) and scored on held-out data.
x: the search's own wall time at that generation (the checkpoint's elapsed_s: actor start-up and the
level database are not in it; they are reported once per run); y: held-out perplexity and VQA
accuracy, with uniform SparseGPT on the same calibration data as the reference. A point already
measured is cached (`--work`), so an interrupted run continues. Writes benchmarks/results/<name>.md,
.json and .png.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.ablation import add_common_args, settings_from_args  # noqa: E402
from benchmarks.common import RESULTS, markdown_table, write_results  # noqa: E402
from benchmarks.variants import METRICS, lower_is_better, ray_started, run_variant  # noqa: E402


class AnytimeError(RuntimeError):
    """A run directory that cannot give the asked point (one line)."""


def checkpoint_generation(run_dir: Path) -> int | None:
    """The generations a run directory's checkpoint has done (None: no checkpoint)."""
    from efficientllava.search.checkpoint import RunStore

    store = RunStore(str(run_dir))
    return store.load()[0]["generation"] if store.exists() else None


def search_point(settings, target: float, run_dir: Path, generations: int) -> dict:
    """Search (or resume) `run_dir` up to `generations` generations of the settings' search at `target` and
    export its best policy so far; the search's elapsed time and what it evaluated."""
    from efficientllava.actors.run import resume_search, run_search
    from efficientllava.search.checkpoint import RunStore

    done = checkpoint_generation(run_dir)
    if done is not None and done > generations:
        raise AnytimeError(f"{run_dir} is at generation {done}, past {generations}: remove it to measure again")
    t0 = time.perf_counter()
    if done is None:
        run = settings.run_config(target, {"search.generations": generations})
        summary = run_search(run, str(run_dir), progress=False, log=lambda m: None)
    else:
        summary = resume_search(str(run_dir), generations=generations, progress=False, log=lambda m: None)
    state, history, _ = RunStore(str(run_dir)).load()
    fresh = [c for c in history["cached"].to_pylist() if not c]
    return {"generation": state["generation"], "search_s": state["elapsed_s"], "call_s": time.perf_counter() - t0,
            "evaluations": len(fresh), "model_dir": summary["model_dir"], "fitness": summary["policy"]["fitness"],
            "ratios": summary["policy"]["ratios"]}


def measured_point(settings, target: float, work: Path, generations: int, label: str) -> dict:
    """The settings' search at `target` resumed to `generations`, its best policy so far exported and scored on
    held-out data; cached as `anytime-<key>-g<generations>.json` in `work` (the run directory beside it), so an
    interrupted benchmark continues and benchmarks sharing a work directory share the points of one search."""
    from efficientllava.prune_engine.evaluation.heldout import heldout_metrics

    key = settings.key("preset", target)  # the preset as it is with the settings' overrides (variants.SEARCHES)
    cached = work / f"anytime-{key}-g{generations}.json"
    if cached.exists():
        return json.loads(cached.read_text())
    point = search_point(settings, target, work / f"anytime-{key}", generations)
    point.update(preset=settings.preset, search=settings.search, target=target, seed=settings.seed,
                 **heldout_metrics(point.pop("model_dir"), settings.heldout))
    cached.write_text(json.dumps(point, indent=2))
    print(f"  {label} at {target:g}, generation {generations}: {point['search_s']:.0f} s searched, "
          f"{point['evaluations']} evaluations, ppl {point['ppl']:.2f}, VQA {value(point, 'vqa'):.3f}", flush=True)
    return point


def measured_curve(settings, target: float, work: Path, generations: list[int],
                   label: str) -> tuple[list[dict], list[str]]:
    """The points of one search at the asked generations, in order, and the ones it can no longer give: a point
    neither cached nor reachable because the run is past it (measured later; `AnytimeError`) is left out and
    said, so the curve's other points are still written."""
    rows, missing = [], []
    for g in generations:
        try:
            rows.append(measured_point(settings, target, work, g, label))
        except AnytimeError as e:
            missing.append(f"{label} at {target:g}, generation {g} ({e})")
            print(f"  not measured: {missing[-1]}", flush=True)
    return rows, missing


def plot(points: dict, uniform: dict, path: Path) -> None:
    """One panel per target and metric (held-out perplexity; mean VQA accuracy): a line per preset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = sorted({t for _, t in points})
    fig, axes = plt.subplots(2, len(targets), figsize=(5.5 * len(targets), 7), squeeze=False)
    for col, target in enumerate(targets):
        for row, (metric, title) in enumerate((("ppl", "held-out perplexity (lower is better)"),
                                               ("vqa", "mean VQA accuracy (easy-vqa, Fashion-MNIST)"))):
            ax = axes[row][col]
            for (preset, t), rows in sorted(points.items()):
                if t == target:
                    ax.plot([r["search_s"] / 60 for r in rows], [value(r, metric) for r in rows], "o-", label=preset)
            ax.axhline(value(uniform[target], metric), color="grey", ls="--", lw=1, label="uniform SparseGPT")
            ax.set_title(f"{title}, target {target:g}", fontsize=10)
            ax.set_xlabel("search wall time (min)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def point_cells(row: dict, uniform: dict) -> list:
    """A row's held-out metrics as table cells (perplexity to 2 decimals, accuracy to 3), then its perplexity as a
    multiple of uniform SparseGPT's on the same calibration data."""
    return [*[round(row[m], 2 if lower_is_better(m) else 3) for m in METRICS], round(row["ppl"] / uniform["ppl"], 3)]


def value(row: dict, metric: str) -> float:
    return (row["easy_vqa"] + row["fashion_mnist"]) / 2 if metric == "vqa" else row[metric]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="default,quality,paper", help="search presets (actors.config.PRESETS)")
    ap.add_argument("--targets", default="0.5,0.7")
    ap.add_argument("--at", default=None,
                    help="generations to measure, e.g. 1,2,3,5,10, each capped at the preset's own generations "
                         "(default: every generation of the preset)")
    ap.add_argument("--name", default="anytime", help="results file name")
    add_common_args(ap)
    ap.set_defaults(work=Path("runs/benchmarks/anytime"), eval_split="val")
    args = ap.parse_args(argv)
    from efficientllava.actors.config import PRESETS

    presets = [p for p in args.presets.split(",") if p]
    if unknown := [p for p in presets if p not in PRESETS]:
        ap.error(f"unknown presets {unknown}; choose from {', '.join(PRESETS)}")
    targets = [float(t) for t in args.targets.split(",")]
    t_start = time.perf_counter()
    points: dict[tuple[str, float], list[dict]] = {}
    missing: list[str] = []
    uniform: dict[float, dict] = {}
    for preset in presets:
        args.preset = preset
        settings = settings_from_args(args)
        ray_started(settings)
        for target in targets:
            uniform.setdefault(target, run_variant("uniform", target, settings, args.work))
            last = settings.run_config(target).search.generations  # the preset's own budget: no point past it
            at = {min(int(g), last) for g in args.at.split(",")} if args.at else range(1, last + 1)
            points[(preset, target)], left = measured_curve(settings, target, args.work, sorted(set(at)), preset)
            missing += left
    headers = ["preset", "target", "generation", "search min", "evaluations", *METRICS, "ppl / uniform"]
    table_rows = [[p, t, r["generation"], round(r["search_s"] / 60, 1), r["evaluations"], *point_cells(r, uniform[t])]
                  for (p, t), rows in sorted(points.items()) for r in rows]
    table_rows += [["uniform", t, "-", 0, 0, *point_cells(u, u)] for t, u in sorted(uniform.items())]
    table = markdown_table(headers, table_rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(points, uniform, RESULTS / f"{args.name}.png")
    notes = (f"Held-out {args.eval_split} split ({args.eval_segments}x{args.eval_seqlen} tokens per text set, "
             f"{args.eval_vqa} questions per VQA set); seed {args.seed}; one search per preset and target, resumed "
             f"generation by generation; search minutes exclude actor start-up and the level database. Generation 1 "
             f"is the first population alone (the preset's search.init; children are screened from the next "
             f"generation on). Plot: {args.name}.png."
             + (f" Not measured: {'; '.join(missing)}." if missing else ""))
    print("\n" + table + "\n\n" + notes)
    write_results(args.name, "Anytime curves: the best policy so far against search wall time", table,
                  {"seed": args.seed, "settings": {k: str(v) for k, v in vars(args).items()},
                   "points": {f"{p}@{t:g}": rows for (p, t), rows in points.items()},
                   "uniform": {f"{t:g}": u for t, u in uniform.items()}, "not_measured": missing,
                   "seconds": time.perf_counter() - t_start},
                  notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
