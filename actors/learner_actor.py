"""The learner actor: owns the projector (fp32) and its optimizer (docs/method.md §5).

A thin wrapper around :class:`prune_engine.projector.ProjectorLearner`: ``LearnerActor.step``
combines the drawn candidates' projector gradients in a fixed (draw) order and steps; its new state
is one object that every evaluator actor installs.
"""
from __future__ import annotations

import numpy as np
import ray

from efficientllava.actors.object_holder import held_ref
from efficientllava.prune_engine.tensors import pack_tensors, unpack_tensors


@ray.remote
class LearnerActor:
    def __init__(self, projector: list, lr: float):
        """projector: [ObjectRef of the dense projector state] (nested, as for the evaluators)."""
        from efficientllava.prune_engine.projector import ProjectorLearner

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

    @ray.method(num_returns=2)
    def rescale(self, scale: float) -> tuple[int, dict]:
        """Keep `scale` of the update since the mark (0: drop it)."""
        version = self.learner.rescale(float(scale))
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
