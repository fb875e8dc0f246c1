"""Ablation of EfficientLLaVA on smol-llava (paper Tables 1-2), at target sparsity 0.5 and 0.7.

    .venv/bin/python benchmarks/ablation.py [--targets 0.5,0.7] [--seeds 0,1,2] [--preset default]

Variants (same proxy data and seed for all; see benchmarks/variants.py): Uniform SparseGPT,
OWL-style per-block ratios, Auto w/o Gen (eta = 0), Full (eta = 0.5), No Evo (no projector
update), Evo w/o UB (projector update with all c_m equal), and the evolved projector's two effects
on Full's model apart, a 2 x 2 design re-pruning Full's policy from the dense model (evo_masks_only: the
evolved projector for the masks, answering through the dense one; evo_answers_only: the other way round;
evo_both and evo_neither). The parts are paired with evo_both (Full's recipe re-run the same way), and
Full − evo_both is reported as the rounding noise of a re-prune (sequential SparseGPT at high sparsity
amplifies rounding: see benchmarks/variants.py); asking for a part runs Full and evo_both too. Uniform
and Full (and the parts) run for every
calibration seed of --seeds (mean +- sd, and Full - uniform paired seed by seed: a user gets one
draw); the other variants at --seed, or with --every-seed on every seed too, each search variant
paired with Full (e.g. `--variants full_ce_fitness --every-seed`: the KL fitness against the paper's
cross-entropy). Metrics on held-out data of --eval-split (val to choose,
test to report): achieved mean sparsity, Wikipedia perplexity (64x256 tokens of articles never
used for calibration), easy-vqa and Fashion-MNIST accuracy (constrained choice, the same seeded
1,000 questions per set for every model), and shifted: perplexity on the Python docs, the same
images asked in wordings the proxy never uses. --cross-task adds uniform, Full and the other
calibrated variants asked for with the image-text proxy from one set only, scored on the other set
(--cross-task-only: those cells alone, the in-distribution rows as far as cached). Finished variants are cached under
--work, so an interrupted run continues where it stopped; --restore-cache puts the rows of a results
file written at the same settings back into that cache (a fresh machine has no runs/), so a run with
more seeds only computes the new ones. Writes benchmarks/results/<name>.md|json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import machine_label, markdown_table, write_results  # noqa: E402
from benchmarks.variants import (DATABASE_EXPORTS, EVO_BASE, EVO_PARTS, LABELS, METRICS, SEARCHES, ON_REQUEST, Settings, lower_is_better, over_seeds,  # noqa: E402
                                 paired, provenance, ray_started, run_variant)

#: the order they run in (full_database and EVO_PARTS reuse Full's run)
VARIANTS = ["uniform", "owl", *SEARCHES, *DATABASE_EXPORTS, *EVO_PARTS]
PAIRED = ("uniform", "full")  # compared seed by seed
SEEDED = (*PAIRED, *EVO_PARTS)  # run for every calibration seed
#: cross-task: the image-text proxy from one set only, accuracy on the other set (as generated and rephrased)
CROSS_TASK = {"easy-vqa": ("fashion_mnist", "fashion_mnist_rephrased"),
              "fashion-mnist": ("easy_vqa", "easy_vqa_rephrased")}


def with_proxy(settings: Settings, proxy: str) -> Settings:
    """The same settings with the image-text calibration data drawn from one set's training split only."""
    return settings.model_copy(update={"data": {**settings.data, "mm_calib": f"{proxy}:train"}})


