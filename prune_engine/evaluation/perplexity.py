"""Perplexity of a (pruned) model on held-out text."""
from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from efficientllava.prune_engine.models.adapter import ModelAdapter


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
