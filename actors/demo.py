"""The demo main job: an EfficientLLaVA search on the embedded smol-llava, then dense / uniform /
searched compared on held-out data. `make demo` runs it with the reduced defaults below within a
time budget (9 min 35 s on 2 cores, the screening sized to fit); on a cluster the same command scales
up by flags only.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from efficientllava.actors.config import RunConfig
from efficientllava.prune_engine.config import HeldoutConfig


#: the demo's own defaults where they differ from the presets' (shown in `demo --help`)
DEMO_DEFAULTS = {"engine.model": "smol-llava", "data.mm_calib": "easy-vqa:train,fashion-mnist:train"}
DEMO_HELDOUT_VQA = 150  # held-out questions per VQA set (the benchmarks use 1,000)
DEMO_TIME_BUDGET_S = 575.0  # the whole demo, venv present: 9 min 35 s (the search's screening is sized to it)
DEMO_MARGIN_S = 15.0  # saving the model, stopping Ray


class DemoJob(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    out: Path = Path("runs/demo")
    run: RunConfig  # the search; its data section is also the uniform baseline's calibration data
    preset: str = "default"  # where `run` started (reported)
    heldout: HeldoutConfig = HeldoutConfig(vqa=DEMO_HELDOUT_VQA)
    overwrite: bool = False
    time_budget_s: Optional[float] = Field(DEMO_TIME_BUDGET_S, gt=0)  # the whole demo; None: no budget


def demo_run_config(settings: dict, config: Path | None = None, sets: list[str] | None = None,
                    preset: str = "default") -> RunConfig:
    """The search of the demo: the command's settings over the demo's defaults; no image-text data
    for a text-only model."""
    from efficientllava.actors.options import run_config
    from efficientllava.prune_engine.models.loading import load_processor

    chosen = {k: v for k, v in settings.items() if not k.startswith("heldout.")}
    for key, value in DEMO_DEFAULTS.items():
        if chosen.get(key) is None:
            chosen[key] = value
    if settings.get("data.mm_calib") is None and not hasattr(load_processor(chosen["engine.model"]),
                                                              "image_processor"):
        chosen["data.mm_calib"] = None  # text-only model: no image-text data
    return run_config(chosen, config, sets, preset)


def run_demo(job: DemoJob, log=print) -> dict:
    """Baseline first, then the search in the time that is left: uniform SparseGPT and the held-out
    evaluation of dense and uniform are measured, and the search gets the demo's time budget less them
    and less what the searched model's final prune and evaluation will take (one more of each); within
    it the default preset sizes its screening to the machine at hand (search.offspring_budget)."""
    import shutil

    from efficientllava.actors.observe import heartbeat
    from efficientllava.actors.run import check_new_run_dir, run_search
    from efficientllava.prune_engine.evaluation.heldout import heldout_metrics
    from efficientllava.prune_engine.precision import resolve_device
    from efficientllava.prune_engine.prune import PruneJob, run_prune
    from efficientllava.search.events import OffspringSized

    out = job.out.resolve()
    if out.exists() and job.overwrite:
        shutil.rmtree(out)
    check_new_run_dir(str(out))
    run, h = job.run, job.heldout
    s, e, d = run.search, run.engine, run.data
    t0 = time.perf_counter()
    deadline = time.monotonic() + job.time_budget_s if job.time_budget_s else None
    budget = f", the whole demo in {job.time_budget_s:.0f} s" if job.time_budget_s else ""
    log(f"[1/3] uniform SparseGPT at {s.target} on {e.model}, proxy data {d.nsamples}x{d.seqlen} text tokens + "
        f"{d.mm_samples if d.mm_calib else 0} image-text samples ({d.mm_calib or 'none'}){budget}")
    with heartbeat(log, "uniform SparseGPT"):
        run_prune(PruneJob(model=e.model, out=out / "uniform", sparsity=s.target, data=d, progress=False,
                           device=resolve_device(e.device), dtype=e.dtype), log=log)
    prune_s = time.perf_counter() - t0
    log(f"[2/3] held-out evaluation ({h.split} split): {h.segments}x{h.seqlen} tokens of "
        f"{' and '.join(h.text_sets().values())}, {h.vqa} questions of each of {', '.join(h.vqa_sets().values())} "
        "per model")
    rows, eval_s = {}, 0.0

    def evaluate(name: str, spec: str) -> None:
        nonlocal eval_s
        t1 = time.perf_counter()
        with heartbeat(log, f"evaluating {name}"):
            rows[name] = heldout_metrics(spec, h, device=e.device, dtype=e.dtype)
        eval_s = max(eval_s, time.perf_counter() - t1)
        log(f"  {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in rows[name].items())
            + f" ({time.perf_counter() - t1:.0f} s)")

    evaluate("dense", e.model)
    evaluate("uniform", str(out / "uniform"))
    log(f"[3/3] EfficientLLaVA search on {e.model} (preset {job.preset}): population {s.population}, "
        f"{s.generations} generations, up to {s.offspring} screened children per generation, target {s.target}, "
        f"{e.mode} mode, fitness {e.loss}")
    if deadline is not None:  # what the searched model's final prune (one evaluator, every CPU of its node: see
        # EvaluatorActor.export) and evaluation will cost: what the uniform model's did, and a margin
        deadline -= prune_s + eval_s + DEMO_MARGIN_S
    t2 = time.perf_counter()
    sized = []  # how the screening was sized to the budget (search.offspring_budget), for demo.json
    summary = run_search(run, str(out / "search"), log=log, deadline=deadline,
                         on_event=lambda ev: sized.append(ev) if isinstance(ev, OffspringSized) else None)
    search_s = time.perf_counter() - t2
    evaluate("searched", summary["model_dir"])
    stats = summary.get("stats", {})
    result = {"config": json.loads(job.model_dump_json(exclude={"run"})), "run": run.sections(),
              "search_seconds": search_s, "total_seconds": time.perf_counter() - t0, "rows": rows,
              "policy": summary["policy"], "candidates": stats.get("candidates"), "screened": stats.get("screened"),
              "generations": summary["policy"].get("generations"), "stopped_by": summary["policy"].get("stopped_by"),
              "screening_sized": [dataclasses.asdict(e) for e in sized]}
    (out / "demo.json").write_text(json.dumps(result, indent=2))
    table, noise = format_table(rows), vqa_noise(rows, h.vqa)
    (out / "demo.md").write_text("\n\n".join(filter(None, (table, noise))) + "\n")
    log("\n" + table)
    log(f"\nsearch {search_s:.0f} s ({stats.get('candidates')} candidate evaluations, {stats.get('screened')} of "
        f"them screened on the slice), total {result['total_seconds']:.0f} s; outputs in {out}")
    for note in (noise, cut_short(result["stopped_by"], result["generations"], run.search.generations)):
        if note:
            log(note)
    return result


def vqa_noise(rows: dict[str, dict], questions: int) -> str | None:
    """The line under the demo's table that says which VQA differences between searched and uniform the held-out
    questions alone could make (prune_engine.evaluation.vqa.difference_noise); None without both rows' accuracies."""
    from efficientllava.prune_engine.evaluation.vqa import difference_noise

    u, s = rows.get("uniform", {}), rows.get("searched", {})
    keys = [k for k in COLUMNS if not k.startswith("ppl") and k in u and k in s and u[k] == u[k] and s[k] == s[k]]
    if not keys:
        return None
    cells = [f"{COLUMNS[k]} {100 * (s[k] - u[k]):+.1f} ± {difference_noise(u[k], s[k], questions):.1f}" for k in keys]
    return (f"searched - uniform in VQA points, ± what {questions} questions alone can move it (95%; a difference "
            "inside it is within noise): " + ", ".join(cells))


