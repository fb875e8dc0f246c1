"""The answer-token loss of a candidate through its frozen, pruned language model, block by block: what scores and trains the projector.

The image-text batch enters through the model's own forward up to decoder block 0 (vision tower,
projector, image features merged at the image tokens), then runs block by block through the
adapter, so it works with offloaded blocks and every registered family, and only the answer
tokens reach lm_head. For the projector gradient a mini-batch may be cut into micro-batches
(each backward frees its activations before the next) and each block may be recomputed in the
backward pass instead of keeping its activations (activation checkpointing): the gradient is the
same, the peak memory is that of one micro-batch and one block.
"""
from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from efficientllava.prune_engine.models.adapter import ModelAdapter


def _answer_count(batch: dict) -> int:
    return int((batch["labels"][:, 1:] != -100).sum())


def summed_answer_loss(adapter: ModelAdapter, batch: dict, checkpointing: bool = False) -> tuple[torch.Tensor, int]:
    """Summed answer-token cross-entropy of one batch (a tensor, with a graph when grad is enabled) and
    its number of answer tokens."""
    grad = torch.is_grad_enabled()
    x = adapter.block_inputs(batch, grad=grad)
    h = x.hidden
    for b in range(adapter.num_blocks):
        if checkpointing and grad:
            h = checkpoint(adapter.run_block, b, h, x.kwargs, use_reentrant=False)
        else:
            h = adapter.run_block(b, h, x.kwargs)
    h, targets = adapter.loss_targets(h, x.labels)
    logits = adapter.model.lm_head(h).float()
    return torch.nn.functional.cross_entropy(logits, targets, reduction="sum"), len(targets)


def backward_mean_answer_loss(adapter: ModelAdapter, microbatches: list[dict], checkpointing: bool = False) -> float:
    """Mean answer-token loss over the micro-batches of one mini-batch; its gradient is accumulated into
    the `.grad` of every parameter that requires one (each micro-batch's backward runs before the next
    forward)."""
    count = max(sum(_answer_count(b) for b in microbatches), 1)
    total = 0.0
    for batch in microbatches:
        with torch.enable_grad():
            loss, _ = summed_answer_loss(adapter, batch, checkpointing)
            (loss / count).backward()
        total += float(loss.detach())
    return total / count
