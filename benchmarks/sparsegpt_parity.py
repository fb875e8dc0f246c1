"""Quality parity of our layer-sequential SparseGPT with the public reference, on the same data.

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/sparsegpt_parity.py \
        --reference-dir /tmp/sparsegpt-ref --ablations

The reference is IST-DASLab/sparsegpt (https://github.com/IST-DASLab/sparsegpt). Its code is NOT
part of this repository: extract its ``sparsegpt.py`` into a directory outside the repo, e.g.

    git --git-dir=<mirror of IST-DASLab/sparsegpt> show HEAD:sparsegpt.py > /tmp/sparsegpt-ref/sparsegpt.py

and pass that directory as ``--reference-dir``; the script imports the reference's ``SparseGPT``
class from there at run time. The reference module does ``from quant import *`` (only used when
quantising, which we never do); when ``quant.py`` is not next to it an empty stand-in module is
registered. Its ``fasterprune`` calls ``torch.cuda.synchronize()`` unconditionally, which is a
no-op stand-in here while the reference runs on a CPU-only torch.

Both methods see identical calibration inputs: the block-0 inputs of the same calibration
batches, captured through our ``ModelAdapter``, and every block is run through
``adapter.run_block``. The loop that drives the reference is written here and follows the
sequential loop of the reference's ``llama.py`` (default mode): for each decoder block, forward
hooks on all seven linears feed ``SparseGPT.add_batch`` while the DENSE block runs over all
calibration samples; then ``fasterprune(sparsity, prunen, prunem, blocksize=128, percdamp=.01)``
prunes every linear; then the block outputs are recomputed with the pruned block and become the
next block's inputs. Our method is ``LayerwisePruner(adapter, batches, pattern).prune(ratio)``,
which is "true sequential" inside a block (q/k/v -> o -> gate/up -> down, each stage calibrated
on the outputs of the already pruned stages).

Methods (the first two always run; the next two with ``--ablations``, the last with ``--driver-check``):

* ``ours``: the pipeline, ``LayerwisePruner``.
* ``reference``: reference ``SparseGPT`` class, reference schedule (dense block inputs).
* ``ours-kernel/dense-sched``: our ``sparsegpt()`` kernel driven by the reference's schedule:
  separates kernel differences from schedule differences.
* ``ref-kernel/true-seq``: the reference class driven stage by stage (its ``--true-sequential``).
* ``ours-kernel/true-seq``: our kernel driven stage by stage by this script's loop; must match
  ``ours`` (checks that this script's driver is faithful).

Each run starts from a freshly loaded dense model. Perplexity: held-out ``wiki:eval`` segments
(articles disjoint from ``wiki:calib``) with ``prune_engine.evaluation.perplexity``. Diagnostics per
run (not timed): calibration loss of the pruned model, achieved sparsity, and per decoder block
the relative output error of the pruned block against the dense block on the same (pruned-model)
input, plus the relative drift of the hidden states from the dense model's after each block,
measured on the first ``--diag-segments`` calibration segments.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import hashlib
import importlib
import io
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from efficientllava.prune_engine.data.calibration import text_batches, tokenizer_of  # noqa: E402
from efficientllava.prune_engine.data.text import eval_segments, load_text  # noqa: E402
from efficientllava.prune_engine.evaluation.perplexity import perplexity  # noqa: E402
from efficientllava.prune_engine.models.loading import load_model  # noqa: E402
from efficientllava.prune_engine.pipeline import LayerwisePruner  # noqa: E402
from efficientllava.prune_engine.sparsegpt import Hessian, Pattern, sparsegpt  # noqa: E402
from efficientllava.prune_engine.threads import one_cpu_thread  # noqa: E402

import efficientllava.prune_engine.pipeline as _pipeline_module  # noqa: E402
import efficientllava.prune_engine.sparsegpt as _sparsegpt_module  # noqa: E402
import efficientllava.prune_engine.threads as _threads_module  # noqa: E402

# What our code was at import time (prune_engine/ is being edited by others while benchmarks run).
SOURCES = {f"prune_engine/{Path(m.__file__).name}": hashlib.sha256(Path(m.__file__).read_bytes()).hexdigest()[:16]
           for m in (_sparsegpt_module, _pipeline_module, _threads_module)}

MAIN_METHODS = ("ours", "reference")
ABLATIONS = ("ours-kernel/dense-sched", "ref-kernel/true-seq")
DRIVER_CHECK = ("ours-kernel/true-seq",)


# --- settings ------------------------------------------------------------------------------
def parse_setting(spec: str) -> tuple[str, float, Pattern]:
    """'0.5' / '50%' -> unstructured; '2:4' -> N:M. Returns (label, sparsity, pattern)."""
    if ":" in spec:
        pattern = Pattern.parse(spec)
        return spec, pattern.sparsity, pattern
    value = float(spec.rstrip("%")) / (100.0 if spec.endswith("%") else 1.0)
    return f"{round(value * 100):d}% unstructured", value, Pattern()


# --- the reference ---------------------------------------------------------------------------
def import_reference(ref_dir: str):
    """The reference's SparseGPT class, imported from `ref_dir` (outside this repository)."""
    path = Path(ref_dir).expanduser().resolve()
    if not (path / "sparsegpt.py").is_file():
        sys.exit(f"error: {path / 'sparsegpt.py'} not found (extract it from github:IST-DASLab/sparsegpt)")
    if ROOT in path.parents or path == ROOT:
        sys.exit("error: --reference-dir must be outside this repository")
    if not (path / "quant.py").is_file() and "quant" not in sys.modules:
        sys.modules["quant"] = types.ModuleType("quant")  # `from quant import *`: quantisation is never used
    sys.path.insert(0, str(path))
    module = importlib.import_module("sparsegpt")
    if Path(module.__file__).resolve().parent != path:
        sys.exit(f"error: imported {module.__file__}, not the reference in {path}")
    digest = hashlib.sha256((path / "sparsegpt.py").read_bytes()).hexdigest()
    return module.SparseGPT, {"dir": str(path), "sparsegpt_py_sha256": digest}


