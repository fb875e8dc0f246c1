"""The Ray processes of a search (docs/method.md §5): a loader task, evaluator actors and the learner actor.

Thin wrappers: the work is done by :class:`prune_engine.scoring.CandidateScorer` and
:class:`prune_engine.projector.ProjectorLearner`.

* ``load_dense`` (task): loads the dense model once and returns its weights as numpy arrays,
  which live in the object store (zero-copy reads on the node, one transfer per other node).
* ``EvaluatorActor``: builds the model from those shared weights (nothing read from disk),
  holds the proxy batches, the layer-sequential pruner and its prefix stack / database; for a
  policy it returns L_text, L_mm and the per-block log-norm ratios (at full or screening
  fidelity); for the projector step, a candidate's answer-token loss on one mini-batch and its
  gradient with respect to the projector.
* ``LearnerActor``: owns the projector (fp32) and its optimizer; combines the drawn candidates'
  gradients in a fixed order and steps.

Every evaluation names the projector version it needs and carries (unresolved) the object
holding that projector, so an actor that was restarted catches up before it evaluates.
"""
from __future__ import annotations

import os
import signal
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import ray
import torch

from prune_engine.tensors import pack_tensors, unpack_tensors

FAULT_ENV = "EFFICIENTLLAVA_FAULT_FILE"  # test hook: see EvaluatorActor._maybe_fail


def _dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


@ray.remote(max_retries=3)
def load_dense(engine: dict, dtype: str) -> tuple[dict, dict | None]:
    """The dense model's weights, and its projector's (None for text-only models)."""
    from prune_engine.models.adapter import ModelError
    from prune_engine.models.loading import load_model

    try:
        adapter, _ = load_model(engine["model"], dtype=_dtype(dtype))
    except ModelError:
        raise
    except Exception as exc:  # unreadable weights and the like: one line for the CLI
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"cannot load the weights of {engine['model']}: {first}") from None
    weights = pack_tensors(adapter.model.state_dict())
    projector = pack_tensors(adapter.projector.state_dict()) if adapter.projector is not None else None
    return weights, projector


@ray.remote(max_restarts=0)
class ObjectHolder:
    """Holds ObjectRefs for actors that restart: passing a ref to a restartable actor's constructor
    makes Ray log an error-level warning (ray#53727); the actors fetch the refs from here instead."""

    def __init__(self, refs: list):
        self.held = refs

    def refs(self) -> list:
        return self.held


def held_ref(handle):
    """The ObjectRef behind `handle`: [ref], or (holder name, namespace, index) of an ObjectHolder."""
    if isinstance(handle, (list, tuple)) and len(handle) == 1:
        return handle[0]
    name, namespace, index = handle
    return ray.get(ray.get_actor(name, namespace=namespace).refs.remote())[index]


