"""Search-space evolution: the projector W_p and its optimizer (what the learner actor owns).

One step minimises Σ_m c_m · L_m(W_p): the candidates' gradients, each taken through that
candidate's pruned and frozen language model, are combined with the neighbour weights c_m in
candidate order (so the result does not depend on which evaluator finished first), then AdamW
steps. With `steps` > 1 the same combined gradient drives several AdamW steps [choice: the
candidates are not re-pruned between steps of one generation; steps = 1 is the exact update].
"""
from __future__ import annotations

import numpy as np
import torch

from prune_engine.candidates import deserialise, serialise


class ProjectorLearner:
    def __init__(self, state_dict: dict[str, torch.Tensor], lr: float = 1e-4, weight_decay: float = 0.0):
        self.names = list(state_dict)
        self.params = [torch.nn.Parameter(state_dict[n].detach().clone().float()) for n in self.names]
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=weight_decay)
        self.version = 0

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
        for _ in range(steps):
            for p, g in zip(self.params, combined):
                p.grad = g.clone()
            self.optimizer.step()
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
        self.version = state["version"] if version is None else version
