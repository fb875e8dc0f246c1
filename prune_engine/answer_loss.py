"""The answer-token loss of a candidate through its frozen, pruned language model, block by block: what scores and trains the projector.

The image-text batch enters through the model's own forward up to decoder block 0 (vision tower,
projector, image features merged at the image tokens), then runs block by block through the
adapter, so it works with offloaded blocks and every registered family, and only the answer
tokens reach lm_head. For the projector gradient a mini-batch may be cut into micro-batches
(each backward frees its activations before the next) and each block may be recomputed in the
backward pass instead of keeping its activations (activation checkpointing): the gradient is the
same, the peak memory is that of one micro-batch and one block.

The loss is the fitness's image-text term (docs/method.md §4 step 5, one objective): answer-token
cross-entropy to the labels, or — with a `teacher`, the dense model's answer-token log-probabilities
(`answer_logprobs`, computed once) — the KL divergence from the dense model's answer distribution.

In float16 the backward is loss-scaled (`scaled_gradients`): the loss is multiplied by a power of
two before the backward, so gradients below float16's smallest subnormal (6e-8) stay representable,
and the gradient is unscaled in float32; a scale that overflows is halved and the backward redone.
bfloat16 has float32's exponent range and needs no scaling.
"""
from __future__ import annotations

import math

import torch
from torch.utils.checkpoint import checkpoint

from efficientllava.prune_engine.models.adapter import ModelAdapter

#: the first loss scale of a float16 backward (halved while the scaled gradient overflows)
FP16_LOSS_SCALE = 2.0 ** 16


def _answer_count(batch: dict) -> int:
    return int((batch["labels"][:, 1:] != -100).sum())


def _answer_hidden(adapter: ModelAdapter, batch: dict, checkpointing: bool = False):
    """Final hidden states at the positions that predict an answer token, and those tokens."""
    grad = torch.is_grad_enabled()
    x = adapter.block_inputs(batch, grad=grad)
    h = x.hidden
    for b in range(adapter.num_blocks):
        if checkpointing and grad:
            h = checkpoint(adapter.run_block, b, h, x.kwargs, use_reentrant=False)
        else:
            h = adapter.run_block(b, h, x.kwargs)
    return adapter.loss_targets(h, x.labels)


@torch.no_grad()
def answer_logprobs(adapter: ModelAdapter, batch: dict) -> torch.Tensor:
    """The model's next-token log-probabilities at the answer targets of one batch ([answer tokens, vocab],
    CPU, fp16): the dense teacher of the KL loss, computed once before any pruning or projector step."""
    h, _ = _answer_hidden(adapter, batch)
    return torch.log_softmax(adapter.model.lm_head(h).float(), -1).to("cpu", torch.float16)


def summed_answer_loss(adapter: ModelAdapter, batch: dict, checkpointing: bool = False,
                       teacher: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """Summed answer-token loss of one batch (a tensor, with a graph when grad is enabled) and its number of
    answer tokens: cross-entropy to the labels, or with `teacher` Σ KL(teacher ‖ model) over the tokens."""
    h, targets = _answer_hidden(adapter, batch, checkpointing)
    logits = adapter.model.lm_head(h).float()
    if teacher is None:
        return torch.nn.functional.cross_entropy(logits, targets, reduction="sum"), len(targets)
    if teacher.shape != logits.shape:
        raise ValueError(f"teacher log-probabilities {tuple(teacher.shape)} for {tuple(logits.shape)} logits")
    t = teacher.to(logits.device, torch.float32)
    return (t.exp() * (t - torch.log_softmax(logits, -1))).sum(), len(targets)


def backward_mean_answer_loss(adapter: ModelAdapter, microbatches: list[dict], checkpointing: bool = False,
                              teachers: list[torch.Tensor] | None = None, scale: float = 1.0) -> float:
    """Mean answer-token loss over the micro-batches of one mini-batch (with `teachers`, one per micro-batch:
    the KL to the dense model); its gradient, times `scale`, is accumulated into the `.grad` of every
    parameter that requires one (each micro-batch's backward runs before the next forward)."""
    count = max(sum(_answer_count(b) for b in microbatches), 1)
    total = 0.0
    for i, batch in enumerate(microbatches):
        with torch.enable_grad():
            loss, _ = summed_answer_loss(adapter, batch, checkpointing, None if teachers is None else teachers[i])
            (loss * (scale / count)).backward()
        total += float(loss.detach())
    return total / count


def scaled_gradients(backward, params: list[torch.Tensor], scale: float | None = None,
                     min_scale: float = 1.0) -> tuple[float, list[torch.Tensor]]:
    """(loss, float32 gradients of `params`) of ``backward(scale) -> loss``, a backward pass that
    accumulates scale x the gradient into the params' ``.grad``.

    `scale` None: FP16_LOSS_SCALE when a parameter is float16, else 1 (no scaling). While the scaled
    gradient is not finite and the scale is above `min_scale`, the scale is halved and the backward
    redone; a non-finite loss or a gradient still not finite at `min_scale` is returned as it is (the
    caller's finiteness check reports it)."""
    if scale is None:
        scale = FP16_LOSS_SCALE if any(p.dtype == torch.float16 for p in params) else 1.0
    while True:
        for p in params:
            p.grad = None
        value = backward(scale)
        grads = [(p.grad.float() if p.grad is not None else torch.zeros_like(p, dtype=torch.float32)) / scale
                 for p in params]
        finite = all(bool(torch.isfinite(g).all()) for g in grads)
        if finite or not math.isfinite(value) or scale <= min_scale:
            for p in params:
                p.grad = None
            return value, grads
        scale /= 2