@contextlib.contextmanager
def reference_environment():
    """Silence the reference's per-layer prints; make torch.cuda.synchronize a no-op without CUDA."""
    out = io.StringIO()
    saved = torch.cuda.synchronize
    if not torch.cuda.is_available():
        torch.cuda.synchronize = lambda *args, **kwargs: None
    try:
        with contextlib.redirect_stdout(out):
            yield out
    finally:
        torch.cuda.synchronize = saved


# --- drivers -------------------------------------------------------------------------------
def run_ours(adapter, batches, sparsity, pattern, **_):
    pruner = LayerwisePruner(adapter, batches, pattern, progress=False)
    pruner.prune(sparsity)


@torch.no_grad()
def run_driver(adapter, batches, sparsity, pattern, *, kernel: str, schedule: str, SparseGPT=None,
               blocksize: int = 128, percdamp: float = 0.01, **_):
    """Block-by-block pruning written after the reference's llama.py loop.

    schedule 'dense': one group per block (all seven linears), their statistics gathered in one
    forward of the dense block; 'true-seq': one group per stage, gathered with the earlier
    stages already pruned. kernel 'reference': one reference SparseGPT object per linear fed by
    forward hooks; 'ours': one Hessian per stage fed by a pre-hook on its first linear, pruned
    by prune_engine.sparsegpt.sparsegpt.
    """
    inputs = [adapter.block_inputs(b) for b in batches]
    hidden = [x.hidden for x in inputs]
    for b in range(adapter.num_blocks):
        stages = adapter.stages(b)
        groups = [stages] if schedule == "dense" else [[stage] for stage in stages]
        for group in groups:
            handles, mask = [], {"now": None}
            if kernel == "reference":
                collectors = {n: SparseGPT(m) for stage in group for n, m in stage}

                def post_hook(name):
                    def hook(_module, inp, out):
                        collectors[name].add_batch(inp[0].data, out.data)
                    return hook

                handles = [m.register_forward_hook(post_hook(n)) for stage in group for n, m in stage]
            else:
                hessians = [Hessian(stage[0][1].in_features) for stage in group]

                def pre_hook(k):
                    def hook(_module, args):
                        hessians[k].add(args[0], mask["now"])
                    return hook

                handles = [stage[0][1].register_forward_pre_hook(pre_hook(k)) for k, stage in enumerate(group)]
            try:
                for h, x in zip(hidden, inputs):
                    mask["now"] = x.token_mask
                    adapter.run_block(b, h, x.kwargs)
            finally:
                for handle in handles:
                    handle.remove()
            if kernel == "reference":
                for stage in group:
                    for n, _ in stage:
                        collectors[n].fasterprune(sparsity, prunen=pattern.n, prunem=pattern.m,
                                                  blocksize=blocksize, percdamp=percdamp)
                        collectors[n].free()
            else:
                for stage, hessian in zip(group, hessians):
                    modules = [m for _, m in stage]
                    ratios = None if pattern.structured else [[sparsity] for _ in modules]
                    H = hessian.matrix()
                    with one_cpu_thread(H.device):  # as the pipeline runs it
                        out = sparsegpt([m.weight.data for m in modules], H, ratios, pattern, blocksize, percdamp)
                    for m, per_ratio in zip(modules, out):
                        m.weight.data.copy_(per_ratio[0].weight)
        hidden = [adapter.run_block(b, h, x.kwargs) for h, x in zip(hidden, inputs)]