# ---- evaluator ---------------------------------------------------------------------------
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
            from prune_engine.config import DataConfig, EngineConfig
            from prune_engine.scoring import CandidateScorer

            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            gpu = bool(ray.get_gpu_ids())
            spec = EngineConfig(**engine).model_copy(update={"device": "cuda" if gpu else "cpu"})
            self.ev = CandidateScorer(spec, DataConfig(**data), levels,
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

    def ping(self) -> int:
        return self.index

    def facts(self) -> dict:
        self._check()
        ev = self.ev
        return {"param_counts": ev.param_counts().tolist(), "identity": ev.identity(),
                "has_projector": ev.has_projector, "blocks": ev.adapter.num_blocks, "node_id": self.node_id,
                "pid": os.getpid(), "device": ev.engine.device, "threads": torch.get_num_threads(),
                "restarted": self.restarted}

    def database_part(self, index: int, parts: int) -> dict:
        """This actor's share of the level database (blocks index, index + parts, ...)."""
        self._check()
        return self.ev.database_part(index, parts)

    def install_database(self, parts: list) -> int:
        """parts: [ObjectRef of each actor's database_part] (nested: resolved here, zero-copy)."""
        self._check()
        if not self.restarted:  # a restarted actor built its own
            for ref in parts:
                self.ev.add_database(ray.get(ref))
        return len(self.ev.pruner.database)

    def _sync(self, version: int, projector: list) -> None:
        """Install projector `version` (held, unresolved, in projector[0]) if this actor lacks it."""
        if version != self.ev.projector_version:
            if not projector or projector[0] is None:
                raise RuntimeError(f"actor {self.index} needs projector version {version} but none was sent")
            self.ev.set_projector(unpack_tensors(ray.get(projector[0])), version)

    def set_projector(self, state: dict, version: int) -> int:
        self._check()
        self.ev.set_projector(unpack_tensors(state), version)
        return version

    def evaluate(self, ratios: np.ndarray, version: int, projector: list, fidelity: str = "full",
                 modalities: tuple = ("text", "mm")) -> dict:
        """Score `ratios` under projector `version` at `fidelity` ("full" or "screen") on `modalities`."""
        from search.fitness import norm_term

        self._check()
        self._sync(version, projector)
        cpu = time.process_time()
        r = self.ev.evaluate(np.asarray(ratios, dtype=np.float64), fidelity, tuple(modalities))
        cpu = time.process_time() - cpu
        self._maybe_fail(version)
        self.candidates += 1
        self.m_candidates.inc(1.0, self._tags)
        if r.blocks_run:  # 0 when the whole policy was the actor's previous one (Counter.inc needs > 0)
            self.m_blocks.inc(float(r.blocks_run), self._tags)
        self.m_seconds.set(float(r.seconds), self._tags)
        lnr = np.asarray(r.log_norm_ratio, dtype=np.float64)
        mm = "-" if r.l_mm is None else f"{r.l_mm:.4f}"
        print(f"[{self.run}] evaluator {self.index}: candidate {self.candidates} (projector v{version}, {fidelity}): "
              f"L_text {r.l_text:.4f}, L_mm {mm}, G {norm_term(lnr):.4f}, mean sparsity {r.mean_sparsity:.4f}, "
              f"{r.blocks_run} block passes, {r.seconds:.2f} s", flush=True)
        return {"l_text": float(r.l_text), "l_mm": None if r.l_mm is None else float(r.l_mm),
                "log_norm_ratio": lnr.tolist(), "g": norm_term(lnr), "seconds": float(r.seconds), "cpu_seconds": cpu,
                "mean_sparsity": float(r.mean_sparsity), "blocks_run": int(r.blocks_run), "fidelity": fidelity,
                "actor": self.index, "pid": os.getpid(), "restarted": self.restarted, "projector_version": version}

    def gradient(self, ratios: np.ndarray, version: int, projector: list, step: int) -> tuple[float, list]:
        """The candidate's answer-token loss on projector mini-batch `step` and its projector gradient."""
        self._check()
        self._sync(version, projector)
        return self.ev.projector_gradient(np.asarray(ratios, dtype=np.float64), step)

    def answer_loss(self, ratios: np.ndarray, version: int, projector: list) -> float:
        """The candidate's answer-token loss over all image-text proxy samples (no gradient)."""
        self._check()
        self._sync(version, projector)
        return self.ev.answer_loss(np.asarray(ratios, dtype=np.float64))

    def _maybe_fail(self, version: int) -> None:
        """Fault injection for tests: when the file named by $EFFICIENTLLAVA_FAULT_FILE exists (its
        content: the least projector version to fail at, default 0), the first actor to see it
        deletes it and dies by SIGKILL in the middle of a candidate (pruned, result not returned)."""
        path = os.environ.get(FAULT_ENV)
        if not path or not os.path.exists(path):
            return
        try:
            least = int(Path(path).read_text().strip() or 0)
        except (OSError, ValueError):
            least = 0
        if version < least:
            return
        try:
            os.remove(path)
        except FileNotFoundError:
            return  # another actor took it
        os.kill(os.getpid(), signal.SIGKILL)

    def export(self, ratios: np.ndarray, version: int, projector: list, dest: str, how: str,
               files: dict[str, dict]) -> dict:
        """Prune the dense model sequentially with `ratios` and the projector `version` (always
        sequential, from scratch, whatever the search mode) and save it (save_pretrained + files).

        how: "direct" (dest is a local path on this node), "uri" (a pyarrow.fs URI) or "bytes"
        (return the files for the driver to write)."""
        from prune_engine.prune import save_model_dir

        self._check()
        self._sync(version, projector)
        ev = self.ev
        ev.pruner.restore_dense()
        report = ev.pruner.prune(ev.policy(np.asarray(ratios, dtype=np.float64)))
        try:
            summary = {"mean_sparsity": report.mean_sparsity, "calibration_loss": report.loss,
                       "seconds": report.seconds, "log_norm_ratio": report.log_norm_ratio}
            files = dict(files)
            files["policy.json"] = {**files.get("policy.json", {}), "achieved_mean_sparsity": report.mean_sparsity,
                                    "calibration_loss": report.loss}
            files["sparsity.json"] = {"mean": report.mean_sparsity, "blocks": report.sparsity,
                                      "log_norm_ratio": report.log_norm_ratio}
            if how == "direct":
                save_model_dir(ev.adapter, ev.processor, Path(dest), files, overwrite=True)
                return {"report": summary, "files": None}
            with tempfile.TemporaryDirectory(prefix="efficientllava-export-") as tmp:
                local = Path(tmp) / "model"
                save_model_dir(ev.adapter, ev.processor, local, files, overwrite=True)
                if how == "uri":
                    from actors.storage import upload_dir

                    upload_dir(local, dest)
                    return {"report": summary, "files": None}
                return {"report": summary, "files": {str(p.relative_to(local)): p.read_bytes()
                                                     for p in sorted(local.rglob("*")) if p.is_file()}}
        finally:
            ev.pruner.restore_dense()  # the actor stays usable


# ---- learner -----------------------------------------------------------------------------
@ray.remote
class LearnerActor:
    def __init__(self, projector: list, lr: float):
        """projector: [ObjectRef of the dense projector state] (nested, as for the evaluators)."""
        from prune_engine.projector import ProjectorLearner

        self.learner = ProjectorLearner(unpack_tensors(ray.get(held_ref(projector))), lr=lr)

    def _state(self) -> dict:
        return pack_tensors(self.learner.state_dict())

    @ray.method(num_returns=2)
    def step(self, weights: np.ndarray, steps: int, lr: float, *gradients) -> tuple[int, dict]:
        """gradients[m]: drawn candidate m's gradient, in draw order."""
        if any(g is None for g in gradients):
            raise RuntimeError("a candidate gradient is missing")
        version = self.learner.step(list(gradients), np.asarray(weights, dtype=np.float64), steps, lr)
        return version, self._state()

    def mark(self) -> int:
        self.learner.mark()
        return self.learner.version

    def change_since_mark(self) -> float:
        return self.learner.change_since_mark()

    def state(self) -> dict:
        return self._state()

    def version(self) -> int:
        return self.learner.version

    def to_bytes(self) -> bytes:
        return self.learner.to_bytes()

    def load_bytes(self, data: bytes, version: int) -> dict:
        self.learner.load_bytes(data, version)
        return self._state()
