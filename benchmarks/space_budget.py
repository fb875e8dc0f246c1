"""What buys what (issue 26): the search space's granularity x its span x the search's budget, one held-out row each.

    .venv/bin/python -m benchmarks.space_budget [--preset quality --grid block:0.1,matrix:0.1,block:0.2,matrix:0.2
                                                 --at 3,8 --target 0.7 --eval-split val]

A cell of the grid is the preset's search with a level per block or per matrix (search.granularity) among the
levels p0 +- span (search.span, in the preset's steps); it runs once, resumed to each budget in --at (generations:
the search an uninterrupted run of that length makes) and exported and scored there, as benchmarks/anytime.py
measures its curves, with the same run directories and cached points (in one --work, the cell at the preset's own
settings is the preset's anytime curve). Uniform SparseGPT on the same calibration data is the reference: each row
gives its held-out metrics, its perplexity as a multiple of uniform's, the candidates evaluated and the search's
minutes. Writes benchmarks/results/<name>.md|json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.ablation import add_common_args, settings_from_args  # noqa: E402
from benchmarks.anytime import measured_point, point_cells  # noqa: E402
from benchmarks.common import markdown_table, write_results  # noqa: E402
from benchmarks.variants import METRICS, ray_started, run_variant  # noqa: E402

GRANULARITIES = ("block", "matrix")


def parse_grid(text: str) -> list[tuple[str, float]]:
    """'block:0.1,matrix:0.2' -> [("block", 0.1), ("matrix", 0.2)]; a one-line error for anything else."""
    cells = []
    for item in filter(None, text.split(",")):
        granularity, _, span = item.partition(":")
        if granularity not in GRANULARITIES:
            raise ValueError(f"grid cell '{item}': granularity must be one of {', '.join(GRANULARITIES)}")
        try:
            cells.append((granularity, float(span)))
        except ValueError:
            raise ValueError(f"grid cell '{item}': span must be a number, e.g. {granularity}:0.2") from None
    if not cells:
        raise ValueError("the grid is empty: give cells as granularity:span, e.g. block:0.1,matrix:0.2")
    return cells


def cell_rows(cells: dict, uniform: dict) -> list[list]:
    """One table row per (cell, budget): granularity, span, generations, evaluations, search minutes, the held-out
    metrics and perplexity as a multiple of uniform's; uniform's own row last."""
    rows = [[g, f"+-{span:g}", r["generation"], r["evaluations"], round(r["search_s"] / 60, 1),
             *point_cells(r, uniform)] for (g, span), points in cells.items() for r in points]
    return rows + [["uniform", "-", "-", 0, 0, *point_cells(uniform, uniform)]]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", default="block:0.1,matrix:0.1,block:0.2,matrix:0.2",
                    help="cells as granularity:span (granularity block or matrix; levels p0 +- span)")
    ap.add_argument("--at", default="3,8", help="budgets: generations at which each cell's search is scored")
    ap.add_argument("--target", type=float, default=0.7)
    ap.add_argument("--name", default="space_budget", help="results file name")
    add_common_args(ap)
    ap.set_defaults(preset="quality", eval_split="val")
    args = ap.parse_args(argv)
    try:
        grid = parse_grid(args.grid)
        budgets = sorted({int(g) for g in args.at.split(",") if g})
    except ValueError as e:
        ap.error(str(e))
    if not budgets or budgets[0] < 1:
        ap.error("--at: give generations >= 1, e.g. 3,8")
    base = settings_from_args(args)
    settings = {cell: base.model_copy(update={"search": {**base.search, "granularity": cell[0], "span": cell[1]}})
                for cell in grid}
    for cell, s in settings.items():  # every cell's levels and budget checked before anything runs
        try:
            s.run_config(args.target, {"search.generations": budgets[-1]})
        except Exception as e:  # noqa: BLE001 - a settings error, said in one line
            ap.error(f"cell {cell[0]}:{cell[1]:g}: {str(e).splitlines()[0]}")
    t_start = time.perf_counter()
    ray_started(base)
    uniform = run_variant("uniform", args.target, base, args.work)
    cells = {cell: [measured_point(s, args.target, args.work, g, f"{cell[0]} +-{cell[1]:g}") for g in budgets]
             for cell, s in settings.items()}
    headers = ["granularity", "span", "generations", "evaluations", "search min", *METRICS, "ppl / uniform"]
    table = markdown_table(headers, cell_rows(cells, uniform))
    notes = (f"Preset {args.preset} with each cell's granularity and span, target {args.target:g}, calibration seed "
             f"{args.seed}; held-out {args.eval_split} split ({args.eval_segments}x{args.eval_seqlen} tokens per text "
             f"set, {args.eval_vqa} questions per VQA set). One search per cell, scored after each budget; search "
             "minutes exclude actor start-up and the level database; evaluations count the candidates scored fresh "
             "(screened children included).")
    print("\n" + table + "\n\n" + notes)
    write_results(args.name, f"What buys what: granularity x span x budget at {args.target:g} (issue 26)", table,
                  {"seed": args.seed, "target": args.target, "preset": args.preset,
                   "settings": {k: str(v) for k, v in vars(args).items()},
                   "cells": {f"{g}:{span:g}": points for (g, span), points in cells.items()},
                   "uniform": uniform, "seconds": time.perf_counter() - t_start}, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
