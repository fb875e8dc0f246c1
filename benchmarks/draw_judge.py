"""Whether a judge of the calibration draw, on the validation data a search may see, tells the draws that lose.

    .venv/bin/python benchmarks/draw_judge.py [--val benchmarks/results/val_tr_cross.json]
        [--test benchmarks/results/ablation.json] [--target 0.7] [--name draw_judge]

A user gets one calibration draw. Issue 25 asks whether the search itself could judge its draw: after a search, score
the searched model (Full) and uniform SparseGPT of the same draw on the *validation* data the run may look at, and
keep Full only where it holds there. This script reads the answer off finished rows, with no model run: a search is
keyed apart from its evaluation (benchmarks/variants.py `Settings.search_key`), so the validation row and the test
row of a draw score the same pruned model (checked here: the same per-block ratios, pruned on the same CPU kind, or
the draw is left out). With several --val files, a draw is read from the first that has it.

What the judge may see is the validation split of the proxy's own tasks (as generated and rephrased with the
validation wordings) and of both text domains (Wikipedia, Python docs). In the cross-task setting the task the proxy
left out is exactly what it may not see; in distribution it sees every column. Two rules, fixed before looking:

- strict: keep Full unless it is behind uniform on any column it may see (higher perplexity, lower accuracy);
- noise-aware: keep Full unless it is behind on a column by more than one draw's question noise (accuracy: 1.96 x
  the standard error of the two accuracies' difference over the questions, in points) or has higher perplexity.

Where the judge falls back, the user's model is uniform's, and the test difference against uniform is 0 on every
column. Writes benchmarks/results/<name>.md|json: per draw, the validation differences the judge saw, its pick,
and the test differences of Full and of the judged model on the columns the search did not see (cross-task) or on
every column (in distribution).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import markdown_table, write_results  # noqa: E402
from benchmarks.variants import METRICS, difference, lower_is_better, question_noise  # noqa: E402

#: the proxy's image-text task -> the columns that task's validation data gives the judge (cross-task)
PROXY_COLUMNS = {"easy-vqa": ("easy_vqa", "easy_vqa_rephrased"),
                 "fashion-mnist": ("fashion_mnist", "fashion_mnist_rephrased")}
TEXT_COLUMNS = ("ppl", "ppl_pydoc")


def per_seed(row: dict) -> dict[int, dict]:
    return {r["seed"]: r for r in row.get("per_seed", [row])}


def behind(base: dict, other: dict, metric: str, questions: int, noise_aware: bool) -> bool:
    d = difference(base, other, metric)
    if lower_is_better(metric):
        return d > 0
    return d < -question_noise(base, other, metric, questions) if noise_aware else d < 0


def judge(uniform: dict, full: dict, visible: tuple[str, ...], questions: int, noise_aware: bool) -> str:
    """The model the judge keeps: "full" unless Full is behind uniform on a column it may see."""
    return "uniform" if any(behind(uniform, full, m, questions, noise_aware) for m in visible) else "full"


def judged_draws(setting: str, val: tuple[dict, dict], test: tuple[dict, dict], visible: tuple[str, ...],
                 scored: tuple[str, ...], questions: int) -> tuple[list[dict], list[str]]:
    """One record per draw that has a validation and a test row of the same searched model; the draws left out."""
    (vu, vf), (tu, tf) = (per_seed(val[0]), per_seed(val[1])), (per_seed(test[0]), per_seed(test[1]))
    records, skipped = [], []
    for seed in sorted(set(vu) & set(vf) & set(tu) & set(tf)):
        if vf[seed]["ratios"] != tf[seed]["ratios"]:
            skipped.append(f"{setting} seed {seed}: its validation and test rows come from different searches")
            continue
        if any(v[seed].get("computed_on") != t[seed].get("computed_on") for v, t in ((vu, tu), (vf, tf))):
            skipped.append(f"{setting} seed {seed}: its validation and test rows were pruned on different CPU kinds")
            continue
        rec = {"setting": setting, "seed": seed, "visible": list(visible), "scored": list(scored),
               "val": {m: difference(vu[seed], vf[seed], m) for m in visible},
               "test_full": {m: difference(tu[seed], tf[seed], m) for m in scored}}
        for rule, noise_aware in (("strict", False), ("noise_aware", True)):
            pick = judge(vu[seed], vf[seed], visible, questions, noise_aware)
            rec[rule] = pick
            rec[f"test_{rule}"] = dict(rec["test_full"]) if pick == "full" else {m: 0.0 for m in scored}
        records.append(rec)
    return records, skipped


def summary(records: list[dict], key: str, metric: str) -> dict:
    xs = [r[key][metric] for r in records if metric in r[key]]
    ahead = sum((x < 0) if lower_is_better(metric) else (x > 0) for x in xs)
    behind_ = sum((x > 0) if lower_is_better(metric) else (x < 0) for x in xs)
    return {"mean": sum(xs) / len(xs), "ahead": ahead, "behind": behind_, "n": len(xs)} if xs else {}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--val", type=Path, action="append", default=None,
                    help="a results file of benchmarks/ablation.py on the validation split (repeatable; default: "
                         "benchmarks/results/val_tr_cross.json)")
    ap.add_argument("--test", type=Path, default=Path("benchmarks/results/ablation.json"),
                    help="a results file of benchmarks/ablation.py on the test split, the same searches")
    ap.add_argument("--target", default="0.7")
    ap.add_argument("--name", default="draw_judge")
    args = ap.parse_args(argv)
    args.val = args.val or [Path("benchmarks/results/val_tr_cross.json")]

    def load(path: Path, flag: str, split: str) -> dict:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            ap.error(f"{flag} {path}: {e}")
        if data.get("settings", {}).get("heldout", {}).get("split") != split:
            ap.error(f"{flag} {path}: not a benchmarks/ablation.py results file scored on the {split} split")
        return data

    vals = [load(path, "--val", "val") for path in args.val]
    test = load(args.test, "--test", "test")
    questions = test["settings"]["heldout"]["vqa"]
    t = args.target

    records, skipped, seen = [], [], set()

    def take(got: list[dict], left: list[str]) -> None:  # a draw from the first --val file that has it
        records.extend(r for r in got if (r["setting"], r["seed"]) not in seen)
        skipped.extend(left)
        seen.update((r["setting"], r["seed"]) for r in got)

    for val in vals:
        for proxy, visible_task in PROXY_COLUMNS.items():  # cross-task: the judge sees the proxy's task and text
            vcell = val.get("cross_task", {}).get(t, {}).get(proxy)
            tcell = test.get("cross_task", {}).get(t, {}).get(proxy)
            if vcell and tcell:
                take(*judged_draws(f"{proxy} proxy", (vcell["uniform"], vcell["full"]),
                                   (tcell["uniform"], tcell["full"]), TEXT_COLUMNS + visible_task,
                                   tuple(tcell["evaluated_on"]), questions))
        vres, tres = val.get("results", {}).get(t, {}), test.get("results", {}).get(t, {})
        if all(v in vres and v in tres for v in ("uniform", "full")):  # in distribution: every column is visible
            take(*judged_draws("mixed proxy", (vres["uniform"], vres["full"]), (tres["uniform"], tres["full"]),
                               METRICS, METRICS, questions))
    skipped = [s for s in dict.fromkeys(skipped)
               if not any(s.startswith(f"{setting} seed {seed}:") for setting, seed in seen)]
    order = list(dict.fromkeys(r["setting"] for r in records))
    records.sort(key=lambda r: (order.index(r["setting"]), r["seed"]))
    if not records:
        ap.error(f"no draw at target {t} has a validation and a test row of the same search in these files")

    rows = []
    for r in records:
        judged_on = ", ".join(f"{m} {x:+.1f}" for m, x in r["val"].items())
        full = ", ".join(f"{m} {x:+.1f}" for m, x in r["test_full"].items())
        rows.append([r["setting"], r["seed"], judged_on, r["strict"], r["noise_aware"], full])
    table = markdown_table(["setting", "seed", "validation, Full - uniform (what the judge sees)", "strict keeps",
                            "noise-aware keeps", "test, Full - uniform"], rows)
    totals = {}
    lines = []
    for setting in dict.fromkeys(r["setting"] for r in records):
        group = [r for r in records if r["setting"] == setting]
        totals[setting] = {key: {m: summary(group, key, m) for m in group[0]["scored"]}
                           for key in ("test_full", "test_strict", "test_noise_aware")}
        for m in group[0]["scored"]:
            parts = []
            for key, label in (("test_full", "Full"), ("test_strict", "strict judge"),
                               ("test_noise_aware", "noise-aware judge")):
                s = totals[setting][key][m]
                parts.append(f"{label} {s['mean']:+.1f} (ahead {s['ahead']}, behind {s['behind']} of {s['n']})")
            lines.append(f"- {setting}, {m} on test, against uniform: " + "; ".join(parts))
    notes = ("Perplexity differences are % change, accuracy differences points; the judge's pick is uniform or Full "
             "of the same calibration draw. Test differences of a draw where the judge keeps uniform are 0.\n\n"
             + "\n".join(lines)
             + ("\n\nLeft out: " + "; ".join(skipped) + "." if skipped else "")
             + f"\n\nRead from {', '.join(map(str, args.val))} (validation) and {args.test} (test), target {t}, "
               f"{questions} questions per VQA set; the rows' machine is theirs (`computed_on` in those files), this file's is where it was read.")
    print(table)
    print(notes)
    data = {"target": float(t), "val_files": [str(p) for p in args.val], "test_file": str(args.test), "questions": questions,
            "draws": records, "summary": totals, "skipped": skipped}
    write_results(args.name, f"A judge of the calibration draw on validation data, read against test (target {t})",
                  table, data, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
