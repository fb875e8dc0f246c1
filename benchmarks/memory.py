"""Peak memory and time of one evaluator's work on random LLaVA-shaped models of growing size.

    python benchmarks/memory.py                                   # CPU rows: 135m, 360m, 1b
    python benchmarks/memory.py --device cuda --rows 7b/memory    # a GPU machine: LLaVA-1.5-7B shape, fp16

Needs nothing but torch and transformers (no Ray, no network, no weights: every model is built
here with random weights from a LLaMA text config and a CLIP vision config, and the calibration
batches are random token ids and pixels). Each row runs in its own process and measures, for the
evaluator's four kinds of work:

* sequential prune: one layer-sequential SparseGPT pass at 50% (what sequential mode does per candidate);
* database build: every linear of every block pruned at 5 levels (database mode, once per run);
* stitched candidate: a random policy assembled from the database and run forward on the proxy batches;
* projector gradient: the answer-token loss of image-text samples through the pruned language model
  and its gradient to the projector, all samples in one pass, and micro-batched (one sample per
  backward) with activation checkpointing.

Peak memory is the device's: on a GPU `torch.cuda.max_memory_allocated`, on the CPU the peak
resident set (VmHWM, reset before each phase) minus what the process held before the model was
built (the Python/torch runtime). M is the model's own size (all parameters, in the run's dtype);
W is one block's working set, from the shapes: the larger of what SparseGPT holds for the block's
largest stage (the fp32 row stack pruned at once, twice: the stack and its transpose, a boolean
mask, and three fp32 copies of the stage's Hessian: H, its damped copy, the inverse Cholesky
factor) and what the loss holds for one chunk of 512 targets (three fp32 arrays over the
vocabulary: logits, log-probabilities and log_softmax's temporary). The target
(issue #11): peak ≤ 1.5·M + W for the sequential prune and the stitched candidate, with the level
database off the device (`disk`: memory-mapped files in a temporary directory on local disk;
`memory`: CPU RAM, which on a CPU is the device's own memory).
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

#: LLaVA-shaped models: a LLaMA-family language model and a CLIP vision tower
SHAPES = {
    # a smoke test of the script itself (seconds)
    "tiny": dict(text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=512, tie_word_embeddings=True),
                 vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                             image_size=32, patch_size=8)),
    # SmolLM2-135M / -360M, Llama-3.2-1B language models with a small CLIP ViT-B/32 at 224 px (49 image tokens)
    "135m": dict(text=dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                           num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True),
                 vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                             image_size=224, patch_size=32)),
    "360m": dict(text=dict(hidden_size=960, intermediate_size=2560, num_hidden_layers=32, num_attention_heads=15,
                           num_key_value_heads=5, vocab_size=49152, tie_word_embeddings=True),
                 vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                             image_size=224, patch_size=32)),
    "1b": dict(text=dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
               vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           image_size=224, patch_size=32)),
    # LLaVA-1.5-7B: Vicuna-7B (LLaMA-2-7B shape) and CLIP ViT-L/14 at 336 px (576 image tokens)
    "7b": dict(text=dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=32, vocab_size=32064, tie_word_embeddings=False),
               vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                           image_size=336, patch_size=14)),
}
LEVELS = [0.3, 0.4, 0.5, 0.6, 0.7]
GB = 2**30


# ---- measuring ----------------------------------------------------------------------------
def _status_kb(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class Peak:
    """Peak memory of the device over a phase (see the module docstring)."""

    def __init__(self, device: str, runtime_bytes: int):
        self.device, self.runtime = device, runtime_bytes

    def reset(self) -> None:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        gc.collect()
        _malloc_trim()  # memory freed earlier but kept by the C allocator is not this phase's
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS

    def read(self) -> dict:
        import torch

        host = _status_kb("VmHWM") * 1024 - self.runtime
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            return {"peak": torch.cuda.max_memory_allocated(), "host_peak": host}
        return {"peak": host, "host_peak": host}


# ---- the model and its data ----------------------------------------------------------------
def build_model(size: str, device: str, dtype):
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    shape = SHAPES[size]
    text = LlamaConfig(max_position_embeddings=4096, **shape["text"])
    vision = CLIPVisionConfig(**shape["vision"])
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=text.vocab_size - 1,
                         vision_feature_layer=-2, vision_feature_select_strategy="default",
                         image_seq_length=(vision.image_size // vision.patch_size) ** 2,
                         tie_word_embeddings=shape["text"]["tie_word_embeddings"])
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlavaForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    model.eval().requires_grad_(False)
    return model, config


def batches(config, text_samples: int, seqlen: int, mm_samples: int, seed: int, dtype) -> tuple[list, list]:
    """Random calibration batches: text segments, and image-text samples (image tokens, a prompt, an
    answer whose tokens alone are loss targets). Returns (text batches, one image-text batch per sample)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    vocab = config.text_config.vocab_size - 1  # the last id is the image token
    ids = torch.randint(0, vocab, (text_samples, seqlen), generator=g)
    text = [{"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}]
    image_tokens = config.image_seq_length
    size = config.vision_config.image_size
    mm = []
    for _ in range(mm_samples):
        prompt, answer = torch.randint(0, vocab, (24,), generator=g), torch.randint(0, vocab, (8,), generator=g)
        seq = torch.cat([prompt[:4], torch.full((image_tokens,), config.image_token_index), prompt[4:], answer])[None]
        labels = torch.full_like(seq, -100)
        labels[0, -len(answer):] = answer
        mm.append({"input_ids": seq, "attention_mask": torch.ones_like(seq), "labels": labels,
                   "pixel_values": torch.randn(1, 3, size, size, generator=g).to(dtype)})
    return text, mm


def block_working_set(size: str, levels: int) -> int:
    """W: one block's working set, from the shapes (see the module docstring; the formula is the cluster plan's)."""
    from efficientllava.prune_engine.working_set import block_working_set as working_set

    return working_set(SHAPES[size]["text"], levels)


# ---- one row (a child process) -------------------------------------------------------------
def measure(size: str, store: str, device: str, dtype_name: str, offload: bool, text_samples: int, seqlen: int,
            mm_samples: int, seed: int) -> dict:
    import torch

    from efficientllava.prune_engine.answer_loss import backward_mean_answer_loss
    from efficientllava.prune_engine.models.adapter import ModelAdapter
    from efficientllava.prune_engine.pipeline import LayerwisePruner

    torch.manual_seed(seed)
    dtype = getattr(torch, dtype_name)
    _malloc_trim()
    runtime = _status_kb("VmRSS") * 1024
    peak = Peak(device, runtime)
    t0 = time.perf_counter()
    model, config = build_model(size, "cpu" if offload else device, dtype)
    adapter = ModelAdapter(model, f"llava-{size}")
    if offload:
        adapter.offload_blocks(device)
    built = time.perf_counter() - t0
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    linear_bytes = sum(m.weight.numel() * m.weight.element_size()
                       for b in range(adapter.num_blocks) for m in adapter.linears(b).values())
    text, mm = batches(config, text_samples, seqlen, mm_samples, seed, dtype)
    spill = tempfile.TemporaryDirectory(prefix="memory-bench-", dir=os.environ.get("TMPDIR"))
    row = {"size": size, "store": store, "device": device, "dtype": dtype_name, "offload": offload,
           "params": sum(p.numel() for p in model.parameters()), "model_bytes": model_bytes,
           "lm_linear_bytes": linear_bytes, "block_working_set": block_working_set(size, len(LEVELS)),
           "block_working_set_sequential": block_working_set(size, 1), "build_s": built, "phases": {}}

    def phase(name: str, work) -> None:
        peak.reset()
        start = time.perf_counter()
        work()
        row["phases"][name] = {"seconds": time.perf_counter() - start, **peak.read()}
        print(f"  {size}/{store}: {name} {row['phases'][name]['seconds']:.1f} s, "
              f"peak {row['phases'][name]['peak'] / GB:.2f} GiB", file=sys.stderr, flush=True)

    holder = {}
    phase("setup (block-0 inputs, dense copies)", lambda: holder.update(pruner=LayerwisePruner(
        adapter, text + mm, progress=False, reuse_prefix=True, kinds=["text"] + ["mm"] * len(mm), loss="ce",
        offload_dir=spill.name if store == "disk" else None, cache_bytes=4 * GB)))
    pruner = holder["pruner"]
    phase("sequential prune", lambda: pruner.prune(0.5))
    phase("database build", lambda: pruner.build_database(LEVELS))
    policy = [float(r) for r in torch.tensor(LEVELS)[torch.randint(0, len(LEVELS), (adapter.num_blocks,),
                                                                     generator=torch.Generator().manual_seed(seed))]]
    phase("stitched candidate", lambda: pruner.stitch(policy))
    projector = list(adapter.projector.parameters())

    def gradient(microbatches, checkpointing):
        for p in projector:
            p.requires_grad_(True)
            p.grad = None
        backward_mean_answer_loss(adapter, microbatches, checkpointing)
        for p in projector:
            p.requires_grad_(False)
            p.grad = None

    whole = [{k: torch.cat([b[k] for b in mm]) for k in mm[0]}]
    phase("projector gradient, one pass", lambda: gradient(whole, False))
    phase("projector gradient, micro-batch 1 + checkpointing", lambda: gradient(mm, True))
    row["database_entries"] = len(pruner.database)
    holder.clear()
    pruner = None  # the stores go before their directory
    spill.cleanup()
    return row


# ---- the table ---------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="135m/memory,135m/disk,360m/disk,1b/disk",
                    help="comma-separated SIZE/STORE (sizes: %s; store: disk | memory)" % ", ".join(SHAPES))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None, help="default: float32 on cpu, float16 on cuda")
    ap.add_argument("--offload", action="store_true", help="decoder blocks in CPU memory, on the device one at a time")
    ap.add_argument("--text-samples", type=int, default=8)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--mm-samples", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="memory", help="results file name (benchmarks/results/NAME.md|json)")
    ap.add_argument("--from-json", type=Path, default=None,
                    help="re-render the table and result files from an earlier run's JSON (no measuring)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    dtype = args.dtype or ("float32" if args.device == "cpu" else "float16")
    common = [args.device, dtype, args.offload, args.text_samples, args.seqlen, args.mm_samples, args.seed]
    if args.child:
        size, store = args.child.split("/")
        print(json.dumps(measure(size, store, *common)))
        return

    from benchmarks.common import machine, markdown_table, write_results

    rows, info = [], None
    if args.from_json:
        earlier = json.loads(args.from_json.read_text())
        rows, info = earlier["rows"], earlier["machine"]
        args = argparse.Namespace(**(earlier["settings"] | {"from_json": str(args.from_json), "name": args.name}))
        dtype = args.dtype
    for spec in [] if info else args.rows.split(","):
        size, _, store = spec.partition("/")
        if size not in SHAPES or store not in ("disk", "memory"):
            ap.error(f"bad row '{spec}': SIZE/STORE with SIZE in {', '.join(SHAPES)} and STORE disk | memory")
        print(f"{spec}: building and measuring in a child process", file=sys.stderr, flush=True)
        cmd = [sys.executable, __file__, "--child", f"{size}/{store}", "--device", args.device, "--dtype", dtype,
               "--text-samples", str(args.text_samples), "--seqlen", str(args.seqlen),
               "--mm-samples", str(args.mm_samples), "--seed", str(args.seed)] + (["--offload"] if args.offload else [])
        done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        if done.returncode != 0:
            rows.append({"size": size, "store": store, "error": f"exit {done.returncode}"})
            print(f"{spec}: failed (exit {done.returncode})", file=sys.stderr)
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))

    table_rows = []
    for r in rows:
        if "error" in r:
            table_rows.append([r["size"], r["store"], r["error"]] + [""] * 6)
            continue
        m = r["model_bytes"]
        for name, p in r["phases"].items():
            target = name in ("sequential prune", "stitched candidate")
            w = block_working_set(r["size"], 1 if name == "sequential prune" else len(LEVELS))
            budget = 1.5 * m + w
            table_rows.append([r["size"], r["store"], name, f"{p['seconds']:.1f}", f"{p['peak'] / GB:.2f}",
                               f"{p['peak'] / m:.2f}", f"{m / GB:.2f}", f"{w / GB:.2f}",
                               ("yes" if p["peak"] <= budget else "NO") if target else ""])
    headers = ["model", "database", "phase", "seconds", "peak GiB", "peak / M", "M GiB", "W GiB", "≤ 1.5·M + W"]
    table = markdown_table(headers, table_rows)
    print(table)
    notes = (f"Device {args.device}, dtype {dtype}{', blocks offloaded' if args.offload else ''}; calibration "
             f"{args.text_samples} x {args.seqlen} random text tokens + {args.mm_samples} image-text samples; "
             f"{len(LEVELS)} database levels; seed {args.seed}. Peak = the device's peak during the phase "
             "(CPU: VmHWM minus the runtime held before the model was built). M = the model's parameters; "
             "W = one block's working set (SparseGPT at one level for the sequential prune, at 5 levels otherwise, or "
             "the loss's logits chunk if larger). See the script's docstring."
             + (" No GPU row: this machine has no GPU; the LLaVA-1.5-7B shape (`--device cuda --rows 7b/memory`) "
                "has not been run." if args.device == "cpu" else ""))
    write_results(args.name, "Memory of one evaluator at growing model size", table,
                  {"rows": rows, "settings": vars(args) | {"dtype": dtype}, "machine": info or machine()}, notes)


if __name__ == "__main__":
    main()
