"""The local candidate scorer: prune a candidate policy on one device, measure L_text / L_mm and G, projector gradients.

This is what one evaluator actor holds (no Ray here): the dense model, the proxy (= calibration)
batches — text and image-text, each split into a screening slice and the rest, for multi-fidelity
selection — a `SequentialPruner` with prefix reuse and, in database mode, the level database
(built once at start from the dense model with its original projector, kept off the device).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from efficientllava.prune_engine.answer_loss import (answer_logprobs, backward_mean_answer_loss, scaled_gradients,
                                                     summed_answer_loss)
from efficientllava.prune_engine.config import DataConfig, EngineConfig
from efficientllava.prune_engine.data.calibration import (
    calibration_vqa,
    check_token_ids,
    text_batches,
    vqa_batches,
)
from efficientllava.prune_engine.models.loading import load_model, load_processor, model_identity
from efficientllava.prune_engine.pipeline import SequentialPruner
from efficientllava.prune_engine.precision import resolve_device, screen_dtype
from efficientllava.prune_engine.projector import ProjectorError
from efficientllava.prune_engine.sparsegpt import Pattern
from efficientllava.prune_engine.tensors import pack_tensors, unpack_tensors
from efficientllava.prune_engine.threads import use_threads


@dataclass
class CandidateScore:
    l_text: float  # mean token loss on the text proxy targets (NaN: no text batch was scored)
    l_mm: float | None  # ... on the answer tokens of the image-text samples (None: no image-text data)
    log_norm_ratio: np.ndarray  # (K,)
    seconds: float
    mean_sparsity: float
    blocks_run: int  # blocks actually pruned/run (prefix reuse skips the rest)


def _split_text(batch: dict, first: int, size: int | None) -> tuple[list[dict], list[dict]]:
    """Cut a text batch into segments [0, first) and [first, n), each in batches of `size` segments."""
    n = len(batch["input_ids"])
    out = []
    for lo, hi in ((0, first), (first, n)):
        step = size or max(hi - lo, 1)
        out.append([{k: v[i:min(i + step, hi)] for k, v in batch.items()} for i in range(lo, hi, step)])
    return out[0], out[1]


class CandidateScorer:
    """Scores candidate policies of one model on its proxy data, on one device (what an evaluator actor holds)."""

    def __init__(self, engine: EngineConfig, data: DataConfig, levels: list[float] | None = None,
                 state_dict: dict | None = None,
                 progress: bool = False, build_database: bool = True):
        """In database mode the level database is built here unless `build_database` is False (then
        the caller shares the work: `database_part` on each evaluator, `add_database` of all parts)."""
        if engine.threads:
            use_threads(engine.threads)
        self.engine, self.data, self.levels = engine, data, levels
        processor = load_processor(engine.model)
        text = text_batches(processor, data.calib, data.nsamples, data.seqlen, data.seed)[0]
        # text segments: [screening slice | the rest of the fitness set | calibration only]
        fit_text = min(engine.fitness_nsamples or data.nsamples, data.nsamples)
        screen_text = min(engine.screen_nsamples, fit_text) if engine.screen_nsamples else 0
        text_screen, fit_rest = _split_text({k: v[:fit_text] for k, v in text.items()}, screen_text, data.batch_size)
        _, text_calib = _split_text(text, fit_text, data.batch_size)
        text_rest = fit_rest + text_calib
        samples = calibration_vqa(data.mm_calib, data.mm_samples, data.seed, data.mm_balance) if data.mm_calib else []
        screen_mm = min(engine.screen_mm_samples, len(samples)) if engine.screen_mm_samples else 0
        mm_screen = vqa_batches(processor, samples[:screen_mm], data.batch_size)
        mm_rest = vqa_batches(processor, samples[screen_mm:], data.batch_size)
        self.samples = samples
        # state_dict: weights shared through the object store (then nothing is read from disk)
        device = resolve_device(engine.device)
        self.adapter, self.processor = load_model(engine.model, engine.dtype, "cpu" if engine.offload else device,
                                                  processor=processor, state_dict=state_dict,
                                                  compute_device=device)
        if engine.offload:
            self.adapter.offload_blocks(device)
        if samples and not self.adapter.is_llava:
            raise ValueError(f"image-text proxy data needs a LLaVA model; {engine.model} is text-only")
        self.batches = text_screen + text_rest + mm_screen + mm_rest
        n_text = len(text_screen) + len(text_rest)
        self.kinds = ["text"] * n_text + ["mm"] * (len(mm_screen) + len(mm_rest))
        self.mm_indices = [i for i, k in enumerate(self.kinds) if k == "mm"]
        n_fit = len(text_screen) + len(fit_rest)
        self.scored = list(range(n_fit)) + self.mm_indices  # the full-fidelity fitness set
        # the screening slice (multi-fidelity selection): the sliced batches of each kind; a kind
        # without a slice is scored whole; no slice at all means screening uses the full set
        screen = (list(range(len(text_screen))) if screen_text else list(range(n_fit))) \
            + (list(range(n_text, n_text + len(mm_screen))) if screen_mm else self.mm_indices)
        self.screen = screen if (screen_text or screen_mm) else None
        check_token_ids(self.batches, self.adapter.model.get_input_embeddings().num_embeddings)
        # the projector's held-aside samples (never trained on: the guard judges an update on them) and
        # its training samples; at most half of the image-text samples are held aside
        held = min(engine.monitor_samples, len(samples) // 2)
        self.held_aside = held  # 0 (a single image-text sample): the guard has nothing to judge an update on
        self.monitor_batches = vqa_batches(processor, samples[:held])
        train = samples[held:]
        self.projector_batches = [vqa_batches(processor, train[i:i + engine.projector_batch])[0]
                                  for i in range(0, len(train), engine.projector_batch)]
        # each projector step's mini-batch as the micro-batches one backward pass takes at a time
        self.projector_steps = ([vqa_batches(processor, train[i:i + engine.projector_batch],
                                             engine.projector_microbatch)
                                 for i in range(0, len(train), engine.projector_batch)]
                                if engine.projector_microbatch else [[b] for b in self.projector_batches])
        # one objective (docs/method.md §4 step 5): the projector trains, and the guard judges it, on the loss
        # the fitness ranks by; for KL, the dense model's answer distributions (dense weights, the projector of
        # the start), computed once, are the fixed teacher
        self.monitor_teachers = self.step_teachers = None
        if engine.loss == "kl" and engine.projector_objective == "fitness":
            self.monitor_teachers = [answer_logprobs(self.adapter, b) for b in self.monitor_batches]
            self.step_teachers = [[answer_logprobs(self.adapter, b) for b in step] for step in self.projector_steps]
        self.pattern = Pattern.parse(engine.pattern)
        self.pruner = SequentialPruner(self.adapter, self.batches, self.pattern, progress=progress,
                                       reuse_prefix=engine.prefix_reuse, kinds=self.kinds, loss=engine.loss,
                                       scored=self.scored, offload_dir=engine.offload_dir,
                                       cache_bytes=None if engine.prefix_cache_gb is None
                                       else int(engine.prefix_cache_gb * 2**30))
        self.projector_version = 0
        # None: the model's own; only an fp32 model screens in a lower precision (a GPU model is in half already)
        low = screen_dtype(engine.screen_precision, device)
        self.screen_dtype = low if self.pruner.dtype == torch.float32 else None
        if engine.mode == "database" and build_database:  # once, from the dense model with its original projector
            self.pruner.build_database(self.levels)

    # --- a level database built in parts (one per evaluator) ------------------------
    def database_part(self, index: int, parts: int) -> dict:
        """Build the database entries of blocks index, index + parts, ... and return them as arrays."""
        blocks = list(range(index, self.adapter.num_blocks, parts))
        self.pruner.build_database(self.levels, blocks)
        return {key: (pack_tensors({"w": p.weight})["arrays"]["w"], p.ratio, p.sq_norm, p.error)
                for key, p in self.pruner.database.items() if key[0] in blocks}

    def add_database(self, part: dict) -> None:
        """Add entries made by `database_part` (possibly on another evaluator); arrays are only read."""
        import warnings

        from efficientllava.prune_engine.sparsegpt import Pruned

        with warnings.catch_warnings():  # read-only (object store) arrays: the weights are only copied from
            warnings.simplefilter("ignore", UserWarning)
            for key, (weight, ratio, sq_norm, error) in part.items():  # weight: (array, dtype) of pack_tensors
                weight = unpack_tensors({"arrays": {"w": weight}, "aliases": {}})["w"]
                self.pruner.database[tuple(key)] = Pruned(weight, ratio, sq_norm, error)

    # --- facts the search needs ------------------------------------------------------
    @property
    def has_projector(self) -> bool:
        return self.adapter.is_llava and bool(self.samples)

    @property
    def text_independent_of_projector(self) -> bool:
        """L_text and the norms are the same under every projector only in database mode (masks stitched
        from a database built once from the dense model); sequential pruning's Hessians include the
        projector's image-text activations, so every candidate's text scores change with the projector."""
        return self.engine.mode == "database"

    def param_counts(self) -> np.ndarray:
        counts = self.adapter.param_counts()
        if self.engine.granularity == "matrix":
            return np.array([c for block in counts for c in block.values()], dtype=np.int64)
        return np.array([sum(block.values()) for block in counts], dtype=np.int64)

    def identity(self) -> dict:
        s, d = self.engine, self.data
        return {**model_identity(self.adapter, s.model), "calib": d.calib, "nsamples": d.nsamples,
                "seqlen": d.seqlen, "mm_calib": d.mm_calib, "mm_samples": d.mm_samples, "seed": d.seed,
                **({"mm_balance": True} if d.mm_balance else {}),  # absent when off: older checkpoints resume
                "pattern": str(self.pattern), "granularity": s.granularity, "loss": s.loss,
                "screen": [s.screen_nsamples, s.screen_mm_samples], "projector_batch": s.projector_batch,
                "fitness_nsamples": s.fitness_nsamples,
                # what the projector trains on differs from cross-entropy only with the KL fitness
                **({"projector_objective": s.projector_objective} if s.loss == "kl" else {}),
                "monitor_samples": s.monitor_samples, "mode": s.mode,
                "screen_dtype": str(self.screen_dtype or self.pruner.dtype).removeprefix("torch.")}

    def policy(self, ratios: np.ndarray) -> list:
        ratios = [round(float(r), 6) for r in np.asarray(ratios)]
        if self.engine.granularity == "block":
            return ratios
        names = list(self.adapter.linears(0))
        return [dict(zip(names, ratios[i:i + len(names)])) for i in range(0, len(ratios), len(names))]

    # --- evaluation ------------------------------------------------------------------
    def evaluate(self, ratios: np.ndarray, fidelity: str = "full",
                 modalities: tuple[str, ...] = ("text", "mm")) -> CandidateScore:
        """L_text, L_mm and the log-norm ratios of a candidate; `fidelity="screen"` scores it on the
        screening slice only, `modalities=("mm",)` on the image-text batches only (database mode;
        sequential pruning always needs all the data)."""
        start = time.perf_counter()
        before = self.pruner.blocks_run
        policy = self.policy(ratios)
        if self.engine.mode == "database":
            screening = fidelity == "screen" and self.screen is not None
            batches = [i for i in (self.screen if screening else self.scored) if self.kinds[i] in modalities]
            report = self.pruner.stitch(policy, batches, self.screen_dtype if fidelity == "screen" else None)
        else:
            report = self.pruner.prune(policy)
        l_text = report.loss_text if report.loss_text is not None else math.nan
        return CandidateScore(l_text, report.loss_mm, np.array(report.log_norm_ratio),
                               time.perf_counter() - start, report.mean_sparsity, self.pruner.blocks_run - before)

    def _install(self, ratios: np.ndarray) -> None:
        """Put the candidate's pruned weights into the model (stitched, or pruned sequentially)."""
        policy = self.policy(ratios)
        if self.engine.mode == "database":
            self.pruner.install(policy)
        else:
            self.pruner.prune(policy)

    def projector_gradient(self, ratios: np.ndarray, step: int) -> tuple[float, list[np.ndarray]]:
        """Mean answer-token loss of the candidate on projector mini-batch `step` (cycling over the
        image-text proxy samples that are not held aside) and its gradient with respect to the projector; the pruned language
        model stays frozen. Non-finite values are a ProjectorError."""
        if not self.projector_batches:
            raise RuntimeError("no image-text proxy samples: there is no projector gradient")
        self._install(ratios)
        params = list(self.adapter.projector.parameters())
        for p in params:
            p.requires_grad_(True)
        k = step % len(self.projector_steps)
        teachers = None if self.step_teachers is None else self.step_teachers[k]
        try:  # a float16 model's backward is loss-scaled; the gradient comes back unscaled, in float32
            value, grads = scaled_gradients(lambda scale: backward_mean_answer_loss(
                self.adapter, self.projector_steps[k], self.engine.activation_checkpointing, teachers, scale), params)
        finally:
            for p in params:
                p.requires_grad_(False)
        grads = [g.cpu().numpy() for g in grads]
        if not math.isfinite(value) or not all(np.isfinite(g).all() for g in grads):
            raise ProjectorError(f"non-finite projector {'loss' if not math.isfinite(value) else 'gradient'} at "
                                 f"projector step {step} (candidate mean sparsity {float(np.mean(ratios)):.3f}); "
                                 "lower search.projector_lr or check the model's dtype")
        return value, grads

    @torch.no_grad()
    def answer_loss(self, ratios: np.ndarray, batches: list[dict] | None = None) -> float:
        """Mean answer-token loss of the candidate on the held-aside samples (the first `monitor_samples`
        image-text proxy samples, which projector steps never train on), in the fitness's kind (cross-entropy,
        or KL to the dense model); on explicitly given `batches`, cross-entropy."""
        self._install(ratios)
        total, count = 0.0, 0
        teachers = self.monitor_teachers if batches is None and self.monitor_teachers is not None else None
        for i, batch in enumerate(self.monitor_batches if batches is None else batches):
            loss, n = summed_answer_loss(self.adapter, batch, teacher=None if teachers is None else teachers[i])
            total, count = total + float(loss), count + n
        return total / count if count else math.nan  # nothing held aside: the guard keeps every update

    # --- the projector ---------------------------------------------------------------
    def projector_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.adapter.projector.state_dict().items()}

    def set_projector(self, state: dict[str, torch.Tensor], version: int) -> None:
        """Install a new projector: only the image-text batches' block inputs (and what was built on
        them) are redone; text batches never see the projector, and the level database is kept."""
        if version == self.projector_version:
            return
        self.adapter.projector.load_state_dict(state)
        self.pruner.refresh_inputs([self.batches[i] for i in self.mm_indices], self.mm_indices)
        self.projector_version = version
