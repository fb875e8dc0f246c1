"""CPU inference speed of SparseGPT-pruned models: DeepSparse vs plain PyTorch, per sparsity.

    .venv/bin/python benchmarks/deepsparse_speed.py                 # full run (SmolLM2-135M, 256 tokens)
    .venv/bin/python benchmarks/deepsparse_speed.py --quick --cores 1   # smoke run (0 and 50%, 32 tokens)

For each sparsity the decoder linears (q/k/v/o/gate/up/down of every block) are pruned with our
layer-sequential SparseGPT (unstructured, text calibration, default 16 x 128 tokens of wiki:calib);
embeddings, norms and lm_head stay dense. The language model is then exported to ONNX (fp32,
TorchScript exporter, opset 17; see prune_engine/export.py) as two fixed-shape graphs:

* prefill: input_ids (1, T) -> logits of the last position (1, vocab). lm_head runs on the last
  position only (what generation needs; over all T positions it would be ~20% of the work and dense).
* decode: one new token with a KV cache of T tokens as explicit inputs -> logits and the new
  keys/values (--no-decode skips it).

Each graph is checked against PyTorch on a held-out wiki:eval prompt (max |Δlogit| and argmax
agreement; the script stops if max |Δlogit| exceeds --atol), then timed at
batch 1 with DeepSparse (compile_model, num_cores=--cores) and with PyTorch running the same
wrapper modules under torch.no_grad with --cores threads: median of --iterations runs after
--warmup runs. The zero fraction of the decoder-linear initializers in the ONNX file is
reported, to show that the pruned zeros reached the engine.

Writes benchmarks/results/deepsparse_speed.{md,json,png}. Target of the issue: >= 1.6x DeepSparse
prefill speed-up at 50% sparsity over the dense DeepSparse model. Results depend on the CPU's
instruction set (recorded: DeepSparse's isa/vnni detection) and on the machine being quiet.
"""
from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import RESULTS, markdown_table, write_results  # noqa: E402
from efficientllava.prune_engine.data.calibration import text_batches  # noqa: E402
from efficientllava.prune_engine.export import (DecodeWrapper, OnnxRunner, PrefillWrapper, compare_logits,  # noqa: E402
                                 export_decode, export_prefill, initializer_sparsity, kv_shape,
                                 prefill_with_cache)
from efficientllava.prune_engine.models.loading import load_model  # noqa: E402
from efficientllava.prune_engine.pipeline import LayerwisePruner  # noqa: E402

TARGET = 1.6  # prefill speed-up at 50% over dense DeepSparse, from the issue


def check_and_time(kind: str, engine, inputs: list, reference, torch_fn, row: dict, failures: list,
                   sparsity: float, args) -> None:
    """Compare the engine's logits with PyTorch's, then time both; results go into `row` under `kind`."""
    agree = compare_logits(engine.run(inputs)[0], reference)
    row[f"{kind}_max_abs_diff"], row[f"{kind}_argmax_agree"] = agree.max_abs_diff, agree.argmax_agree
    if agree.max_abs_diff > args.atol:  # an argmax flip alone can be a near tie: reported, not fatal
        failures.append(f"{kind} at {sparsity:.0%}: {agree}")
    ds = timed(lambda: engine.run(inputs), args.warmup, args.iterations)
    with torch.no_grad():
        pt = timed(torch_fn, args.warmup, args.iterations)
    row[f"ds_{kind}_ms"], row[f"pt_{kind}_ms"] = ds["median_ms"], pt["median_ms"]
    row[f"ds_{kind}_all_ms"], row[f"pt_{kind}_all_ms"] = ds["all_ms"], pt["all_ms"]


def timed(fn, warmup: int, iterations: int) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "all_ms": times}


def linear_sparsity(adapter) -> float:
    zeros = total = 0
    for b in range(adapter.num_blocks):
        for m in adapter.linears(b).values():
            zeros += int((m.weight == 0).sum())
            total += m.weight.numel()
    return zeros / total