METHODS = {
    "ours": dict(fn=run_ours),
    "reference": dict(fn=run_driver, kernel="reference", schedule="dense"),
    "ours-kernel/dense-sched": dict(fn=run_driver, kernel="ours", schedule="dense"),
    "ref-kernel/true-seq": dict(fn=run_driver, kernel="reference", schedule="true-seq"),
    "ours-kernel/true-seq": dict(fn=run_driver, kernel="ours", schedule="true-seq"),
}


# --- diagnostics ---------------------------------------------------------------------------
def linear_weights(adapter) -> list[dict[str, torch.Tensor]]:
    return [{n: m.weight.detach().clone() for n, m in adapter.linears(i).items()} for i in range(adapter.num_blocks)]


def checksum(weights) -> str:
    h = hashlib.sha256()
    for block in weights:
        for n in sorted(block):
            h.update(block[n].float().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def diagnostics(adapter, batches, dense, n_segments: int) -> dict:
    """Sparsity, calibration loss and per-block errors of the pruned model in `adapter`."""
    zeros = total = 0
    for i in range(adapter.num_blocks):
        for m in adapter.linears(i).values():
            zeros += int((m.weight == 0).sum())
            total += m.weight.numel()
    loss_sum = count = 0
    for batch in batches:
        x = adapter.block_inputs(batch)
        h = x.hidden
        for b in range(adapter.num_blocks):
            h = adapter.run_block(b, h, x.kwargs)
        s, c = adapter.loss(h, x.labels)
        loss_sum, count = loss_sum + s, count + c
    sub = {k: v[:n_segments] for k, v in batches[0].items()}
    x = adapter.block_inputs(sub)
    h_pruned, h_dense = x.hidden, x.hidden
    block_err, drift = [], []
    for b in range(adapter.num_blocks):
        linears = adapter.linears(b)
        pruned = {n: m.weight.data.clone() for n, m in linears.items()}
        out_pruned = adapter.run_block(b, h_pruned, x.kwargs)
        for n, m in linears.items():
            m.weight.data.copy_(dense[b][n])
        out_dense_same_input = adapter.run_block(b, h_pruned, x.kwargs)
        h_dense = adapter.run_block(b, h_dense, x.kwargs)
        for n, m in linears.items():
            m.weight.data.copy_(pruned[n])
        block_err.append(_rel(out_pruned - out_dense_same_input, out_dense_same_input - h_pruned))
        h_pruned = out_pruned
        drift.append(_rel(h_pruned - h_dense, h_dense))
    return {"sparsity": zeros / total, "calib_loss": loss_sum / max(count, 1),
            "block_rel_err": block_err, "hidden_rel_drift": drift, "diag_segments": n_segments}


def _rel(diff: torch.Tensor, ref: torch.Tensor) -> float:
    """||diff||² / ||ref||² (for block errors `ref` is the dense block's residual update)."""
    return float(diff.double().square().sum() / ref.double().square().sum())


# --- machine info --------------------------------------------------------------------------
def machine_info() -> dict:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import transformers

    info = {"cpu": cpu, "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "python": platform.python_version(),
            "platform": platform.platform(), "torch": torch.__version__, "transformers": transformers.__version__,
            "load_average_start": os.getloadavg()}
    with contextlib.suppress(Exception):
        info["repo_commit"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                                             text=True, check=True).stdout.strip()
    return info


# --- main ----------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference-dir", help="directory holding the reference's sparsegpt.py (required to run)")
    ap.add_argument("--reference-commit", default=None, help="commit of the reference it was extracted from")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--calib", default="wiki:calib")
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--eval-text", default="wiki:eval")
    ap.add_argument("--eval-samples", type=int, default=64)
    ap.add_argument("--eval-seqlen", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--settings", nargs="+", default=["0.5", "2:4", "0.7"],
                    help="sparsity settings: a fraction (unstructured) or N:M")
    ap.add_argument("--ablations", action="store_true", help="also run " + ", ".join(ABLATIONS))
    ap.add_argument("--driver-check", action="store_true", help="also run " + ", ".join(DRIVER_CHECK))
    ap.add_argument("--no-diagnostics", action="store_true")
    ap.add_argument("--diag-segments", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sparsegpt_parity"),
                    help="output path without suffix (.json and .md are written)")
    ap.add_argument("--report-from", default=None,
                    help="run nothing: rebuild the report from this JSON (written by this script)")
    ap.add_argument("--seed-runs", nargs="*", default=[],
                    help="JSONs of runs of this script with other calibration seeds, added as a seed study")
    args = ap.parse_args(argv)
    if args.report_from:
        result = json.loads(Path(args.report_from).read_text())
    else:
        if not args.reference_dir:
            ap.error("--reference-dir is required (unless --report-from)")
        result = run(args)
    if args.seed_runs:
        result["seed_study"] = seed_study(result, [json.loads(Path(p).read_text()) for p in args.seed_runs])
        result.setdefault("report_command", None)
        result["report_command"] = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    out.with_suffix(".md").write_text(md)
    print()
    print(md)
    return 0 if all(v["ours_no_worse"] for v in result["parity"]) else 1


def run(args) -> dict:

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    SparseGPT, ref_info = import_reference(args.reference_dir)
    ref_info["commit"] = args.reference_commit
    info = machine_info()
    started = _dt.datetime.now(_dt.timezone.utc)
    settings = [parse_setting(s) for s in args.settings]
    methods = (list(MAIN_METHODS) + (list(ABLATIONS) if args.ablations else [])
               + (list(DRIVER_CHECK) if args.driver_check else []))

    adapter, processor = load_model(args.model)
    dense = linear_weights(adapter)
    dense_sum = checksum(dense)
    batches = text_batches(processor, args.calib, args.nsamples, args.seqlen, args.seed)
    segments = eval_segments(tokenizer_of(processor), load_text(args.eval_text), args.eval_samples, args.eval_seqlen)
    print(f"model {args.model}: {adapter.num_blocks} blocks; calibration {args.nsamples}x{args.seqlen} of "
          f"{args.calib} (seed {args.seed}); evaluation {len(segments)}x{args.eval_seqlen} of {args.eval_text}; "
          f"{torch.get_num_threads()} torch threads", flush=True)
    dense_ppl = perplexity(adapter, segments, progress=False)
    print(f"dense ppl {dense_ppl['perplexity']:.3f}", flush=True)
    dense_diag = None if args.no_diagnostics else diagnostics(adapter, batches, dense, args.diag_segments)
    del adapter

    runs = []
    for label, sparsity, pattern in settings:
        for method in methods:
            adapter, _ = load_model(args.model)  # fresh dense weights for every run
            if checksum(linear_weights(adapter)) != dense_sum:
                sys.exit("error: reloaded model differs from the dense weights")
            spec = dict(METHODS[method])
            fn = spec.pop("fn")
            with reference_environment() as captured:
                start = time.perf_counter()
                fn(adapter, batches, sparsity, pattern, SparseGPT=SparseGPT, **spec)
                seconds = time.perf_counter() - start
            ppl = perplexity(adapter, segments, progress=False)
            row = {"setting": label, "sparsity": sparsity, "pattern": str(pattern), "method": method,
                   "perplexity": ppl["perplexity"], "nll": ppl["nll"], "seconds": seconds,
                   "reference_lines": captured.getvalue().count("\n"), "load_average": os.getloadavg()}
            if not args.no_diagnostics:
                row.update(diagnostics(adapter, batches, dense, args.diag_segments))
            runs.append(row)
            extra = "" if args.no_diagnostics else (f"  sparsity {row['sparsity']:.4f}  calib loss "
                                                    f"{row['calib_loss']:.4f}  final drift "
                                                    f"{row['hidden_rel_drift'][-1]:.4f}")
            print(f"{label:>18}  {method:<24} ppl {ppl['perplexity']:8.3f}  {seconds:7.1f} s{extra}", flush=True)
            del adapter

    result = {
        "benchmark": "sparsegpt_parity", "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "date_utc": started.isoformat(timespec="seconds"),
        "finished_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {**info, "load_average_end": os.getloadavg(),
                    "note": "timings were taken on a shared, noisy CPU machine (other jobs running); "
                            "treat them as rough"},
        "reference": {**ref_info, "repository": "https://github.com/IST-DASLab/sparsegpt"},
        "setup": {"model": args.model, "calib": args.calib, "nsamples": args.nsamples, "seqlen": args.seqlen,
                  "eval_text": args.eval_text, "eval_samples": len(segments), "eval_seqlen": args.eval_seqlen,
                  "seed": args.seed, "blocksize": 128, "percdamp": 0.01, "diag_segments": args.diag_segments},
        "dense": {"perplexity": dense_ppl["perplexity"], "nll": dense_ppl["nll"], **(dense_diag or {})},
        "runs": runs,
        "parity": verdicts(runs),
        "sources": SOURCES,
    }
    return result


