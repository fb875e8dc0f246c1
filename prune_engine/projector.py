"""Search-space evolution: the projector W_p and its optimizer (what the learner actor owns).

A generation's update minimises Σ_m c_m · L_m(W_p) by several mini-batch steps: each step
combines the gradients of the candidates drawn for it (each taken through that candidate's pruned
and frozen language model on one mini-batch of image-text samples) with their weights in a fixed
order (so the result does not depend on which evaluator finished first), then AdamW steps.
The parameters are fp32 master weights whatever the evaluators' dtype; a non-finite gradient or
weight is a ProjectorError, never a silently poisoned projector.
"""
from __future__ import annotations

import numpy as np
import torch

from efficientllava.prune_engine.tensors import deserialise, serialise


class ProjectorError(RuntimeError):
    """A non-finite projector loss, gradient or weight (one line: which, and what to change)."""


class ProjectorLearner:
    def __init__(self, state_dict: dict[str, torch.Tensor], lr: float = 1e-4, weight_decay: float = 0.0):
        self.names = list(state_dict)
        self.params = [torch.nn.Parameter(state_dict[n].detach().clone().float()) for n in self.names]
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=weight_decay)
        self.version = 0
        self.mark()

    def mark(self) -> None:
        """Remember the current weights (the start of a generation's update)."""
        self._mark, self._end = self.state_dict(), None

    def rescale(self, scale: float) -> int:
        """W = W_mark + scale (W_end - W_mark), W_end the weights the steps since the mark reached (scale 0
        drops the update; the optimizer's moments are kept). Returns the new version."""
        if self._end is None:
            self._end = self.state_dict()
        with torch.no_grad():
            for n, p in zip(self.names, self.params):
                p.copy_(torch.lerp(self._mark[n], self._end[n], float(scale)))  # exact at 0 and 1
        self.version += 1
        return self.version

    def change_since_mark(self) -> float:
        """||W_p - W_p,marked|| / ||W_p,marked|| over all projector parameters."""
        diff = sum(float((p.detach() - self._mark[n]).double().square().sum()) for n, p in zip(self.names, self.params))
        base = sum(float(w.double().square().sum()) for w in self._mark.values())
        return (diff / base) ** 0.5 if base > 0 else float("nan")

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in zip(self.names, self.params)}

    def step(self, gradients: list[list[np.ndarray]], weights: np.ndarray, steps: int = 1,
             lr: float | None = None) -> int:
        """gradients[m][j]: dL_m/d(param j); weights[m] = c_m. Returns the new version."""
        weights = np.asarray(weights, dtype=np.float64)
        if len(gradients) != len(weights):
            raise ValueError(f"{len(gradients)} gradients for {len(weights)} weights")
        combined = [torch.zeros_like(p) for p in self.params]
        for c, grads in zip(weights, gradients):  # fixed candidate order: deterministic sum
            for acc, g in zip(combined, grads):
                acc.add_(torch.as_tensor(g, dtype=acc.dtype), alpha=float(c))
        if lr is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        if not all(torch.isfinite(g).all() for g in combined):
            raise ProjectorError("non-finite combined projector gradient; lower search.projector_lr")
        for _ in range(steps):
            for p, g in zip(self.params, combined):
                p.grad = g.clone()
            self.optimizer.step()
        self._end = None  # the update now ends here
        if not all(torch.isfinite(p).all() for p in self.params):
            raise ProjectorError(f"the projector became non-finite after an optimizer step at lr "
                                 f"{self.optimizer.param_groups[0]['lr']:g}; lower search.projector_lr")
        self.version += 1
        return self.version

    def to_bytes(self) -> bytes:
        return serialise({"names": self.names, "params": self.state_dict(),
                          "optimizer": self.optimizer.state_dict(), "version": self.version})

    def load_bytes(self, data: bytes, version: int | None = None) -> None:
        state = deserialise(data)
        if state["names"] != self.names:
            raise ValueError("projector state does not match this model's projector")
        with torch.no_grad():
            for p, n in zip(self.params, self.names):
                p.copy_(state["params"][n])
        self.optimizer.load_state_dict(state["optimizer"])
        self.mark()
        self.version = state["version"] if version is None else version
