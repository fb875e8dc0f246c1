"""A search preset against uniform SparseGPT and the `default` preset's Full: issue 26's acceptance checks.

    .venv/bin/python -m benchmarks.quality --preset quality [--targets 0.7,0.5 --seeds 0,1,2 --eval-split test]

Per target and calibration seed, on the same proxy data and seed: uniform SparseGPT, Full under the `default`
preset (the ablation's Full: its cached rows are reused, `--restore-cache` an ablation results file written at
the same settings), and the asked preset run as it is (variant `preset`: none of the ablation's overrides).
Held-out data as the ablation's (`--eval-split val` to choose a preset, `test` to report it). Checks, on the
means over the seeds (per-seed values in the JSON):

* at the first target (0.7): the preset's perplexity at most `--ppl-ratio` (0.5) x uniform's; easy-vqa and
  Fashion-MNIST at least uniform's and at least the default's Full less `--slack` points (1);
* at every other target: perplexity at most the default's Full, easy-vqa and Fashion-MNIST at least its less
  the slack;
* at every target, the shifted columns (Python-docs perplexity, rephrased questions) not worse than uniform's
  (a harder search must not buy proxy fit with generalisation);
* with --cross-task, cross-task accuracy not worse than uniform's: uniform and the preset again per seed with
  the image-text proxy of one set only (the ablation's `--cross-task`; uniform's rows are the ablation's), the
  other set's accuracy as generated and rephrased.

The search's own wall time per run (its generations) and what producing each row took here are reported beside.
Writes benchmarks/results/<name>.md|json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.ablation import (CROSS_TASK, HEADS, add_common_args, cross_task_cell, cross_task_table,  # noqa: E402
                                 restore_cache, settings_from_args, with_proxy)
from benchmarks.common import machine_label, markdown_table, write_results  # noqa: E402
from benchmarks.variants import (METRICS, lower_is_better, over_seeds, paired, provenance, ray_started,  # noqa: E402
                                 run_variant)

IN_DISTRIBUTION_VQA = ("easy_vqa", "fashion_mnist")
SHIFTED = ("ppl_pydoc", "easy_vqa_rephrased", "fashion_mnist_rephrased")


def minutes(seconds: list | None) -> str:
    """Per-seed minutes, '-' where unknown (a row cached before the search's own time was recorded)."""
    if not seconds or all(x is None for x in seconds):
        return "-"
    return ", ".join("-" if x is None else f"{x / 60:.0f}" for x in seconds)


def checks(target: float, first: bool, rows: dict, ppl_ratio: float, slack: float) -> list[dict]:
    """The acceptance checks of one target on the means over seeds (`rows`: uniform, default, preset as
    over_seeds gives them): each {check, value, bound, ok}."""
    u, d, p = rows["uniform"], rows["default"], rows["preset"]
    out = []

    def add(name, value, bound, ok):
        out.append({"target": target, "check": name, "value": value, "bound": bound, "ok": bool(ok)})

    if first:
        add(f"ppl <= {ppl_ratio:g} x uniform", p["ppl"] / u["ppl"], ppl_ratio, p["ppl"] <= ppl_ratio * u["ppl"])
    else:
        add("ppl <= default's Full", p["ppl"], d["ppl"], p["ppl"] <= d["ppl"])
    for m in IN_DISTRIBUTION_VQA:
        if m in p:
            if first:
                add(f"{m} >= uniform", p[m], u[m], p[m] >= u[m])
            add(f"{m} >= default's Full - {slack:g} points", p[m], d[m] - slack / 100, p[m] >= d[m] - slack / 100)
    for m in SHIFTED:
        if m in p:
            worse = p[m] > u[m] if lower_is_better(m) else p[m] < u[m]
            add(f"{m} (shifted) not worse than uniform", p[m], u[m], not worse)
    return out


def cross_checks(target: float, proxy: str, cell: dict) -> list[dict]:
    """Cross-task: the preset's accuracy on the set its proxy left out, as generated and rephrased, not worse than
    uniform's on the same single-set proxy (means over seeds; `cell` as main's cross_task entries)."""
    return [{"target": target, "check": f"cross-task ({proxy} proxy) {m} not worse than uniform",
             "value": cell["preset"][m], "bound": cell["uniform"][m],
             "ok": bool(cell["preset"][m] >= cell["uniform"][m])}
            for m in cell["evaluated_on"] if m in cell["preset"] and m in cell["uniform"]]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default="0.7,0.5", help="the first gets the perplexity-ratio check")
    ap.add_argument("--seeds", default="0,1,2", help="calibration seeds (the same for all three)")
    ap.add_argument("--ppl-ratio", type=float, default=0.5, help="at the first target: preset ppl / uniform ppl")
    ap.add_argument("--slack", type=float, default=1.0, help="VQA points the preset may lose to the default's Full")
    ap.add_argument("--name", default="quality", help="results file benchmarks/results/<name>.md|json")
    ap.add_argument("--cross-task", action="store_true",
                    help="also run uniform and the preset for every seed with the image-text proxy from one set only "
                         "(easy-vqa, then Fashion-MNIST) and check the other set's accuracy")
    ap.add_argument("--restore-cache", type=Path, action="append", default=[], metavar="RESULTS_JSON",
                    help="put the rows of an ablation results file written at the same settings (the default "
                         "preset's) into the cache first; may be given several times")
    add_common_args(ap)
    ap.set_defaults(preset="quality", eval_split="test")
    args = ap.parse_args(argv)
    from efficientllava.actors.config import PRESETS

    if args.preset not in PRESETS:
        ap.error(f"unknown preset {args.preset!r}; choose from {', '.join(PRESETS)}")
    if args.preset == "default":
        ap.error("--preset default is the reference itself: name the preset to compare with it")
    targets = [float(t) for t in args.targets.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    preset = settings_from_args(args)
    default = preset.model_copy(update={"preset": "default"})
    for path in args.restore_cache:
        try:
            n = restore_cache(json.loads(path.read_text()), default, args.work)
        except (OSError, ValueError, KeyError) as e:
            ap.error(f"--restore-cache {path}: {e}")
        print(f"restored {n} cached row(s) from {path}")
    ray_started(preset)
    t0 = time.perf_counter()
    results, all_checks = {}, []
    for i, t in enumerate(targets):
        runs = {name: [run_variant(variant, t, s.model_copy(update={"seed": seed}), args.work)
                       for seed in seeds]
                for name, variant, s in (("uniform", "uniform", default), ("default", "full", default),
                                         ("preset", "preset", preset))}
        rows = {name: over_seeds(r) for name, r in runs.items()}
        results[t] = {**rows, "vs_uniform": paired(runs["uniform"], runs["preset"], args.eval_vqa),
                      "vs_default": paired(runs["default"], runs["preset"], args.eval_vqa),
                      "wall_s": [r["prune_seconds"] for r in runs["preset"]],
                      "search_s": [r.get("search_seconds") for r in runs["preset"]],
                      "default_wall_s": [r["prune_seconds"] for r in runs["default"]],
                      "default_search_s": [r.get("search_seconds") for r in runs["default"]]}
        all_checks += checks(t, i == 0, rows, args.ppl_ratio, args.slack)
    cross: dict = {}
    for t in targets if args.cross_task else []:
        cross[t] = {}
        for proxy, scored_on in CROSS_TASK.items():
            runs = {name: [run_variant(variant, t, with_proxy(s, proxy).model_copy(update={"seed": seed}),
                                       args.work) for seed in seeds]
                    for name, variant, s in (("uniform", "uniform", default), ("preset", "preset", preset))}
            cross[t][proxy] = cross_task_cell(runs, "preset", scored_on, args.eval_vqa)
            all_checks += cross_checks(t, proxy, cross[t][proxy])
    shown = [m for m in METRICS if all(m in results[t]["preset"] for t in targets)]
    headers = ["target", "model", *(HEADS[m] for m in shown), "per-seed ppl", "search min per run",
               "wall min per run here"]
    labels = {"uniform": "Uniform SparseGPT", "default": "Full, `default` preset", "preset": f"`{args.preset}` preset"}
    table_rows = []
    for t in targets:
        for name, label in labels.items():
            r = results[t][name]
            wall = {"preset": results[t]["wall_s"], "default": results[t]["default_wall_s"]}.get(name)
            search = {"preset": results[t]["search_s"], "default": results[t]["default_search_s"]}.get(name)
            table_rows.append([t, label, *(f"{r[m]:.4g} ± {r[f'{m}_sd']:.2g}" for m in shown),
                               ", ".join(f"{x['ppl']:.1f}" for x in r["per_seed"]), minutes(search), minutes(wall)])
    table = markdown_table(headers, table_rows)
    if cross:
        table += "\n\n" + cross_task_table(cross, "preset", f"`{args.preset}`")
    table += "\n\nChecks (means over seeds " + ",".join(map(str, seeds)) + "):\n\n" + markdown_table(
        ["target", "check", "value", "bound", "holds"],
        [[c["target"], c["check"], f"{c['value']:.4g}", f"{c['bound']:.4g}", "yes" if c["ok"] else "**no**"]
         for c in all_checks])
    failed = [c for c in all_checks if not c["ok"]]
    notes = (f"{args.eval_split} split ({args.eval_segments}x{args.eval_seqlen} tokens per text set, {args.eval_vqa} "
             f"questions per VQA set); calibration seeds {seeds}, the same proxy data for the three models of a seed. "
             + (f"{len(failed)} of {len(all_checks)} checks fail: " + "; ".join(f"{c['check']} at {c['target']}"
                                                                          for c in failed)
                + "." if failed else f"All {len(all_checks)} checks hold.")
             + " Search min: the search's generations (the checkpoint's elapsed time over all its sessions; "
               "actor start-up, level database and export add to it). Wall min here: what producing the row took in "
               "the session that evaluated it (start-up, database, the search when it ran then, export): a search "
               "made for an earlier evaluation (e.g. on validation) is re-exported, not re-run, and one that a shorter "
               "run of the same search had begun is grown from it (only its further generations run then).")
    elsewhere = provenance([r for t in targets for name in labels for r in results[t][name]["per_seed"]]
                           + [r for cells in cross.values() for c in cells.values() for name in ("uniform", "preset")
                              for r in c[name]["per_seed"]], machine_label())
    if elsewhere:  # a pairing across machines compares CPUs as much as models (docs/method.md "Another CPU")
        notes += " " + elsewhere
    print("\n" + table + "\n\n" + notes)
    write_results(args.name, f"The `{args.preset}` preset against uniform SparseGPT and the default preset", table,
                  {"seed": seeds[0], "seeds": seeds, "preset": args.preset, "settings": json.loads(preset.model_dump_json()),
                   "results": {f"{t:g}": r for t, r in results.items()},
                   "cross_task": {f"{t:g}": c for t, c in cross.items()}, "checks": all_checks,
                   "seconds": time.perf_counter() - t0}, notes)
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
