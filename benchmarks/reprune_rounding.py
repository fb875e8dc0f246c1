"""How far a re-prune of a finished search moves on rounding alone: Full's policy and final projector, pruned again.

    .venv/bin/python benchmarks/reprune_rounding.py --target 0.7 --seeds 0,1,2,3,4 --eval-split test \
        [--prune-threads 1,2] [--export SEED=MODEL_DIR ...] --work runs/benchmarks/ablation

For each calibration seed, the Full run that benchmarks/ablation.py finished at these settings (found in the
ablation's cache under --work) is pruned again from the dense model in this process, exactly as its evaluator
actor exported it (benchmarks/variants.py `prune_with_projectors`, the evolved projector for the masks and the
answers; the scorer built with the run's engine.threads as an evaluator actor builds it) with the final prune at
each thread count of --prune-threads, and the calibration loss (the fitness's kind, on all proxy
data) is compared with the one the run recorded for its export (policy.json; an evaluator actor exports with
every CPU it can run on). A control: the uniform policy pruned the same way at each thread count, to see
whether one thread count prunes better than another or the differences are noise. Where the export's weights were kept (--export SEED=DIR; the ablation
deletes them after evaluation), the masks are compared matrix by matrix in pruning order: the first matrix
whose mask differs, how many matrices keep the same mask, and the largest weight difference before it.

On a tiny LLaVA the re-prune equals the export bit for bit (tests/test_actors_search.py): a difference here is
rounding (the thread count changes the order of sums), amplified by layer-sequential pruning. No held-out data is
read.
Writes benchmarks/results/<name>.md|json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.ablation import add_common_args, settings_from_args  # noqa: E402
from benchmarks.common import markdown_table, write_results  # noqa: E402
from benchmarks.variants import full_outcome, prune_with_projectors, search_dir, search_overrides  # noqa: E402

STAGE_ORDER = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def pruning_order(names: list[str]) -> list[str]:
    """The language model's pruned matrices in the order layer-sequential pruning visits them."""
    def key(name: str):
        block = int(name.split(".layers.")[1].split(".")[0])
        stage = next(i for i, s in enumerate(STAGE_ORDER) if f".{s}." in name)
        return block, stage
    return sorted((n for n in names if "language_model" in n and ".layers." in n
                   and any(f".{s}." in n for s in STAGE_ORDER)), key=key)