def restore_cache(doc: dict, settings: Settings, work: Path) -> int:
    """Write every row of a results file of this script (`doc`: its JSON) into the cache under `work`, keyed as
    `run_variant` keys them; rows already cached are kept. A row that does not record its machine is marked
    `restored_from` the machine and commit the file was written on (not necessarily the row's: a file may
    itself have restored it). Refuses a file made with other settings (its rows
    would be filed under keys they do not belong to). Returns how many rows were written."""
    made_with = {k: v for k, v in doc.get("settings", {}).items() if k != "eval_vqa"}
    if made_with != json.loads(settings.model_dump_json()):
        raise ValueError("written with other settings than this run's "
                         f"({json.dumps(made_with, sort_keys=True)})")
    rows = [("dense", None, settings, doc["dense"])]
    for t, variants in doc.get("results", {}).items():
        rows += [(v, float(t), settings, r) for v, agg in variants.items() for r in agg["per_seed"]]
    crossed = {"full": doc.get("cross_task", {}), **doc.get("cross_task_variants", {})}
    for other, by_target in crossed.items():
        for t, proxies in by_target.items():
            rows += [(v, float(t), with_proxy(settings, proxy), r)
                     for proxy, cell in proxies.items() for v in ("uniform", other) for r in cell[v]["per_seed"]]
    work.mkdir(parents=True, exist_ok=True)
    m = doc.get("machine") or {}
    # a row cached before rows recorded their machine keeps what the file knows: where the file was written
    written_on = f"{m['cpu']}, {m['isa']} (commit {m.get('commit', '?')})" if m.get("cpu") and m.get("isa") else None
    written = 0
    for variant, target, where, row in rows:
        if written_on and row.get("computed_on") is None:
            row = {**row, "restored_from": written_on}
        seeded = where.model_copy(update={"seed": row.get("seed", where.seed)})
        path = work / f"{seeded.key(variant, target if target is not None else 0.0)}.json"
        if not path.exists():
            path.write_text(json.dumps(row, indent=1))
            written += 1
    return written


def settings_from_args(args) -> Settings:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    import yaml

    from efficientllava.prune_engine.config import HeldoutConfig

    d = Settings()
    return Settings(model=args.model, preset=args.preset, search=yaml.safe_load(args.search or "{}") or {},
                    engine=yaml.safe_load(args.engine or "{}") or {},
                    data={**d.data, **(yaml.safe_load(args.data or "{}") or {})},
                    heldout=HeldoutConfig(split=args.eval_split, segments=args.eval_segments, seqlen=args.eval_seqlen,
                                          vqa=args.eval_vqa, seed=d.heldout.seed), seed=args.seed, actors=args.actors)


def add_common_args(ap: argparse.ArgumentParser) -> None:
    d = Settings()
    ap.add_argument("--model", default=d.model)
    ap.add_argument("--preset", default=d.preset, help="search settings (actors.config.PRESETS)")
    ap.add_argument("--search", default=None, help="search overrides as YAML, e.g. '{generations: 4}'")
    ap.add_argument("--engine", default=None, help="engine overrides as YAML, e.g. '{loss: ce}'")
    ap.add_argument("--data", default=None, help="calibration-data overrides as YAML, e.g. '{mm_samples: 32}'")
    ap.add_argument("--eval-split", choices=("val", "test"), default=d.heldout.split,
                    help="held-out data: val to make a choice (eta, a default, a preset), test to report one")
    ap.add_argument("--eval-segments", type=int, default=d.heldout.segments, help="held-out text segments")
    ap.add_argument("--eval-seqlen", type=int, default=d.heldout.seqlen, help="tokens per held-out segment")
    ap.add_argument("--eval-vqa", type=int, default=d.heldout.vqa, help="held-out questions per VQA set")
    ap.add_argument("--seed", type=int, default=d.seed, help="calibration seed of the single-seed variants")
    ap.add_argument("--actors", type=int, default=None, help="evaluator actors (default: one per CPU)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads of this process (pruning baselines, evaluation); default: torch's")
    ap.add_argument("--work", type=Path, default=Path("runs/benchmarks"), help="run directories and the cache")


HEADS = {"ppl": "held-out ppl", "easy_vqa": "easy-vqa acc", "fashion_mnist": "Fashion-MNIST acc",
         "ppl_pydoc": "ppl Python docs (shifted)", "easy_vqa_rephrased": "easy-vqa rephrased (shifted)",
         "fashion_mnist_rephrased": "Fashion-MNIST rephrased (shifted)"}


