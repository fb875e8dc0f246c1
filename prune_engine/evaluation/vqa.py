"""Constrained-choice VQA accuracy (as lm-eval scores multiple choice).

For every sample, each of ``sample.choices`` is scored by the summed log-likelihood of its
tokens (exactly the answer tokens ``collate_vqa`` trains on, without the end-of-turn token)
following the sample's prompt; the prediction is the argmax (first choice on ties). A batch
of prompts is run once, left-padded, with the KV cache (logits only at the last position);
the cache is then repeated once per multi-token choice and the remaining tokens of the
choices are scored in one continuation forward per remaining length (no row padded: a
padded row costs as much as a real one). Families whose positions the model derives from
the images (M-RoPE: Qwen2-VL, Qwen2.5-VL) score every (prompt + choice) sequence whole
instead, so that the model computes its own positions.
"""
from __future__ import annotations

import copy
import dataclasses
from collections import defaultdict

import torch

from efficientllava.prune_engine.data.vqa import VQASample, answer_ids, collate_vqa
from efficientllava.prune_engine.models.families import family_of
from efficientllava.prune_engine.models.kv_cache import cache_kwarg, output_cache

_TEXT_KEYS = ("input_ids", "attention_mask", "labels")


def _image_inputs(batch: dict, device, dtype) -> dict:
    """The batch's image inputs on the device (floating ones in the model's dtype)."""
    return {k: v.to(device, dtype=dtype) if v.is_floating_point() else v.to(device)
            for k, v in batch.items() if k not in _TEXT_KEYS}


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _split_head(model):
    """(body, lm_head): body returns final hidden states, so logits are only computed where needed."""
    body, head = getattr(model, "model", None), getattr(model, "lm_head", None)
    if body is None or head is None:
        raise ValueError(f"{type(model).__name__}: expected a causal LM with .model and .lm_head")
    return body, head


@torch.no_grad()
def choice_logliks(model, processor, samples: list[VQASample]) -> list[list[float]]:
    """Summed log-likelihood of every choice of every sample (one list per sample)."""
    if not samples:
        return []
    family = family_of(getattr(model.config, "model_type", None))
    if family is not None and not family.cached_choice_scoring:
        return whole_sequence_logliks(model, processor, samples)
    body, head = _split_head(model)
    device = _device(model)
    batch = collate_vqa(processor, samples, with_answer=False, padding_side="left")
    mask = batch["attention_mask"].to(device)
    inputs = {"input_ids": batch["input_ids"].to(device), "attention_mask": mask,
              "position_ids": (mask.cumsum(-1) - 1).clamp(min=0), **_image_inputs(batch, device, model.dtype)}
    out = body(**inputs, use_cache=True)
    first = torch.log_softmax(head(out.last_hidden_state[:, -1]).float(), dim=-1)  # (B, V): answer's 1st token
    prompt_len = mask.sum(-1)  # real tokens per row

    choice_ids = [[answer_ids(processor, c, end=False) for c in s.choices] for s in samples]
    counts = [len(c) for c in choice_ids]
    if any(n == 0 for n in counts):
        raise ValueError(f"sample '{samples[counts.index(0)].id}' has no choices")
    if any(len(ids) == 0 for cs in choice_ids for ids in cs):
        raise ValueError("a choice encodes to no tokens")
    rows = [ids for cs in choice_ids for ids in cs]
    owner = torch.repeat_interleave(torch.arange(len(samples)), torch.tensor(counts))
    scores = first[owner.to(device), torch.tensor([ids[0] for ids in rows], device=device)].clone()
    by_width = defaultdict(list)  # multi-token choices by their number of remaining tokens
    for i, ids in enumerate(rows):
        if len(ids) > 1:
            by_width[len(ids) - 1].append(i)
    prompt_cache = output_cache(out)
    for width, multi in sorted(by_width.items()):  # the remaining tokens, one forward per width: no padding
        cont = torch.tensor([rows[i][:-1] for i in multi], device=device)
        targets = torch.tensor([rows[i][1:] for i in multi], device=device)
        src = owner[multi].to(device)
        cache = copy.deepcopy(prompt_cache) if len(by_width) > 1 else prompt_cache  # the forward extends it
        cache.reorder_cache(src)  # one cache row per (sample, choice) of this width
        step = body(input_ids=cont, attention_mask=torch.cat([mask[src], torch.ones_like(cont)], dim=1),
                    position_ids=prompt_len[src].unsqueeze(1) + torch.arange(width, device=device),
                    use_cache=False, **{cache_kwarg(body): cache})
        logp = torch.log_softmax(head(step.last_hidden_state).float(), dim=-1)  # position j predicts token j+1
        scores[torch.tensor(multi, device=device)] += logp.gather(2, targets.unsqueeze(2)).squeeze(2).sum(1)
    scores = scores.cpu().tolist()
    result, start = [], 0
    for n in counts:
        result.append(scores[start:start + n])
        start += n
    return result


