"""The evaluator actor: scores candidate policies on its own copy of the model (docs/method.md §5).

A thin wrapper around :class:`prune_engine.scoring.CandidateScorer` (``self.scorer``). ``EvaluatorActor``
builds the model from the dense weights that the loader task (actors/dense_loader.py) put in the object
store (nothing read from disk); the scorer holds the proxy batches, the layerwise pruner and its prefix
stack / level database. For a policy it returns the scorer's `search.protocol.Evaluation` (L_text, L_mm,
the per-block log-norm ratios, at full or screening fidelity), stamped with where it ran; for the projector
step, a candidate's answer-token loss on one mini-batch and its gradient with respect to the projector; at
the end, the pruned model saved (``export``).

Every evaluation names the projector version it needs and carries (unresolved) the object holding
that projector, so an actor that was restarted catches up before it evaluates.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import ray
import torch

from efficientllava.actors.object_holder import held_ref
from efficientllava.prune_engine.tensors import unpack_tensors
from efficientllava.search.protocol import Evaluation


def actor_device(setting: str, gpu_ids: list) -> str:
    """The device an evaluator computes on: engine.device when it is set (cpu keeps the computation on the
    CPU even in a bundle with GPUs), else ('auto') the GPU Ray assigned to the actor, else the CPU.
    Ray sets CUDA_VISIBLE_DEVICES to the assigned GPUs, so 'cuda' is the first of them."""
    if setting != "auto":
        return setting
    return "cuda" if gpu_ids else "cpu"


@ray.remote
class EvaluatorActor:
    def __init__(self, engine: dict, data: dict, levels: list[float], weights: list, index: int, run: str,
                 shared_database: bool = False):
        """weights: [ObjectRef of load_dense's weights], nested so that Ray does not resolve it
        before the constructor runs (a restarted actor fetches it again from the object store).
        shared_database: the actors build the level database in parts (`database_part`,
        `install_database`); a restarted actor builds all of it itself (same entries)."""
        self.index, self.run = index, run
        self.error: Exception | None = None
        self.started = time.time()
        ctx = ray.get_runtime_context()
        with warnings.catch_warnings():  # the property itself trips a deprecation warning in Ray 2.60
            warnings.simplefilter("ignore")
            self.restarted = bool(ctx.was_current_actor_reconstructed)
        self.node_id = ctx.get_node_id()
        self.candidates = 0
        try:
            from efficientllava.prune_engine.config import DataConfig, EngineConfig
            from efficientllava.prune_engine.scoring import CandidateScorer

            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            spec = EngineConfig(**engine)
            spec = spec.model_copy(update={"device": actor_device(spec.device, ray.get_gpu_ids())})
            self.scorer = CandidateScorer(spec, DataConfig(**data), levels,
                                          state_dict=unpack_tensors(ray.get(held_ref(weights))),
                                          build_database=not shared_database or self.restarted)
        except Exception as exc:  # reported by facts(): a one-line error on the driver, not a dead actor
            self.error = exc
        from ray.util.metrics import Counter, Gauge

        tags = ("run", "actor")
        self._tags = {"run": run, "actor": str(index)}
        self.m_candidates = Counter("efficientllava_actor_candidates", "Candidates evaluated by this actor", tags)
        self.m_blocks = Counter("efficientllava_actor_blocks_pruned", "Decoder blocks pruned or stitched", tags)
        self.m_seconds = Gauge("efficientllava_actor_seconds_per_candidate", "Seconds of the last candidate", tags)

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    def ping(self) -> dict:
        """Where this actor runs now, and since when (the pool's probe of a restarted actor)."""
        return {"index": self.index, "node_id": self.node_id, "started": self.started}

    def facts(self) -> dict:
        self._check()
        scorer = self.scorer
        return {"param_counts": scorer.param_counts().tolist(), "identity": scorer.identity(),
                "has_projector": scorer.has_projector, "held_aside": scorer.held_aside,
                "text_independent_of_projector": scorer.text_independent_of_projector,
                "blocks": scorer.adapter.num_blocks, "node_id": self.node_id,
                "pid": os.getpid(), "device": scorer.engine.device, "threads": torch.get_num_threads(),
                "dtype": str(scorer.pruner.dtype).removeprefix("torch."),
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "screen_dtype": str(scorer.screen_dtype or scorer.pruner.dtype).removeprefix("torch."),
                "restarted": self.restarted}

    def database_part(self, index: int, parts: int) -> dict:
        """This actor's share of the level database (blocks index, index + parts, ...)."""
        self._check()
        return self.scorer.database_part(index, parts)

    def install_database(self, parts: list) -> int:
        """parts: [ObjectRef of each actor's database_part] (nested: resolved here, zero-copy)."""
        self._check()
        if not self.restarted:  # a restarted actor built its own
            for ref in parts:
                self.scorer.add_database(ray.get(ref))
        return len(self.scorer.pruner.database)

    def _sync(self, version: int, projector: list) -> None:
        """Install projector `version` (held, unresolved, in projector[0]) if this actor lacks it."""
        if version != self.scorer.projector_version:
            if not projector or projector[0] is None:
                raise RuntimeError(f"actor {self.index} needs projector version {version} but none was sent")
            self.scorer.set_projector(unpack_tensors(ray.get(projector[0])), version)

    def set_projector(self, state: dict, version: int) -> int:
        self._check()
        self.scorer.set_projector(unpack_tensors(state), version)
        return version

    def evaluate(self, ratios: np.ndarray, version: int, projector: list, fidelity: str = "full",
                 modalities: tuple = ("text", "mm")) -> Evaluation:
        """Score `ratios` under projector `version` at `fidelity` ("full" or "screen") on `modalities`."""
        self._check()
        self._sync(version, projector)
        cpu = time.process_time()
        r = self.scorer.evaluate(np.asarray(ratios, dtype=np.float64), fidelity, tuple(modalities))
        cpu = time.process_time() - cpu
        self.candidates += 1
        self.m_candidates.inc(1.0, self._tags)
        if r.blocks_run:  # 0 when the whole policy was the actor's previous one (Counter.inc needs > 0)
            self.m_blocks.inc(float(r.blocks_run), self._tags)
        self.m_seconds.set(float(r.seconds), self._tags)
        mm = "-" if r.l_mm is None else f"{r.l_mm:.4f}"
        # a policy re-scored on image-text only after a projector step keeps its earlier L_text (not NaN: unmeasured)
        text = f"{r.l_text:.4f}" if "text" in modalities else "- (image-text re-score: earlier L_text kept)"
        print(f"[{self.run}] evaluator {self.index}: candidate {self.candidates} (projector v{version}, {fidelity}): "
              f"L_text {text}, L_mm {mm}, G {r.g:.4f}, mean sparsity {r.mean_sparsity:.4f}, "
              f"{r.blocks_run} block passes, {r.seconds:.2f} s", flush=True)
        return dataclasses.replace(r, cpu_seconds=cpu, projector_version=version, actor=self.index, pid=os.getpid(),
                                   restarted=self.restarted)

    def gradient(self, ratios: np.ndarray, version: int, projector: list, step: int) -> tuple[float, list]:
        """The candidate's answer-token loss on projector mini-batch `step` and its projector gradient."""
        self._check()
        self._sync(version, projector)
        return self.scorer.projector_gradient(np.asarray(ratios, dtype=np.float64), step)

    def answer_loss(self, ratios: np.ndarray, version: int, projector: list) -> float:
        """The candidate's answer-token loss on the held-aside image-text proxy samples (no gradient)."""
        self._check()
        self._sync(version, projector)
        return self.scorer.answer_loss(np.asarray(ratios, dtype=np.float64))

    def export(self, ratios: np.ndarray, version: int, projector: list, dest: str, how: str, policy: dict) -> dict:
        """Prune the dense model sequentially with `ratios` and the projector `version` (always
        sequential, from scratch, whatever the search mode) and save it with `policy` (plus what the
        pruning achieved) as policy.json and its sparsity.json.

        how: "direct" (dest is a local path on this node), "uri" (a pyarrow.fs URI) or "bytes"
        (return the files for the driver to write)."""
        self._check()
        self._sync(version, projector)
        scorer = self.scorer
        # the search is over: the other evaluators on this node are idle while the driver waits for this export,
        # so the one sequential pass may use every CPU this process can run on (restored afterwards)
        report = scorer.prune_for_export(np.asarray(ratios, dtype=np.float64))
        try:
            summary = {"mean_sparsity": report.mean_sparsity, "calibration_loss": report.loss,
                       "seconds": report.seconds, "log_norm_ratio": report.log_norm_ratio}
            policy = {**policy, "achieved_mean_sparsity": report.mean_sparsity, "calibration_loss": report.loss}
            if how == "direct":
                scorer.save(Path(dest), report, policy)
                return {"report": summary, "files": None}
            with tempfile.TemporaryDirectory(prefix="efficientllava-export-") as tmp:
                local = Path(tmp) / "model"
                scorer.save(local, report, policy)
                if how == "uri":
                    from efficientllava.actors.storage import upload_dir

                    upload_dir(local, dest)
                    return {"report": summary, "files": None}
                return {"report": summary, "files": {str(p.relative_to(local)): p.read_bytes()
                                                     for p in sorted(local.rglob("*")) if p.is_file()}}
        finally:
            scorer.pruner.restore_dense()  # the actor stays usable