def paired_table(pairs: dict, other: str = "Full", base: str = "uniform") -> str:
    """`other` against `base` (Full against uniform) on the same calibration draw, seed by seed: the difference
    per seed, its mean ± sd, and on how many seeds `other` is ahead (a user gets one draw, not the mean)."""
    noise = any("draw_noise" in x for p in pairs.values() for x in p.values() if isinstance(x, dict))
    headers = ["target", "metric", f"{other} − {base} per seed", "mean ± sd", f"{other} ahead on",
               *(["one draw's question noise (95%)"] if noise else [])]
    rows = []
    for t, p in pairs.items():
        for m in METRICS:
            if m not in p:
                continue
            x, unit = p[m], "%" if lower_is_better(m) else " pts"
            rows.append([t, HEADS[m], ", ".join(f"{v:+.1f}" for v in x["per_seed"]) + unit,
                         f"{x['mean']:+.1f} ± {x['sd']:.1f}{unit}", f"{x['wins']} of {x['n']} seeds",
                         *([f"± {x['draw_noise']:.1f}{unit}" if "draw_noise" in x else "-"] if noise else [])])
    return (f"Paired differences, {other} − {base} on the same calibration draw (perplexity in % change, lower is "
            "better; accuracy in points, higher is better)"
            + ("; question noise: how far one draw's accuracy difference can move by which held-out questions were "
               "drawn alone (1.96 standard errors, as if the two models answered independently: an upper bound)"
               if noise else "") + ":\n\n" + markdown_table(headers, rows))


def cross_task_cell(runs: dict, other: str, scored_on: tuple, questions: int) -> dict:
    """One target and single-set proxy: uniform's and `other`'s rows over seeds (`runs`: per model, one row per
    seed) and their paired difference on the sets the proxy left out (`scored_on`)."""
    p = paired(runs["uniform"], runs[other], questions)
    return {"evaluated_on": list(scored_on), "uniform": over_seeds(runs["uniform"]), other: over_seeds(runs[other]),
            "paired": {m: p[m] for m in scored_on if m in p}, "seeds": p["seeds"]}


def cross_task_table(cross: dict, other: str = "full", label: str = "Full") -> str:
    """Uniform and `other` (Full; quality.py: a preset) searched on one image-text set's proxy, scored on the
    other set: means over seeds and the paired difference seed by seed."""
    headers = ["target", "proxy → scored on", "uniform", label, f"{label} − uniform per seed", "mean ± sd",
               f"{label} ahead on", "one draw's question noise (95%)"]
    rows = []
    for t, by_proxy in cross.items():
        for proxy, c in by_proxy.items():
            for m in c["evaluated_on"]:
                if m not in c["paired"]:
                    continue
                x = c["paired"][m]
                rows.append([t, f"{proxy} → {HEADS[m]}", fmt(c["uniform"], m), fmt(c[other], m),
                             ", ".join(f"{v:+.1f}" for v in x["per_seed"]) + " pts",
                             f"{x['mean']:+.1f} ± {x['sd']:.1f} pts", f"{x['wins']} of {x['n']} seeds",
                             f"± {x['draw_noise']:.1f} pts" if "draw_noise" in x else "-"])
    return ("Cross-task: the image-text proxy from one set only (`--data '{mm_calib: SET:train}'`), accuracy on "
            "the other set, which neither the search nor uniform's calibration saw:\n\n" + markdown_table(headers, rows))


def fmt(row: dict, metric: str) -> str:
    sd = row.get(f"{metric}_sd")
    return f"{row[metric]:.4g}" + (f" ± {sd:.2g}" if sd is not None and len(row.get("seeds", [])) > 1 else "")