@torch.no_grad()
def whole_sequence_logliks(model, processor, samples: list[VQASample], rows_per_batch: int = 16) -> list[list[float]]:
    """The same scores as `choice_logliks`, from one forward of every (prompt + choice) sequence through
    the whole model (right-padded, no cache): slower, and right for any family's positions."""
    body, head = _split_head(model)
    device = _device(model)
    if any(not s.choices for s in samples):
        raise ValueError(f"sample '{next(s for s in samples if not s.choices).id}' has no choices")
    rows = [dataclasses.replace(s, answer=c) for s in samples for c in s.choices]
    eos = getattr(getattr(processor, "tokenizer", processor), "eos_token_id", None)
    scores: list[float] = []
    for start in range(0, len(rows), rows_per_batch):
        batch = collate_vqa(processor, rows[start:start + rows_per_batch], with_answer=True)
        labels = batch["labels"].to(device)
        if eos is not None:  # the end-of-turn token closes every answer: not part of a choice
            last = (labels != -100).long().cumsum(-1).argmax(-1)
            labels[torch.arange(len(labels), device=device), last] = -100
        inputs = {"input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].to(device),
                  **_image_inputs(batch, device, model.dtype)}
        hidden = body(**inputs, use_cache=False).last_hidden_state[:, :-1]
        targets = labels[:, 1:]
        keep = targets != -100
        logp = torch.log_softmax(head(hidden[keep]).float(), dim=-1)
        token_scores = logp.gather(1, targets[keep].unsqueeze(1)).squeeze(1)
        per_row = torch.zeros(targets.shape, dtype=token_scores.dtype, device=device)
        per_row[keep] = token_scores
        scores += per_row.sum(1).cpu().tolist()
    result, start = [], 0
    for s in samples:
        result.append(scores[start:start + len(s.choices)])
        start += len(s.choices)
    return result


def vqa_accuracy(model, processor, samples: list[VQASample], batch_size: int = 32, progress: bool = True,
                 return_predictions: bool = False) -> dict:
    """Accuracy by constrained choice over ``sample.choices``.

    Returns ``{"accuracy", "correct", "count", "per_category": {cat: {"accuracy", "correct",
    "count"}}}`` (JSON-able; plus ``"predictions"`` when asked). Samples without choices
    cannot be scored this way and raise ValueError.
    """
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    per_cat: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    predictions = []
    try:
        bar = tqdm(total=len(samples), desc="vqa eval", unit="q", disable=not progress)
        for start in range(0, len(samples), batch_size):
            chunk = samples[start:start + batch_size]
            for s, lls in zip(chunk, choice_logliks(model, processor, chunk)):
                pred = s.choices[max(range(len(lls)), key=lambda i: (lls[i], -i))]
                ok = int(pred == s.answer)
                per_cat[s.category][0] += ok
                per_cat[s.category][1] += 1
                predictions.append(pred)
            bar.update(len(chunk))
        bar.close()
    finally:
        model.train(was_training)
    correct = sum(c for c, _ in per_cat.values())
    count = sum(n for _, n in per_cat.values())
    result = {
        "accuracy": correct / count if count else 0.0, "correct": correct, "count": count,
        "per_category": {cat: {"accuracy": c / n, "correct": c, "count": n} for cat, (c, n) in sorted(per_cat.items())},
    }
    if return_predictions:
        result["predictions"] = predictions
    return result


def difference_noise(p: float, q: float, questions: int) -> float:
    """How far the questions alone can move the difference of two accuracies p and q, each measured on
    `questions` questions, in points: 1.96 x its standard error were the two models' answers independent (an
    upper bound: two models that answer the same questions err together, so the true figure is smaller)."""
    return 196 * ((p * (1 - p) + q * (1 - q)) / questions) ** 0.5