def seed_study(main: dict, others: list[dict]) -> dict:
    """Per setting and calibration seed, the perplexity of every method (main run first)."""
    keys = ("model", "calib", "nsamples", "seqlen", "eval_text", "eval_samples", "eval_seqlen")
    rows = []
    for res in [main, *others]:
        if any(res["setup"][k] != main["setup"][k] for k in keys):
            sys.exit("error: a --seed-runs file has a different setup (only the seed may differ)")
        for r in res["runs"]:
            rows.append({"seed": res["setup"]["seed"], "setting": r["setting"], "method": r["method"],
                         "perplexity": r["perplexity"], "seconds": r["seconds"],
                         **({"calib_loss": r["calib_loss"]} if "calib_loss" in r else {})})
    summary = []
    for setting in dict.fromkeys(r["setting"] for r in rows):
        seeds = sorted({r["seed"] for r in rows if r["setting"] == setting})
        by = {(r["seed"], r["method"]): r["perplexity"] for r in rows if r["setting"] == setting}
        rel = [100 * (by[(s, "ours")] / by[(s, "reference")] - 1) for s in seeds
               if (s, "ours") in by and (s, "reference") in by]
        if len(rel) >= 2:
            mean = sum(rel) / len(rel)
            sd = math.sqrt(sum((x - mean) ** 2 for x in rel) / (len(rel) - 1))
            summary.append({"setting": setting, "seeds": seeds, "ours_vs_ref_percent": rel, "mean_percent": mean,
                            "sd_percent": sd, "ours_better_count": sum(x < 0 for x in rel)})
    return {"rows": rows, "summary": summary,
            "commands": [res.get("command") for res in others],
            "sources": [res.get("sources") for res in others]}