def compare_masks(export: dict, again: dict) -> dict:
    """Matrix by matrix in pruning order: where the masks first differ, how many are the same, and the largest
    weight difference among the matrices before the first differing mask."""
    import torch

    order = pruning_order(list(export))
    same = [bool(torch.equal(export[n] == 0, again[n] == 0)) for n in order]
    first = next((i for i, s in enumerate(same) if not s), None)
    before = order[:first] if first is not None else order
    return {"matrices": len(order), "same_mask": int(sum(same)),
            "first_differing": order[first] if first is not None else None,
            "max_weight_diff_before": max((float((export[n].float() - again[n].float()).abs().max())
                                           for n in before), default=0.0),
            "mask_agreement": float(sum(int((export[n] == 0).eq(again[n] == 0).sum()) for n in order)
                                    / sum(export[n].numel() for n in order))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", type=float, default=0.7)
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--export", action="append", default=[], metavar="SEED=MODEL_DIR",
                    help="the kept export of that seed's Full run (its model directory), for the mask comparison")
    ap.add_argument("--prune-threads", default="1,2", help="torch thread counts of the re-prunes (comma-separated)")
    ap.add_argument("--uniform-control", action=argparse.BooleanOptionalAction, default=True,
                    help="also prune the uniform policy at each thread count (the control)")
    ap.add_argument("--name", default="reprune_rounding")
    add_common_args(ap)
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    try:
        threads = [int(t) for t in args.prune_threads.split(",")]
    except ValueError:
        ap.error(f"--prune-threads: expected comma-separated integers, got '{args.prune_threads}'")
    if any(t < 1 for t in threads):
        ap.error("--prune-threads: every thread count must be at least 1")
    exports = {}
    for item in args.export:
        seed, _, path = item.partition("=")
        if not seed.isdigit() or not (Path(path) / "model.safetensors").exists():
            ap.error(f"--export {item}: expected SEED=MODEL_DIR with a model.safetensors in it")
        exports[int(seed)] = Path(path)
    settings = settings_from_args(args)
    runs = {}
    for s in seeds:  # every run checked before any pruning
        seeded = settings.model_copy(update={"seed": s})
        run_dir = search_dir(seeded, "full", args.target, args.work)
        if not (run_dir / "policy.json").exists():
            ap.error(f"no finished Full run for seed {s} at {run_dir}: run benchmarks/ablation.py at these settings")
        runs[s] = (seeded, run_dir)
    from safetensors.torch import load_file

    import numpy as np

    from efficientllava.prune_engine.scoring import CandidateScorer

    rows, table = [], []
    for s, (seeded, run_dir) in runs.items():
        t0 = time.perf_counter()
        ratios, evolved = full_outcome(run_dir)
        recorded = json.loads((run_dir / "policy.json").read_text())["calibration_loss"]
        run = seeded.run_config(args.target, search_overrides("full"))
        row = {"seed": s, "run": run_dir.name, "export_loss": recorded, "full": {}, "uniform": {}}
        for t in threads:  # the scorer built as the actor builds it (engine.threads), the final prune at t threads
            out = args.work / f"reprune-{run_dir.name}-t{t}"
            report = prune_with_projectors(run.engine, run.data, ratios, evolved, "evolved", "evolved", out, t)
            row["full"][t] = {"loss": report.loss, "relative_diff": (report.loss - recorded) / recorded}
            if s in exports:
                row["full"][t]["masks"] = compare_masks(load_file(str(exports[s] / "model.safetensors")),
                                                        load_file(str(out / "model.safetensors")))
            shutil.rmtree(out, ignore_errors=True)
            if args.uniform_control:
                scorer = CandidateScorer(run.engine, run.data, build_database=False)  # the control: uniform
                row["uniform"][t] = scorer.prune_for_export(np.full(len(ratios), args.target), t).loss
                del scorer
            print(f"  seed {s}, {t} thread(s): Full re-prune {report.loss:.4f} (export {recorded:.4f}, "
                  f"{100 * row['full'][t]['relative_diff']:+.2f}%)"
                  + (f", uniform {row['uniform'][t]:.4f}" if args.uniform_control else ""), flush=True)
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        for t in threads:
            m = row["full"][t].get("masks")
            table.append([s, t, f"{recorded:.4f}", f"{row['full'][t]['loss']:.4f}",
                          f"{100 * row['full'][t]['relative_diff']:+.2f}%",
                          f"{row['uniform'][t]:.4f}" if t in row["uniform"] else "-",
                          f"{m['same_mask']} of {m['matrices']}, first differs: {m['first_differing']}, "
                          f"max abs dW before it {m['max_weight_diff_before']:.1e}, "
                          f"{100 * m['mask_agreement']:.2f}% of mask entries agree" if m else "-"])
    summary = {}
    for t in threads:
        d = np.array([r["full"][t]["relative_diff"] for r in rows])
        summary[f"full_{t}"] = {"mean_abs_relative_diff": float(np.abs(d).mean()), "max_abs_relative_diff":
                                float(np.abs(d).max()), "exact": int(sum(r["full"][t]["loss"] == r["export_loss"]
                                                                         for r in rows))}
    if len(threads) == 2 and args.uniform_control:  # the control: does one thread count prune better, seed by seed?
        a, b = threads
        u = np.array([(r["uniform"][b] - r["uniform"][a]) / r["uniform"][a] for r in rows])
        f = np.array([(r["full"][b]["loss"] - r["full"][a]["loss"]) / r["full"][a]["loss"] for r in rows])
        summary["threads_effect"] = {"uniform": u.tolist(), "full": f.tolist(), "from": a, "to": b}
    md = markdown_table(["seed", "re-prune threads", "export's calibration loss", "Full re-pruned",
                         "vs export", "uniform pruned", "masks against the kept export"], table)
    lines = [f"{t} thread(s): the re-prune equals the export's calibration loss on {summary[f'full_{t}']['exact']} of "
             f"{len(rows)} seeds; mean |difference| {100 * summary[f'full_{t}']['mean_abs_relative_diff']:.2f}%, "
             f"largest {100 * summary[f'full_{t}']['max_abs_relative_diff']:.2f}%." for t in threads]
    if "threads_effect" in summary:
        e = summary["threads_effect"]
        lines.append(f"From {e['from']} to {e['to']} threads the calibration loss changes by "
                     + ", ".join(f"{100 * x:+.2f}%" for x in e["uniform"]) + " (uniform) and "
                     + ", ".join(f"{100 * x:+.2f}%" for x in e["full"]) + " (Full's policy), seed by seed.")
    notes = (f"Full at {args.target} ({settings.heldout.split}-split ablation runs, preset {settings.preset}): the "
             "calibration loss is the fitness's (KL to the dense model) on all proxy data; the same policy and the "
             "bit-identical projector, pruned with another thread count, differ by rounding alone, amplified by "
             "pruning block after block (a tiny LLaVA's re-prune equals its export bit for bit).\n\n"
             + "\n".join(lines))
    print("\n" + md + "\n\n" + notes)
    write_results(args.name, f"A re-prune of Full's result, rounding alone ({args.target})", md,
                  {"target": args.target, "seeds": seeds, "settings": json.loads(settings.model_dump_json()),
                   "prune_threads": threads, "rows": rows, **summary}, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
