"""Evaluate candidate policies on one device: prune, measure L_proxy and G, and the projector gradient.

This is what one evaluator actor holds (no Ray here): the dense model, the calibration (= proxy)
batches, a `SequentialPruner` with prefix reuse, and, in database mode, the per-level cache.
"""
from __future__ import annotations

import io
import time
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from prune_engine.calibration import check_token_ids, load_vqa, text_batches, vqa_batches
from prune_engine.models import load_model, load_processor, model_identity
from prune_engine.pipeline import SequentialPruner
from prune_engine.sparsegpt import Pattern


class EngineSpec(BaseModel):
    """Everything an evaluator needs to rebuild the same model and proxy data anywhere."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = "smollm2"
    calib: str = "wiki:calib"
    nsamples: int = 32
    seqlen: int = 256
    mm_calib: str | None = None
    mm_samples: int = 32
    seed: int = 0
    pattern: str | None = None
    mode: str = "sequential"  # or "database"
    granularity: str = "block"  # or "matrix"
    batch_size: int | None = None
    prefix_reuse: bool = True
    device: str = "cpu"
    threads: int | None = None  # torch threads in this evaluator (None: torch's default)


@dataclass
class CandidateResult:
    l_proxy: float
    log_norm_ratio: np.ndarray  # (K,)
    seconds: float
    mean_sparsity: float
    blocks_run: int  # blocks actually pruned/run (prefix reuse skips the rest)
    mm_loss: float | None = None  # candidate's multimodal loss L_m (answer tokens), with a gradient
    gradient: list[np.ndarray] | None = None  # dL_m / d(projector parameters)


class CandidateEvaluator:
    def __init__(self, spec: EngineSpec, levels: list[float] | None = None, state_dict: dict | None = None,
                 progress: bool = False):
        if spec.threads:
            torch.set_num_threads(spec.threads)
        self.spec, self.levels = spec, levels
        processor = load_processor(spec.model)
        self.text = text_batches(processor, spec.calib, spec.nsamples, spec.seqlen, spec.seed, spec.batch_size)
        self.mm: list[dict] = []
        if spec.mm_calib:
            samples = load_vqa(spec.mm_calib, limit=spec.mm_samples, seed=spec.seed)
            self.mm = vqa_batches(processor, samples, spec.batch_size)
        # state_dict: weights shared through the object store (then nothing is read from disk)
        self.adapter, self.processor = load_model(spec.model, device=spec.device, processor=processor,
                                                  state_dict=state_dict)
        if self.mm and not self.adapter.is_llava:
            raise ValueError(f"image-text proxy data needs a LLaVA model; {spec.model} is text-only")
        check_token_ids(self.text + self.mm, self.adapter.model.get_input_embeddings().num_embeddings)
        self.pattern = Pattern.parse(spec.pattern)
        self.pruner = SequentialPruner(self.adapter, self.text + self.mm, self.pattern, progress=progress,
                                       reuse_prefix=spec.prefix_reuse)
        self.projector_version = 0

    # --- facts the search needs ------------------------------------------------------
    @property
    def has_projector(self) -> bool:
        return self.adapter.is_llava and bool(self.mm)

    def param_counts(self) -> np.ndarray:
        counts = self.adapter.param_counts()
        if self.spec.granularity == "matrix":
            return np.array([c for block in counts for c in block.values()], dtype=np.int64)
        return np.array([sum(block.values()) for block in counts], dtype=np.int64)

    def identity(self) -> dict:
        s = self.spec
        return {**model_identity(self.adapter, s.model), "calib": s.calib, "nsamples": s.nsamples,
                "seqlen": s.seqlen, "mm_calib": s.mm_calib, "mm_samples": s.mm_samples, "seed": s.seed,
                "pattern": str(self.pattern), "granularity": s.granularity}

    def policy(self, ratios: np.ndarray) -> list:
        ratios = [round(float(r), 6) for r in np.asarray(ratios)]
        if self.spec.granularity == "block":
            return ratios
        names = list(self.adapter.linears(0))
        return [dict(zip(names, ratios[i:i + len(names)])) for i in range(0, len(ratios), len(names))]

    # --- evaluation ------------------------------------------------------------------
    def evaluate(self, ratios: np.ndarray, with_gradient: bool = False) -> CandidateResult:
        start = time.perf_counter()
        before = self.pruner.blocks_run
        policy = self.policy(ratios)
        if self.spec.mode == "database":
            if not self.pruner.database:
                self.pruner.build_database(self.levels or sorted({r for r in np.asarray(ratios)}))
            report = self.pruner.stitch(policy)
        else:
            report = self.pruner.prune(policy)
        result = CandidateResult(report.loss, np.array(report.log_norm_ratio), 0.0, report.mean_sparsity,
                                 self.pruner.blocks_run - before)
        if with_gradient and self.has_projector:
            result.mm_loss, result.gradient = self.projector_gradient()
        result.seconds = time.perf_counter() - start
        return result

    def projector_gradient(self) -> tuple[float, list[np.ndarray]]:
        """Mean answer-token loss of the current (pruned) model on the image-text samples, and its
        gradient with respect to the projector; the language model stays frozen."""
        params = list(self.adapter.projector.parameters())
        for p in params:
            p.requires_grad_(True)
            p.grad = None
        total, count = 0.0, 0
        try:
            with torch.enable_grad():
                for batch in self.mm:
                    batch = {k: v.to(self.adapter.device) for k, v in batch.items()}
                    labels = batch.pop("labels")
                    # lm_head only where a loss is taken (the answer tokens): the same loss, without
                    # vocabulary-sized logits for every prompt and image position
                    hidden = self.adapter.model.model(**batch, use_cache=False).last_hidden_state[:, :-1]
                    targets = labels[:, 1:]
                    keep = targets != -100
                    logits = self.adapter.model.lm_head(hidden[keep]).float()
                    loss = torch.nn.functional.cross_entropy(logits, targets[keep], reduction="sum")
                    loss.backward()
                    total += loss.item()
                    count += int(keep.sum())
        finally:
            for p in params:
                p.requires_grad_(False)
        grads = [(p.grad / max(count, 1)).detach().cpu().numpy() for p in params]
        for p in params:
            p.grad = None
        return total / max(count, 1), grads

    # --- the projector ---------------------------------------------------------------
    def projector_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.adapter.projector.state_dict().items()}

    def set_projector(self, state: dict[str, torch.Tensor], version: int) -> None:
        """Install a new projector: the image-text block inputs and every cache built on them are redone."""
        if version == self.projector_version:
            return
        self.adapter.projector.load_state_dict(state)
        self.pruner.restore_dense()
        self.pruner.refresh_inputs(self.text + self.mm)
        self.projector_version = version


def serialise(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def deserialise(data: bytes):
    return torch.load(io.BytesIO(data), weights_only=True)