def ordering(target: float, first: dict, full: dict) -> str:
    """Whether the paper's ordering (Full ahead of every ablated variant) holds on the single-seed draw:
    per variant and metric, better or worse than Full, and whether the gap exceeds Full's sd over seeds."""
    f0, parts, holds = first["full"], [], []
    for v in ("auto_wo_gen", "no_evo", "evo_wo_ub"):
        x = first.get(v)
        if x is None:
            continue
        cells, ahead = [], True
        for m, lower_better in (("ppl", True), ("easy_vqa", False), ("fashion_mnist", False)):
            gap = (x[m] - f0[m]) * (1 if lower_better else -1)  # > 0: Full is ahead
            ahead &= gap >= 0
            noise = full.get(f"{m}_sd", 0.0)
            cells.append(f"{m} {'Full ahead' if gap >= 0 else 'Full behind'}"
                         f"{'' if abs(gap) > noise else ' (within sd)'}")
        holds.append(ahead)
        parts.append(f"{LABELS[v]}: " + ", ".join(cells))
    if not parts:
        return f"At {target}: no ablated variant to order."
    verdict = "holds on every metric" if all(holds) else "does not hold on every metric"
    return (f"At {target}, the paper's ordering (Full ahead of each ablated variant, seed {f0['seed']}) {verdict}: "
            + "; ".join(parts) + ".")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default="0.5,0.7")
    ap.add_argument("--variants", default=",".join(v for v in VARIANTS if v not in ON_REQUEST),
                    help=f"comma-separated, from {', '.join(VARIANTS)} (default: all but {', '.join(ON_REQUEST)})")
    ap.add_argument("--seeds", default="0,1,2,3,4", help="calibration seeds of uniform and Full")
    ap.add_argument("--name", default="ablation",
                    help="results file benchmarks/results/<name>.md|json (another name for an experiment beside the table)")
    ap.add_argument("--cross-task", nargs="?", const=",".join(CROSS_TASK), default=None, metavar="PROXIES",
                    help="also run uniform, Full and every other calibrated variant asked for, on every seed, with the "
                         "image-text proxy from one set only and report the other set's accuracy (cross-task); "
                         f"PROXIES: comma-separated sets whose proxy to use (default: {','.join(CROSS_TASK)})")
    ap.add_argument("--cross-task-only", action="store_true",
                    help="with --cross-task: run the cross-task cells only; the in-distribution rows are reported as "
                         "far as they are cached (the others are listed as missing)")
    ap.add_argument("--every-seed", action="store_true",
                    help="run every asked variant on every seed of --seeds (not only uniform, Full and the Evo parts) "
                         "and pair each search variant with Full seed by seed (JSON key vs_full)")
    ap.add_argument("--restore-cache", type=Path, default=None, metavar="RESULTS_JSON",
                    help="first put the rows of this results file (written by this script at the same settings) "
                         "into the cache under --work")
    ap.add_argument("--cached-only", action="store_true",
                    help="run nothing: write the table from the finished (cached) runs, listing the missing ones")
    add_common_args(ap)
    args = ap.parse_args(argv)
    targets = [float(t) for t in args.targets.split(",")]
    variants = args.variants.split(",")
    seeds = [int(x) for x in args.seeds.split(",")]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        ap.error(f"unknown variants {sorted(unknown)}; choose from {VARIANTS}")
    proxies = args.cross_task.split(",") if args.cross_task else []
    if set(proxies) - set(CROSS_TASK):
        ap.error(f"--cross-task: unknown proxies {sorted(set(proxies) - set(CROSS_TASK))}; choose from "
                 f"{', '.join(CROSS_TASK)}")
    if args.cross_task_only and not args.cross_task:
        ap.error("--cross-task-only needs --cross-task")
    if args.every_seed:  # the search variants are paired with Full
        variants = list(dict.fromkeys([*variants, "full"]))
    if set(variants) & set(EVO_PARTS):  # the parts re-prune Full's run and are compared with evo_both
        variants = list(dict.fromkeys([*variants, "full", EVO_BASE]))
    # a database export is compared with the sequential prune of the same policy (Full's: its run is reused)
    variants = list(dict.fromkeys([*variants, *(DATABASE_EXPORTS[v] for v in variants if v in DATABASE_EXPORTS)]))
    variants.sort(key=VARIANTS.index)  # Full before the variants that re-prune its run
    settings = settings_from_args(args)
    if args.restore_cache:
        try:
            n = restore_cache(json.loads(args.restore_cache.read_text()), settings, args.work)
        except (OSError, ValueError, KeyError) as e:
            ap.error(f"--restore-cache {args.restore_cache}: {e}")
        print(f"restored {n} cached row(s) from {args.restore_cache}")
    if not args.cached_only:
        ray_started(settings)
    t0 = time.perf_counter()
    print(f"ablation on {settings.model}: targets {targets}, variants {variants}, seeds {seeds} for {SEEDED}")
    dense = run_variant("dense", None, settings, args.work, cached_only=args.cached_only)
    if dense is None:
        ap.error(f"--cached-only: no finished dense run under {args.work}")
    results: dict = {}
    missing = []
    for t in targets:
        results[t] = {}
        for v in variants:
            runs = [run_variant(v, t, settings.model_copy(update={"seed": s}), args.work, log=print,
                                cached_only=args.cached_only or args.cross_task_only)
                    for s in (seeds if v in SEEDED or args.every_seed else [settings.seed])]
            # --cached-only: a variant reports the seeds it finished and names the others (as a cross-task cell does)
            done = [r for r in runs if r is not None]
            if len(done) < len(runs):
                missing.append(f"{LABELS[v]} at {t}" + (", seed(s) " + ",".join(
                    str(s) for s, r in zip(seeds, runs) if r is None) if len(runs) > 1 else ""))
            if not done:
                continue
            results[t][v] = over_seeds(done)
    # cross-task: Full (always) and every other calibrated variant asked for, each paired with uniform per seed;
    # cross[v][t][proxy] is one cell (Full's is the JSON's `cross_task`, the others' `cross_task_variants`)
    # the calibrated variants besides uniform and Full (the Evo parts and database exports have their own pairings)
    others = [v for v in variants if v not in ("dense", "uniform", "full", *EVO_PARTS, *DATABASE_EXPORTS)]
    crossed = ["full", *others]
    cross: dict = {v: {} for v in crossed} if args.cross_task else {}
    for v in cross:
        for t in targets:
            cross[v][t] = {}
            for proxy in proxies:
                scored_on = CROSS_TASK[proxy]
                runs = {m: [run_variant(m, t, with_proxy(settings, proxy).model_copy(update={"seed": s}), args.work,
                                        log=print, cached_only=args.cached_only) for s in seeds] for m in ("uniform", v)}
                # --cached-only: a cell reports the seeds finished for both models and names the others
                done = [s for i, s in enumerate(seeds) if all(runs[m][i] is not None for m in runs)]
                if len(done) < len(seeds):
                    missing.append(f"cross-task ({proxy} proxy, {LABELS[v]}) at {t}, seed(s) "
                                   + ",".join(str(s) for s in seeds if s not in done))
                if not done:
                    continue
                runs = {m: [r for r in rs if r is not None and r["seed"] in done] for m, rs in runs.items()}
                cross[v][t][proxy] = cross_task_cell(runs, v, scored_on, settings.heldout.vqa)
    shown = [m for m in METRICS if m in dense]  # in-distribution, then shifted (rows cached before: fewer)
    headers = ["target", "variant", "seeds", "sparsity", *(HEADS[m] for m in shown), "search evaluations (screened)"]
    rows = [["-", LABELS["dense"], "-", dense["sparsity"], *(dense[m] for m in shown), "-"]]
    for t, by_variant in results.items():
        for v, r in by_variant.items():
            rows.append([t, LABELS[v], ",".join(map(str, r["seeds"])), fmt(r, "sparsity"),
                         *(fmt(r, m) if m in r else "-" for m in shown),
                         f"{r['evaluated']} ({r['screened']})" if r.get("evaluated") is not None else "-"])
    table = markdown_table(headers, rows)
    pairs = {t: paired(by_variant["uniform"]["per_seed"], by_variant["full"]["per_seed"], settings.heldout.vqa)
             for t, by_variant in results.items() if "uniform" in by_variant and "full" in by_variant}
    if pairs:
        table += "\n\n" + paired_table(pairs)
    # every other calibrated variant against uniform on the seeds both ran (the acceptance's comparison: a user
    # gets one draw of whichever recipe they run)
    vs_uniform: dict = {}
    for v in others:
        p = {t: paired(by_variant["uniform"]["per_seed"], by_variant[v]["per_seed"], settings.heldout.vqa)
             for t, by_variant in results.items() if v in by_variant and "uniform" in by_variant}
        p = {t: x for t, x in p.items() if x["seeds"]}
        if p:
            vs_uniform[v] = p
            table += "\n\n" + paired_table(p, LABELS[v], "uniform")
    # the evolved projector's two effects: Full's recipe re-run (evo_both) against its policy re-pruned with the
    # evolved projector in one role or none; and Full against evo_both, the rounding noise of a re-prune
    evo_parts = {v: {t: paired(by_variant[v]["per_seed"], by_variant[EVO_BASE]["per_seed"])
                     for t, by_variant in results.items() if v in by_variant and EVO_BASE in by_variant}
                 for v in EVO_PARTS if v != EVO_BASE}
    # with --every-seed: Full against each other search variant on the same draws (e.g. the KL fitness against CE)
    vs_full = {v: {t: paired(by_variant[v]["per_seed"], by_variant["full"]["per_seed"])
                   for t, by_variant in results.items()
                   if v in by_variant and "full" in by_variant and len(by_variant[v]["per_seed"]) > 1}
               for v in SEARCHES if v != "full"}
    vs_full = {v: p for v, p in vs_full.items() if p}
    vs_sequential: dict = {}
    for v, p in vs_full.items():
        table += "\n\n" + paired_table(p, "Full", v)
    # the model database mode scores against the sequentially pruned one of the same policy and calibration draw
    for v, sequential in DATABASE_EXPORTS.items():
        p = {t: paired(by_variant[v]["per_seed"], by_variant[sequential]["per_seed"])
             for t, by_variant in results.items() if v in by_variant and sequential in by_variant}
        if p:
            vs_sequential[v] = p
            table += "\n\n" + paired_table(p, LABELS[sequential], LABELS[v])
    evo_rounding = {t: paired(by_variant[EVO_BASE]["per_seed"], by_variant["full"]["per_seed"])
                    for t, by_variant in results.items() if EVO_BASE in by_variant and "full" in by_variant}
    if evo_rounding:
        table += "\n\n" + paired_table(evo_rounding, "Full", EVO_BASE)
    for v, p in evo_parts.items():
        if p:
            table += "\n\n" + paired_table(p, EVO_BASE, v)
    for v, by_target in cross.items():
        if any(by_target.values()):
            table += "\n\n" + cross_task_table(by_target, v, "Full" if v == "full" else LABELS[v])
    print("\n" + table)
    verdict = []
    for t, by_variant in results.items():
        if "uniform" in by_variant and "full" in by_variant:
            u, f = by_variant["uniform"], by_variant["full"]
            parts = [f"ppl {u['ppl']:.2f} -> {f['ppl']:.2f} ({100 * (u['ppl'] - f['ppl']) / u['ppl']:+.1f}% lower)"]
            for m in ("easy_vqa", "fashion_mnist"):
                noise = max(u.get(f"{m}_sd", 0.0), f.get(f"{m}_sd", 0.0))
                diff = f[m] - u[m]
                spread = (f"{'within' if abs(diff) <= noise else 'beyond'} the seeds' sd {noise:.3f}"
                          if len(u["seeds"]) > 1 else "one seed: no sd to compare with")
                parts.append(f"{m} {u[m]:.3f} -> {f[m]:.3f} ({diff:+.3f}; {spread})")
            over = (f"seeds {u['seeds']}" if u["seeds"] == f["seeds"]  # --cached-only: each over the seeds it finished
                    else f"uniform's seeds {u['seeds']}, Full's {f['seeds']}")
            verdict.append(f"At {t}, Full vs Uniform (means over {over}): " + ", ".join(parts) + ".")
            first = {v: next((x for x in r["per_seed"] if x["seed"] == settings.seed), None)
                     for v, r in by_variant.items()}  # the single-seed variants' draw, for every variant
            verdict.append(f"At {t}, calibration seed {settings.seed} (the draw of the single-seed rows): " + "; ".join(
                f"{LABELS[v]} {x['ppl']:.2f} / {x['easy_vqa']:.3f} / {x['fashion_mnist']:.3f}"
                for v, x in first.items() if x is not None) + " (ppl / easy-vqa / Fashion-MNIST).")
            same = [LABELS[v] for v in ("auto_wo_gen", "no_evo", "evo_wo_ub")
                    if v in by_variant and by_variant[v]["ratios"] == f["per_seed"][0]["ratios"]]
            if same:
                verdict.append(f"At {t}, chose Full's (seed {seeds[0]}) policy: {', '.join(same)}.")
            if first.get("full") is not None:
                verdict.append(ordering(t, first, f))
    if missing:
        flags = " and ".join(f for f, on in (("--cross-task-only", args.cross_task_only),
                                             ("--cached-only", args.cached_only)) if on)
        verdict.append(f"Not run yet (the same command without {flags} runs them): " + ", ".join(missing) + ".")
    notes = (f"Settings: {settings.model_dump_json()}. Searches: preset {settings.preset} "
             f"(actors.config.PRESETS) with the overrides shown; uniform and OWL calibrate on the searches' "
             f"calibration data. Held-out: {settings.heldout.segments}x{settings.heldout.seqlen} tokens of "
             f"{settings.heldout.text_spec} ({settings.heldout.split} split), {settings.heldout.vqa} questions per VQA set (the same for every model). "
             "'mean ± sd' over calibration seeds.\n\n" + "\n".join(verdict))
    made = [dense, *(r for by_variant in results.values() for agg in by_variant.values() for r in agg["per_seed"])]
    made += [{**r, "variant": f"{m} with the {proxy} proxy"} for v, by_target in cross.items()
             for by_proxy in by_target.values() for proxy, cell in by_proxy.items()
             for m in ("uniform", v) for r in cell[m]["per_seed"]]
    elsewhere = provenance(made, machine_label())
    if elsewhere:
        notes += "\n\n" + elsewhere
    print("\n" + "\n".join(verdict))
    write_results(args.name, f"Ablation on {settings.model} (Tables 1-2)", table,
                  {"seed": settings.seed, "seeds": seeds,
                   # eval_vqa at the top of settings: the layout readers of ablation.json rely on
                   "settings": {**settings.model_dump(), "eval_vqa": settings.heldout.vqa}, "dense": dense,
                   "results": {str(t): r for t, r in results.items()},
                   "paired": {str(t): p for t, p in pairs.items()},
                   # evo_parts: evo_both − part per seed; evo_rounding: Full − evo_both (the same recipe re-run)
                   **({"evo_parts": {v: {str(t): x for t, x in p.items()} for v, p in evo_parts.items() if p}}
                      if any(evo_parts.values()) else {}),
                   **({"vs_full": {v: {str(t): x for t, x in p.items()} for v, p in vs_full.items()}}
                      if vs_full else {}),
                   # vs_uniform: each other calibrated variant − uniform per seed (Full's is `paired`)
                   **({"vs_uniform": {v: {str(t): x for t, x in p.items()} for v, p in vs_uniform.items()}}
                      if vs_uniform else {}),
                   **({"evo_rounding": {str(t): x for t, x in evo_rounding.items()}} if evo_rounding else {}),
                   # vs_sequential: the sequential prune − its database (stitched) model, per seed
                   **({"vs_sequential": {v: {str(t): x for t, x in p.items()} for v, p in vs_sequential.items()}}
                      if vs_sequential else {}),
                   "cross_task": {str(t): c for t, c in cross.get("full", {}).items()},
                   **({"cross_task_variants": {v: {str(t): c for t, c in by_target.items()}
                                               for v, by_target in cross.items() if v != "full"}}
                      if len(cross) > 1 else {}),
                   "seconds": time.perf_counter() - t0},
                  notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
