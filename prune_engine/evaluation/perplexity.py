"""Perplexity of a (pruned) model on held-out text."""
from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from prune_engine.models.adapter import ModelAdapter


@torch.no_grad()
def perplexity(adapter: ModelAdapter, segments: torch.Tensor, batch_size: int = 8, progress: bool = True) -> dict:
    """exp(mean next-token cross-entropy) over all positions of the segments (n, seqlen)."""
    total, count = 0.0, 0
    for i in tqdm(range(0, len(segments), batch_size), desc="perplexity", unit="batch", disable=not progress,
                  leave=False):
        ids = segments[i:i + batch_size].to(adapter.device)
        logits = adapter.model(input_ids=ids, use_cache=False).logits[:, :-1].float()
        total += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                                   reduction="sum").item()
        count += ids[:, 1:].numel()
    nll = total / count
    return {"perplexity": math.exp(nll), "nll": nll, "tokens": count, "segments": len(segments)}


def heldout_metrics(model: str, text: str = "wiki:eval", segments: int = 16, seqlen: int = 256,
                    vqa: dict[str, str] | None = None, vqa_samples: int = 200, seed: int = 0) -> dict:
    """The numbers the demo, the Tune sweep and the benchmarks compare models on.

    Held-out perplexity on `text`, accuracy (constrained choice) on each VQA set of `vqa`
    ({column: spec}, skipped — NaN — for text-only models) and the achieved mean sparsity of
    the decoder's pruned matrices."""
    from prune_engine.data.calibration import load_vqa, tokenizer_of
    from prune_engine.data.text import eval_segments, load_text
    from prune_engine.evaluation.vqa import vqa_accuracy
    from prune_engine.models.loading import load_model

    vqa = {"easy_vqa": "easy-vqa:test", "fashion_mnist": "fashion-mnist:test"} if vqa is None else vqa
    adapter, processor = load_model(model)
    ids = eval_segments(tokenizer_of(processor), load_text(text), segments, seqlen)
    row = {"ppl": perplexity(adapter, ids, progress=False)["perplexity"]}
    for name, spec in vqa.items():
        if not adapter.is_llava:
            row[name] = float("nan")
            continue
        samples = load_vqa(spec, limit=vqa_samples, seed=seed)
        row[name] = vqa_accuracy(adapter.model, processor, samples, progress=False)["accuracy"]
    weights = [m.weight for i in range(adapter.num_blocks) for m in adapter.linears(i).values()]
    row["sparsity"] = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    return row
