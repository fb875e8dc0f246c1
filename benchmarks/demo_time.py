"""How long `make demo` takes on this machine, with each screening precision, and what it did in that time.

    .venv/bin/python benchmarks/demo_time.py [--precisions auto,fp32 --time-budget 575]

Runs `efficientllava demo` as `make demo` does (venv present, output piped to a file), once per screening
precision (`auto`: bfloat16 where the CPU multiplies it fast, else fp32; `fp32`: forced, as on a CPU
without AVX512-BF16 / AMX), one after the other on a quiet machine, and measures each end to end from
the command's start to its exit. Reported: wall time against the 10-minute target, how the screening
was sized to the demo's time budget (children per generation, s a child, why), generations run,
candidate evaluations, and the held-out table. Writes benchmarks/results/demo_time.md/.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import markdown_table, write_results  # noqa: E402

TARGET_S = 600.0  # the promise: `make demo` in at most 10 minutes, venv present


def paired_columns(rows: dict[str, dict]) -> list[tuple[str, str]]:
    """(head, "uniform / searched") for every held-out column of a demo's table that both models have, in the
    demo's order: in distribution and shifted (the demo's COLUMNS)."""
    from efficientllava.actors.demo import COLUMNS

    u, s = rows["uniform"], rows["searched"]
    out = []
    for key, head in COLUMNS.items():
        if key in u and key in s:
            digits = 2 if key.startswith("ppl") else 3
            out.append((f"{head}: uniform / searched", f"{u[key]:.{digits}f} / {s[key]:.{digits}f}"))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--precisions", default="auto,fp32")
    ap.add_argument("--time-budget", type=float, default=None, help="the demo's --time-budget (default: its own)")
    ap.add_argument("--work", type=Path, default=Path("runs/benchmarks/demo_time"))
    args = ap.parse_args(argv)
    exe = Path(sys.executable).parent / "efficientllava"
    runs = []
    for precision in [p for p in args.precisions.split(",") if p]:
        out = args.work / precision
        shutil.rmtree(out, ignore_errors=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [str(exe), "demo", "--out", str(out), "--set", f"engine.screen_precision={precision}"]
        if args.time_budget is not None:
            cmd += ["--time-budget", str(args.time_budget)]
        print(f"$ {' '.join(cmd)}", flush=True)
        log = args.work / f"{precision}.log"
        t0 = time.perf_counter()
        with open(log, "w") as f:  # piped, as `make demo > file`
            code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
        seconds = time.perf_counter() - t0
        if code != 0:
            raise SystemExit(f"the demo failed ({code}); see {log}")
        demo = json.loads((out / "demo.json").read_text())
        sized = (demo.get("screening_sized") or [{}])[0]
        lines = log.read_text().splitlines()
        runs.append({"precision": precision, "seconds": seconds, "within_target": seconds <= TARGET_S,
                     "demo_total_seconds": demo["total_seconds"], "search_seconds": demo["search_seconds"],
                     "generations": demo.get("generations"), "stopped_by": demo.get("stopped_by"),
                     "candidates": demo.get("candidates"), "screened": demo.get("screened"), "sized": sized,
                     "sizing_line": next((x for x in lines if x.startswith("screening sized:")), None),
                     "budget_line": next((x for x in lines if x.startswith("search time budget:")), None),
                     "rows": demo["rows"], "time_budget_s": demo["config"].get("time_budget_s")})
        print(f"  {seconds:.0f} s; {runs[-1]['sizing_line']}", flush=True)

    heads = [head for head, _ in paired_columns(runs[0]["rows"])] if runs else []
    rows = [[r["precision"], f"{r['seconds']:.0f} s ({r['seconds'] / 60:.1f} min)",
             "yes" if r["within_target"] else "NO", r["sized"].get("children", "-"),
             f"{r['sized'].get('seconds_per_child', float('nan')):.2f}", r["sized"].get("limited_by", "-"),
             f"{r['generations']} ({r['stopped_by']})", r["candidates"], r["screened"],
             *(cell for _, cell in paired_columns(r["rows"]))]
            for r in runs]
    table = markdown_table(["screening", "make demo (end to end)", "≤ 10 min", "children / generation",
                            "s a child", "limited by", "generations", "evaluations", "screened",
                            *heads], rows)
    print()
    print(table)
    notes = ["Each row is one `efficientllava demo` (default preset, target 0.5, 150 held-out questions per set) "
             "run end to end with its output piped to a file, the venv present, nothing else running. The demo "
             "runs uniform SparseGPT and the held-out evaluation of dense and uniform first, then gives the search "
             "its time budget less those and less what the searched model's final prune and evaluation will take; "
             "after generation 0 the search measures a screened child and a generation and sizes its children to "
             "what is left (docs/method.md §4a)."]
    notes += [f"{r['precision']}: {r['budget_line']}; {r['sizing_line']}" for r in runs]
    write_results("demo_time", "`make demo` wall time per screening precision", table,
                  {"runs": runs, "target_s": TARGET_S}, notes="\n\n".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