def onnx_linear_sparsity(path: Path, vocab: int) -> float:
    """Mean zero fraction of the 2-D fp32 initializers that are decoder linears (not embedding/lm_head)."""
    stats = [(np.prod(shape), frac) for shape, frac in initializer_sparsity(path).values() if vocab not in shape]
    return sum(n * f for n, f in stats) / max(sum(n for n, _ in stats), 1)


def dense_share(adapter, tokens: int) -> dict:
    """Multiply-adds of one prefill / decode step, and the share that weight sparsity cannot touch."""
    c = adapter.decoder.config
    prunable = sum(sum(counts.values()) for counts in adapter.param_counts())
    heads_dim = c.num_attention_heads * (getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads)
    lm_head = adapter.model.lm_head.weight.numel()
    out = {}
    for name, q, kv in (("prefill", tokens, tokens), ("decode", 1, tokens + 1)):
        attention = 2 * q * kv * heads_dim * c.num_hidden_layers  # QK^T and AV (eager: full square)
        total = q * prunable + attention + lm_head
        out[name] = {"macs": total, "dense_share": (attention + lm_head) / total}
    return out


def make_plot(rows: list[dict], path: Path, decode: bool, isa: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = [100 * r["sparsity"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax1.plot(s, [r["ds_prefill_ms"] for r in rows], "o-", label="DeepSparse prefill")
    ax1.plot(s, [r["pt_prefill_ms"] for r in rows], "s--", label="PyTorch prefill")
    if decode:
        ax1.plot(s, [r["ds_decode_ms"] for r in rows], "o-", label="DeepSparse decode")
        ax1.plot(s, [r["pt_decode_ms"] for r in rows], "s--", label="PyTorch decode")
    ax1.set_xlabel("sparsity of the decoder linears (%)")
    ax1.set_ylabel("latency, batch 1 (ms, median)")
    ax1.set_yscale("log")
    ax1.grid(alpha=0.3)
    ax1.legend()
    ax2.plot(s, [r["ds_prefill_speedup"] for r in rows], "o-", label="DeepSparse prefill")
    ax2.plot(s, [r["pt_prefill_ms_dense"] / r["pt_prefill_ms"] for r in rows], "s--", label="PyTorch prefill")
    if decode:
        ax2.plot(s, [r["ds_decode_speedup"] for r in rows], "o-", label="DeepSparse decode")
    ax2.axhline(TARGET, color="grey", ls=":", label=f"target {TARGET}x at 50%")
    ax2.axhline(1.0, color="black", lw=0.5)
    ax2.set_xlabel("sparsity of the decoder linears (%)")
    ax2.set_ylabel("speed-up over the dense model (same engine)")
    ax2.grid(alpha=0.3)
    ax2.legend()
    fig.suptitle(f"SparseGPT-pruned LM on CPU ({isa})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", help="model spec for load_model (default: embedded SmolLM2-135M)")
    ap.add_argument("--sparsities", default="0,0.5,0.6,0.7,0.8", help="comma-separated; 0 = dense (default %(default)s)")
    ap.add_argument("--tokens", type=int, default=256, help="prefill length T, also the decode KV length (default 256)")
    ap.add_argument("--decode", action=argparse.BooleanOptionalAction, default=True,
                    help="also export and time the decode graph (default on)")
    ap.add_argument("--iterations", type=int, default=20, help="timed runs per measurement (median reported)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed runs before timing")
    ap.add_argument("--seed", type=int, default=0, help="calibration sampling and prompt seed")
    ap.add_argument("--cores", type=int, default=os.cpu_count(),
                    help="DeepSparse num_cores and PyTorch threads (default: all, %(default)s)")
    ap.add_argument("--calib", default="wiki:calib", help="calibration text spec (default %(default)s)")
    ap.add_argument("--nsamples", type=int, default=16, help="calibration segments (default 16)")
    ap.add_argument("--seqlen", type=int, default=128, help="tokens per calibration segment (default 128)")
    ap.add_argument("--atol", type=float, default=1e-2,
                    help="max |Δlogit| allowed between ONNX/DeepSparse and PyTorch (default %(default)s)")
    ap.add_argument("--onnx-dir", default=None, help="keep the ONNX files here, one folder per graph (default: a temp dir, deleted)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: sparsities 0,0.5, 32 tokens, 8x64 calibration, 2 iterations, 1 warmup")
    args = ap.parse_args()
    if args.quick:
        args.sparsities, args.tokens, args.nsamples, args.seqlen = "0,0.5", 32, 8, 64
        args.iterations, args.warmup = 2, 1
    sparsities = [float(s) for s in args.sparsities.split(",")]
    if sparsities[0] != 0.0:
        sparsities.insert(0, 0.0)  # speed-ups are relative to the dense model
    torch.set_num_threads(args.cores)
    torch.manual_seed(args.seed)

    import deepsparse
    from deepsparse.cpu import cpu_architecture

    arch = cpu_architecture()
    isa = f"{arch.get('isa', '?')}{' + VNNI' if arch.get('vnni') else ''}"
    fast_kernels = str(arch.get("isa", "")).startswith("avx512")
    if not fast_kernels:
        print(f"note: DeepSparse has no fast sparse kernels for this CPU ({isa}): without AVX-512 its sparse "
              "matmuls run at or below dense speed, so expect no speed-up here")
    adapter, processor = load_model(args.model, dtype=torch.float32)
    vocab = adapter.model.lm_head.weight.shape[0]
    batches = text_batches(processor, args.calib, args.nsamples, args.seqlen, args.seed)
    prompt = text_batches(processor, "wiki:eval", 1, args.tokens + 1, args.seed)[0]["input_ids"]
    ids, next_id = prompt[:, :args.tokens].contiguous(), prompt[:, args.tokens:].contiguous()
    t0 = time.perf_counter()
    pruner = LayerwisePruner(adapter, batches, progress=False)
    print(f"{args.model}: {adapter.num_blocks} blocks, calibration {args.nsamples}x{args.seqlen} tokens "
          f"({time.perf_counter() - t0:.1f} s), DeepSparse {deepsparse.__version__} on {arch.get('vendor_model')} "
          f"({isa}), {args.cores} core(s), T={args.tokens}")

    tmp = tempfile.TemporaryDirectory(prefix="deepsparse_speed_") if args.onnx_dir is None else None
    onnx_dir = Path(args.onnx_dir or tmp.name)
    prefill, decode = PrefillWrapper(adapter).eval(), DecodeWrapper(adapter).eval()
    rows, failures = [], []
    try:
        for sparsity in sparsities:
            pruner.restore_dense()
            prune_s, calib_loss = 0.0, None
            if sparsity > 0:
                report = pruner.prune(sparsity)
                prune_s, calib_loss = report.seconds, report.loss
            row = {"sparsity": sparsity, "achieved_sparsity": linear_sparsity(adapter), "prune_s": prune_s,
                   "calibration_loss": calib_loss}
            with torch.no_grad():
                ref_logits = prefill(ids)
                full_next = adapter.model(torch.cat([ids, next_id], 1)).logits[:, -1]  # HF forward, no wrapper
            # --- prefill
            path = onnx_dir / f"prefill_{sparsity:.2f}" / "model.onnx"  # own folder: >2 GB graphs add data files
            t0 = time.perf_counter()
            export_prefill(adapter, path, args.tokens)
            row["export_s"] = time.perf_counter() - t0
            row["onnx_mb"] = sum(f.stat().st_size for f in path.parent.iterdir()) / 2**20
            row["onnx_linear_zeros"] = onnx_linear_sparsity(path, vocab)
            t0 = time.perf_counter()
            engine = OnnxRunner(path, "deepsparse", num_cores=args.cores)
            row["compile_s"] = time.perf_counter() - t0
            check_and_time("prefill", engine, [ids.numpy()], ref_logits, lambda: prefill(ids), row, failures,
                           sparsity, args)
            del engine
            gc.collect()
            if tmp is not None:
                shutil.rmtree(path.parent)
            # --- decode
            if args.decode:
                _, past = prefill_with_cache(adapter, ids)
                assert tuple(past[0].shape) == kv_shape(adapter, args.tokens)
                path = onnx_dir / f"decode_{sparsity:.2f}" / "model.onnx"
                export_decode(adapter, path, args.tokens)
                engine = OnnxRunner(path, "deepsparse", num_cores=args.cores)
                inputs = [next_id.numpy()] + [t.numpy() for t in past]
                check_and_time("decode", engine, inputs, full_next, lambda: decode(next_id, *past), row, failures,
                               sparsity, args)
                del engine
                gc.collect()
                if tmp is not None:
                    shutil.rmtree(path.parent)
            rows.append(row)
            line = (f"sparsity {sparsity:.0%} (achieved {row['achieved_sparsity']:.1%}, ONNX zeros "
                    f"{row['onnx_linear_zeros']:.1%}): DeepSparse prefill {row['ds_prefill_ms']:.1f} ms, "
                    f"PyTorch {row['pt_prefill_ms']:.1f} ms, max|Δlogit| {row['prefill_max_abs_diff']:.2e}")
            if args.decode:
                line += f"; decode DeepSparse {row['ds_decode_ms']:.2f} ms, PyTorch {row['pt_decode_ms']:.2f} ms"
            print(line, flush=True)
            if failures:
                raise SystemExit("ONNX/DeepSparse output disagrees with PyTorch: " + "; ".join(failures))
    finally:
        if tmp is not None:
            tmp.cleanup()

    dense = rows[0]
    for r in rows:
        r["ds_prefill_speedup"] = dense["ds_prefill_ms"] / r["ds_prefill_ms"]
        r["pt_prefill_ms_dense"] = dense["pt_prefill_ms"]
        if args.decode:
            r["ds_decode_speedup"] = dense["ds_decode_ms"] / r["ds_decode_ms"]
    headers = ["sparsity", "DeepSparse prefill ms", "speed-up vs dense DS", "PyTorch prefill ms"]
    if args.decode:
        headers += ["DS decode ms", "decode speed-up", "PyTorch decode ms"]
    headers += ["max|Δlogit|", "argmax agree", "ONNX zeros"]
    table_rows = []
    for r in rows:
        cells = [f"{r['sparsity']:.0%}", round(r["ds_prefill_ms"], 1), f"{r['ds_prefill_speedup']:.2f}x",
                 round(r["pt_prefill_ms"], 1)]
        if args.decode:
            cells += [round(r["ds_decode_ms"], 2), f"{r['ds_decode_speedup']:.2f}x", round(r["pt_decode_ms"], 2)]
        diff = max(r["prefill_max_abs_diff"], r.get("decode_max_abs_diff", 0.0))
        same = min(r["prefill_argmax_agree"], r.get("decode_argmax_agree", 1.0))
        cells += [f"{diff:.1e}", "yes" if same == 1.0 else f"{same:.0%}", f"{r['onnx_linear_zeros']:.1%}"]
        table_rows.append(cells)
    table = markdown_table(headers, table_rows)
    print()
    print(table)

    share = dense_share(adapter, args.tokens)
    half = next((r for r in rows if abs(r["sparsity"] - 0.5) < 1e-9), None)
    notes = [f"Prefill of {args.tokens} tokens and decode of 1 token after {args.tokens}, batch 1, fp32, "
             f"{args.cores} core(s) ({isa} per DeepSparse); median of {args.iterations} runs after {args.warmup} "
             f"warm-up runs. Pruning: SparseGPT, unstructured, {args.nsamples}x{args.seqlen} calibration tokens "
             f"of {args.calib}; embeddings, norms and lm_head dense. PyTorch runs the same wrapper modules "
             f"(eager attention, explicit causal mask) with {args.cores} thread(s)."]
    if not fast_kernels:
        notes.append(f"This CPU has no AVX-512 ({isa}): DeepSparse has no fast sparse kernels for it, so sparse "
                     "runs at or below dense speed here; the speed-ups below do not carry over to AVX-512 CPUs "
                     "(and those of an AVX-512 machine do not carry over to this one).")
    if half is not None:
        verdict = "meets" if half["ds_prefill_speedup"] >= TARGET else "does NOT meet"
        notes.append(f"At 50% sparsity the DeepSparse prefill speed-up over dense DeepSparse is "
                     f"{half['ds_prefill_speedup']:.2f}x, which {verdict} the issue's target of {TARGET}x.")
    sparse_rows = [r for r in rows if r["sparsity"] > 0]
    if sparse_rows:
        best = max(sparse_rows, key=lambda r: r["ds_prefill_speedup"])
        notes.append(f"Largest DeepSparse prefill speed-up measured: {best['ds_prefill_speedup']:.2f}x at "
                     f"{best['sparsity']:.0%} sparsity.")
        pt = [r["pt_prefill_ms"] for r in rows]
        notes.append(f"Noise check: PyTorch does not exploit zeros, so its prefill latency should not depend on "
                     f"sparsity; here it spans {min(pt):.1f}-{max(pt):.1f} ms ({max(pt) / min(pt) - 1:.0%} spread). "
                     "A large spread means the machine was busy and the speed-ups are unreliable.")
    notes.append(
        "What limits the speed-up: kernels for unstructured sparsity skip zeros at irregular positions, which "
        "costs index handling and gives up part of the dense kernels' register blocking and vectorisation, so "
        "moderate sparsity gains little and large gains need high sparsity (docs/method.md §7, on an "
        "AVX2-only AMD EPYC with magnitude masks and 128 tokens, 1.03x at 50% and 1.56x at 80%). Neural "
        "Magic's headline speed-ups are mostly for sparse *and* INT8-quantised models on AVX-512 VNNI CPUs; "
        "this benchmark stays fp32 so that the dense and sparse models are compared like with like. "
        f"Part of the work is untouched by weight sparsity: attention (QK^T, AV) and lm_head are "
        f"{share['prefill']['dense_share']:.1%} of the prefill multiply-adds and "
        f"{share['decode']['dense_share']:.1%} of a decode step's, which caps the speed-up (Amdahl); decode "
        "is bound by memory traffic, where sparse formats save bytes only once the index overhead is repaid. "
        "SmolLM2-135M's matrices are small (hidden size 576), so per-operator overheads weigh more than on "
        "7B-class models.")
    if args.decode:
        notes.append(f"Decode: a fixed-shape graph for one token after exactly {args.tokens} cached tokens (KV cache "
                     "passed in and returned as explicit tensors, copied in and out on every call); a generator "
                     "would need a graph per cache length or a padded cache with a mask.")
    notes.append("max|Δlogit| compares DeepSparse with PyTorch on a held-out wiki:eval prompt (prefill: "
                 "last-position logits; decode: the next token's logits against the HF model's own forward over "
                 "T+1 tokens). 'ONNX zeros' is the zero fraction of the decoder-linear initializers in the "
                 "exported file.")
    data = {"args": vars(args), "seed": args.seed, "model": args.model, "tokens": args.tokens,
            "settings": {"batch": 1, "dtype": "fp32", "cores": args.cores, "iterations": args.iterations,
                         "warmup": args.warmup, "calibration": f"{args.calib} {args.nsamples}x{args.seqlen}",
                         "opset": 17, "exporter": "torchscript", "decode": args.decode},
            "deepsparse": deepsparse.__version__, "cpu_architecture": arch, "macs": share,
            "target_speedup_at_50": TARGET, "rows": rows}
    title = (f"DeepSparse speed of SparseGPT-pruned {args.model}: prefill {args.tokens} tokens"
             f"{' + decode' if args.decode else ''}, batch 1, {args.cores} core(s)")
    write_results("deepsparse_speed", title, table, data, notes="\n\n".join(notes))
    make_plot(rows, RESULTS / "deepsparse_speed.png", args.decode, isa)


if __name__ == "__main__":
    main()
