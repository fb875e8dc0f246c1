"""What ranked a search's candidates: the proxy loss or the SRM term, generation by generation (issue 26).

    .venv/bin/python -m benchmarks.fitness_terms RUN_DIR [RUN_DIR ...] [--name fitness_terms]

For each run directory (a finished or interrupted search: its last checkpoint is read) and each generation's
population (full-fidelity candidates), from F = -L_proxy - eta s G: the spread (max - min) of L_proxy and of
eta s G, the share of candidate pairs that -L_proxy alone and -G alone order as F does (1: that term alone gives
F's ranking, 1/2: it says nothing about it; `search.fitness.ranking_terms`), and the L_proxy and L_text of the
candidate F ranks first against the lowest among them. Reads the runs' histories only: no model, no data.
Writes benchmarks/results/<name>.md|json.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import markdown_table, write_results  # noqa: E402


def run_terms(run_dir: Path) -> dict:
    """One run's eta, SRM scale and per-generation ranking records (actors.report.ranking_records)."""
    from efficientllava.actors.report import ranking_records
    from efficientllava.search.checkpoint import RunStore

    state, table, _ = RunStore(str(run_dir)).load()
    eta = float(state["config"]["eta"])
    return {"run": run_dir.name, "eta": eta, "srm_scale": state.get("srm_scale"), "generations": state["generation"],
            "elapsed_s": state.get("elapsed_s"), "records": ranking_records(table.to_pydict(), eta)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="search run directories (each with a checkpoint)")
    ap.add_argument("--name", default="fitness_terms", help="results file name")
    args = ap.parse_args(argv)
    from efficientllava.search.checkpoint import RunStore

    if missing := [str(r) for r in args.runs if not RunStore(str(r)).exists()]:
        ap.error(f"no search checkpoint in {', '.join(missing)}")
    runs = [run_terms(r) for r in args.runs]
    headers = ["run", "eta", "s", "generation", "candidates", "spread of L_proxy", "spread of eta s G",
               "pairs -L orders as F", "pairs -G orders as F", "best's L_proxy", "lowest L_proxy", "best's L_text",
               "lowest L_text"]
    rows = [[run["run"], run["eta"], round(run["srm_scale"], 3) if run["srm_scale"] else "-", r["generation"],
             r["candidates"], round(r["l_spread"], 4), round(r["srm_spread"], 4), round(r["by_l"], 3),
             round(r["by_g"], 3), round(r["best_l"], 4), round(r["lowest_l"], 4), *("-" if r[k] is None else round(r[k], 4)
                                                                 for k in ("best_l_text", "lowest_l_text"))] for run in runs for r in run["records"]]
    table = markdown_table(headers, rows)
    notes = ("F = -L_proxy - eta s G, L_proxy = (1 - w) L_text + w L_mm; one row per generation's population "
             "(full-fidelity candidates). A pair column: the share of candidate pairs the term alone orders as F "
             "does (1: it alone gives F's ranking; 1/2: it says nothing about it). Where eta s G spreads far wider "
             "than L_proxy, the SRM term decides which policies survive.")
    print(table + "\n\n" + notes)
    write_results(args.name, "What ranked the candidates: proxy loss or SRM term", table, {"runs": runs}, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
