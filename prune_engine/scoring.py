"""The local candidate scorer: prune a candidate policy on one device, measure L_text / L_mm and G, projector gradients.

This is what one evaluator actor holds (no Ray here): the model, the proxy (= calibration) batches and
the `LayerwisePruner` calibrated on them (prune_engine/calibrated.py: text and image-text, each split
into a screening slice and the rest, for multi-fidelity selection), with prefix reuse and, in database
mode, the level database (built once at start from the dense model with its original projector, kept
off the device); and the image-text samples the projector trains on and is judged on. A candidate's
scores come back as the search's one candidate result, `search.protocol.Evaluation`.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from efficientllava.prune_engine.answer_loss import (answer_logprobs, backward_mean_answer_loss, scaled_gradients,
                                                     summed_answer_loss)
from efficientllava.prune_engine.calibrated import ProxyData, build_pruner
from efficientllava.prune_engine.config import DataConfig, EngineConfig
from efficientllava.prune_engine.data.calibration import vqa_batches
from efficientllava.prune_engine.models.loading import model_identity
from efficientllava.prune_engine.pipeline import PruneReport, round_ratio
from efficientllava.prune_engine.precision import resolve_device, screen_dtype
from efficientllava.prune_engine.projector import ProjectorError
from efficientllava.prune_engine.tensors import pack_tensors, unpack_tensors
from efficientllava.search.protocol import Evaluation


class CandidateScorer:
    """Scores candidate policies of one model on its proxy data, on one device (what an evaluator actor holds)."""

    def __init__(self, engine: EngineConfig, data: DataConfig, levels: list[float] | None = None,
                 state_dict: dict | None = None,
                 progress: bool = False, build_database: bool = True):
        """The model and its pruner from `state_dict` (weights shared through the object store; else read from
        disk), the proxy data's roles, the projector's samples and teachers, the screening precision; in
        database mode the level database is built here unless `build_database` is False (then the caller
        shares the work: `database_part` on each evaluator, `add_database` of all parts)."""
        self.engine, self.data, self.levels = engine, data, levels
        built = build_pruner(engine, data, state_dict=state_dict, progress=progress)
        self.adapter, self.processor, self.pruner = built.adapter, built.processor, built.pruner
        self.pattern = self.pruner.pattern
        self._keep_proxy_roles(built.proxy)
        self._split_projector_samples()
        self._compute_projector_teachers()
        self.projector_version = 0
        self.screen_dtype = self._screening_dtype()
        if engine.mode == "database" and build_database:  # once, from the dense model with its original projector
            self.pruner.build_database(self.levels)

    def _keep_proxy_roles(self, proxy: ProxyData) -> None:
        """The proxy batches and which of them the fitness (`scored`) and the screening (`screen`) measure."""
        self.samples = proxy.samples
        self.batches, self.kinds = proxy.batches, proxy.kinds
        self.mm_indices = proxy.mm_indices
        self.scored = proxy.scored  # the full-fidelity fitness set
        self.screen = proxy.screen
        self.stage = proxy.stage  # multi-step selection: the larger slice the screening's survivors are ranked on

    def _split_projector_samples(self) -> None:
        """The projector's held-aside samples (never trained on: the guard judges an update on them) and its
        training samples; at most half of the image-text samples are held aside."""
        engine, processor, samples = self.engine, self.processor, self.samples
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

    def _compute_projector_teachers(self) -> None:
        """One objective (docs/method.md §4 step 5): the projector trains, and the guard judges it, on the loss
        the fitness ranks by; for KL, the dense model's answer distributions (dense weights, the projector of
        the start), computed once, are the fixed teacher."""
        self.monitor_teachers = self.step_teachers = None
        if self.engine.loss == "kl" and self.engine.projector_objective == "fitness":
            self.monitor_teachers = [answer_logprobs(self.adapter, b) for b in self.monitor_batches]
            self.step_teachers = [[answer_logprobs(self.adapter, b) for b in step] for step in self.projector_steps]

    def _screening_dtype(self) -> torch.dtype | None:
        """None: the model's own; only an fp32 model screens in a lower precision (a GPU model is in half already)."""
        low = screen_dtype(self.engine.screen_precision, resolve_device(self.engine.device))
        return low if self.pruner.dtype == torch.float32 else None

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
                **({"mm_rephrase": d.mm_rephrase} if d.mm_rephrase else {}),
                "pattern": str(self.pattern), "granularity": s.granularity, "loss": s.loss,
                "screen": [s.screen_nsamples, s.screen_mm_samples], "projector_batch": s.projector_batch,
                # absent without a stage slice: older checkpoints resume
                **({"stage": [s.stage_nsamples, s.stage_mm_samples]}
                   if s.stage_nsamples or s.stage_mm_samples else {}),
                "fitness_nsamples": s.fitness_nsamples,
                **({"fitness_held_aside": True} if s.fitness_held_aside else {}),  # absent when off: older runs resume
                # what the projector trains on differs from cross-entropy only with the KL fitness
                **({"projector_objective": s.projector_objective} if s.loss == "kl" else {}),
                "monitor_samples": s.monitor_samples, "mode": s.mode,
                "screen_dtype": str(self.screen_dtype or self.pruner.dtype).removeprefix("torch.")}

    def policy(self, ratios: np.ndarray) -> list:
        """The pruner's policy of a candidate's ratios: one ratio per block, or per block a dict by matrix name."""
        ratios = [round_ratio(r) for r in np.asarray(ratios)]
        if self.engine.granularity == "block":
            return ratios
        names = list(self.adapter.linears(0))
        return [dict(zip(names, ratios[i:i + len(names)])) for i in range(0, len(ratios), len(names))]

    # --- evaluation ------------------------------------------------------------------
    def evaluate(self, ratios: np.ndarray, fidelity: str = "full",
                 modalities: tuple[str, ...] = ("text", "mm")) -> Evaluation:
        """L_text, L_mm and the log-norm ratios of a candidate; `fidelity="screen"` scores it on the
        screening slice only, `"stage"` on the stage slice (both in the screening precision; a slice that is
        not set is the full set), `modalities=("mm",)` on the image-text batches only (database mode;
        sequential pruning always needs all the data); `"export"` pruned as the final model is (sequentially
        from the dense model, whatever the mode: the search's re-rank), the dense weights put back after."""
        start = time.perf_counter()
        before = self.pruner.blocks_run
        policy = self.policy(ratios)
        if fidelity == "export":
            try:
                report = self.prune_from_dense(ratios)
            finally:
                self.pruner.restore_dense()
        elif self.engine.mode == "database":
            selecting = fidelity in ("screen", "stage")
            chosen = {"screen": self.screen, "stage": self.stage}.get(fidelity)
            batches = [i for i in (chosen if chosen is not None else self.scored) if self.kinds[i] in modalities]
            report = self.pruner.stitch(policy, batches, self.screen_dtype if selecting else None)
        else:
            report = self.pruner.prune(policy)
        l_text = report.loss_text if report.loss_text is not None else math.nan
        return Evaluation(l_text, report.log_norm_ratio, time.perf_counter() - start, report.loss_mm,
                          report.mean_sparsity, self.pruner.blocks_run - before, fidelity)

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

    # --- the final model -------------------------------------------------------------
    def prune_from_dense(self, ratios: np.ndarray) -> PruneReport:
        """Prune the dense model sequentially with the candidate's ratios (from scratch, whatever the mode),
        leaving the pruned weights in the model (`pruner.restore_dense()` puts the dense ones back)."""
        self.pruner.restore_dense()
        return self.pruner.prune(self.policy(ratios))

    def prune_for_export(self, ratios: np.ndarray, threads: int | None = None) -> PruneReport:
        """The final model's prune (`prune_from_dense`) as a search exports it: the search is over, so the one
        sequential pass may use every CPU this process can run on (`threads` None; the torch thread count is
        restored afterwards). The thread count changes the rounding, which pruning at high sparsity amplifies: a
        re-prune meant to give a search's exported model runs this, on a scorer built with the same engine."""
        from efficientllava.prune_engine.threads import cpu_threads

        with cpu_threads(threads):
            return self.prune_from_dense(ratios)

    def save(self, out: Path, report: PruneReport, policy: dict) -> None:
        """The model as it is now (pruned by `prune_from_dense`) at `out`, with policy.json and sparsity.json."""
        from efficientllava.prune_engine.prune import save_pruned_model

        save_pruned_model(self.adapter, self.processor, out, report, policy, overwrite=True)

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