def verdicts(runs) -> list[dict]:
    by = {(r["setting"], r["method"]): r for r in runs}
    out = []
    for setting in dict.fromkeys(r["setting"] for r in runs):
        ours, ref = by[(setting, "ours")], by[(setting, "reference")]
        out.append({"setting": setting, "ours": ours["perplexity"], "reference": ref["perplexity"],
                    "delta": ours["perplexity"] - ref["perplexity"],
                    "ours_no_worse": ours["perplexity"] <= ref["perplexity"]})
    return out


def markdown(result: dict) -> str:
    m, s, runs = result["machine"], result["setup"], result["runs"]
    by = {(r["setting"], r["method"]): r for r in runs}
    lines = [
        "# SparseGPT quality parity: ours vs the reference (IST-DASLab/sparsegpt)",
        "",
        f"Model `{s['model']}` (SmolLM2-135M). Calibration: {s['nsamples']} segments x {s['seqlen']} tokens of "
        f"`{s['calib']}` (seed {s['seed']}), identical block-0 inputs for both methods. Held-out perplexity: "
        f"{s['eval_samples']} segments x {s['eval_seqlen']} tokens of `{s['eval_text']}` (articles disjoint from "
        f"the calibration ones). blocksize {s['blocksize']}, percdamp {s['percdamp']}. Every run starts from a "
        "freshly loaded dense model.",
        "",
        f"Dense perplexity: **{result['dense']['perplexity']:.3f}**",
        "",
        "| setting | ours ppl | reference ppl | ours - ref | ours s | reference s | ours no worse |",
        "|---|---:|---:|---:|---:|---:|:---:|",
    ]
    for v in result["parity"]:
        o, r = by[(v["setting"], "ours")], by[(v["setting"], "reference")]
        lines.append(f"| {v['setting']} | {v['ours']:.3f} | {v['reference']:.3f} | {v['delta']:+.3f} | "
                     f"{o['seconds']:.1f} | {r['seconds']:.1f} | {'yes' if v['ours_no_worse'] else '**NO**'} |")
    methods = list(dict.fromkeys(r["method"] for r in runs))
    floor = [(v["setting"], by[(v["setting"], "ours-kernel/dense-sched")]["perplexity"] / v["reference"] - 1)
             for v in result["parity"] if (v["setting"], "ours-kernel/dense-sched") in by]
    if floor:
        lines += ["", "Noise floor of one run: `ours-kernel/dense-sched` is the reference's algorithm with our kernel "
                  "(on the same Hessian: identical N:M masks, unstructured masks that differ only by the reference "
                  "pruning one extra weight per 128-column block, floating-point operations in another order), so "
                  "its gap to `reference` is mostly rounding amplified through the sequential blocks: "
                  + ", ".join(f"{setting} {100 * g:+.2f}%" for setting, g in floor) + "."]
    if "calib_loss" in runs[0]:
        lines += ["", "## All runs and diagnostics", "",
                  "Diagnostics (not timed): achieved sparsity of the pruned linears; mean next-token loss on the "
                  "calibration tokens; mean over blocks of the relative block error ||f_pruned(h) - f_dense(h)||² / "
                  "||f_dense(h) - h||² on the pruned model's own block inputs h; relative drift of the final hidden "
                  f"states from the dense model's (first {s['diag_segments']} calibration segments). Dense "
                  f"calibration loss: {result['dense']['calib_loss']:.4f}.", "",
                  "| setting | method | ppl | seconds | sparsity | calib loss | mean block err | final drift |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for setting in dict.fromkeys(r["setting"] for r in runs):
            for method in methods:
                r = by[(setting, method)]
                lines.append(f"| {setting} | {method} | {r['perplexity']:.3f} | {r['seconds']:.1f} | "
                             f"{r['sparsity']:.4f} | {r['calib_loss']:.4f} | "
                             f"{sum(r['block_rel_err']) / len(r['block_rel_err']):.4f} | "
                             f"{r['hidden_rel_drift'][-1]:.4f} |")
    lines += ["", "Methods: `ours` = `LayerwisePruner` (true sequential inside a block); `reference` = the "
              "reference's `SparseGPT` class driven like its `llama.py` (all linears of a block calibrated on the "
              "dense block); ablations, when present: `ours-kernel/dense-sched` = our `sparsegpt()` kernel with the "
              "reference's schedule, `ref-kernel/true-seq` = the reference class stage by stage (its "
              "`--true-sequential`), `ours-kernel/true-seq` = our kernel stage by stage through this script's "
              "driver (should equal `ours`).",
              "",
              f"Machine: {m['cpu']}, {m['cpu_cores']} cores, {m['torch_threads']} torch threads; torch "
              f"{m['torch']}, transformers {m['transformers']}, Python {m['python']}. Date (UTC) "
              f"{result['date_utc']}. Load average at start {tuple(round(x, 2) for x in m['load_average_start'])}, "
              f"at end {tuple(round(x, 2) for x in m['load_average_end'])}. **Timings were taken on a shared, noisy "
              "machine (other jobs running) and are rough; both methods ran in the same process, one after the "
              "other.** Seconds cover capturing the block-0 inputs and the whole sequential pass, not the "
              "evaluation.",
              "",
              f"Reference: {result['reference']['repository']} `sparsegpt.py` (sha256 "
              f"{result['reference']['sparsegpt_py_sha256'][:16]}…"
              + (f", commit {result['reference']['commit']}" if result['reference'].get('commit') else "")
              + "), imported at run time from outside the repository.",
              "",
              f"Command: `{result['command']}`", ""]
    if result.get("sources"):
        lines += ["Our code at run time (sha256 prefixes): "
                  + ", ".join(f"`{k}` {v}" for k, v in result["sources"].items()) + ".", ""]
    study = result.get("seed_study")
    if study:
        lines += ["## Calibration-seed study", "",
                  "The same comparison with other calibration samples (`--seed`, i.e. other `wiki:calib` "
                  "segments; the evaluation segments are unchanged). Held-out perplexity per seed:", ""]
        for item in study["summary"]:
            setting = item["setting"]
            methods = list(dict.fromkeys(r["method"] for r in study["rows"] if r["setting"] == setting))
            by = {(r["seed"], r["method"]): r["perplexity"] for r in study["rows"] if r["setting"] == setting}
            lines += [f"**{setting}**", "", "| seed | " + " | ".join(methods) + " | ours vs ref |",
                      "|---:|" + "---:|" * (len(methods) + 1)]
            for seed, rel in zip(item["seeds"], item["ours_vs_ref_percent"]):
                cells = [f"{by[(seed, m)]:.3f}" if (seed, m) in by else "" for m in methods]
                lines.append(f"| {seed} | " + " | ".join(cells) + f" | {rel:+.2f}% |")
            lines += ["", f"ours vs reference over {len(item['seeds'])} seeds: mean {item['mean_percent']:+.2f}%, "
                      f"sd {item['sd_percent']:.2f}%; ours better on {item['ours_better_count']} of "
                      f"{len(item['seeds'])}.", ""]
        lines += ["Seed runs: " + "; ".join(f"`{c}`" for c in study["commands"] if c), ""]
        seen = {json.dumps(x, sort_keys=True) for x in study.get("sources", []) if x}
        if seen:
            lines += ["Our code in the seed runs (sha256 prefixes): " + "; ".join(
                ", ".join(f"`{k}` {v}" for k, v in json.loads(x).items()) for x in sorted(seen)) + ".", ""]
        if result.get("report_command"):
            lines += [f"Report assembled with: `{result['report_command']}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