def cut_short(stopped_by: str | None, generations: int | None, planned: int) -> str | None:
    """The line under the demo's table when its time budget ended the search before the preset's generations: on a
    slow CPU the fixed work can leave the search its first population alone, and the table should not read as a
    finished search's."""
    if stopped_by != "time_budget" or generations is None or generations >= planned:
        return None
    return (f"the time budget stopped the search after {generations} of {planned} generation(s): on this machine the "
            "searched model is an early one, not a finished search's (`--time-budget 0` runs them all)")


#: the held-out columns (heldout_metrics' keys) as the demo table heads them; shifted ones marked
COLUMNS = {"ppl": "ppl (Wikipedia)", "ppl_pydoc": "ppl (Python docs, shifted)", "easy_vqa": "easy-vqa acc",
           "easy_vqa_rephrased": "easy-vqa rephrased (shifted)", "fashion_mnist": "Fashion-MNIST acc",
           "fashion_mnist_rephrased": "Fashion-MNIST rephrased (shifted)"}


def format_table(rows: dict[str, dict]) -> str:
    keys = [k for k in COLUMNS if any(k in r for r in rows.values())]
    lines = ["| model | sparsity | " + " | ".join(COLUMNS[k] for k in keys) + " |",
             "|---|---|" + "---|" * len(keys)]
    cell = lambda k, v: ("n/a (text-only)" if v != v else f"{v:.2f}" if k.startswith("ppl") else f"{v:.3f}")  # noqa: E731
    for name, r in rows.items():
        lines.append(f"| {name} | {r['sparsity']:.3f} | " + " | ".join(cell(k, r[k]) for k in keys) + " |")
    return "\n".join(lines)
