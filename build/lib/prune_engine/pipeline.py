"""Layer-sequential SparseGPT: prune the decoder blocks in order, each calibrated on pruned outputs.

Block l is calibrated on the outputs of the already pruned blocks < l, and inside a block each
stage (q/k/v, then o, then gate/up, then down) is calibrated on the outputs of the already
pruned stages before it. With the whole calibration set in one batch this costs a single
forward per block: a pre-hook on the first linear of each stage accumulates the stage's
Hessian from the input the forward hands it, prunes the stage in place, and lets the forward
go on. With several batches (large models), each stage runs the block over all batches up to
that stage, then prunes; a last pass computes the block's outputs.

The vision tower, projector, embeddings, final norm and lm_head are never touched.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from prune_engine.models import BlockInputs, ModelAdapter, _StopForward
from prune_engine.sparsegpt import Hessian, Pattern, Pruned, check_sparsity, sparsegpt

Ratios = dict[str, float]  # target sparsity per matrix name of one block


@dataclass
class PruneReport:
    """Outcome of one sequential pass."""

    loss: float  # mean next-token cross-entropy on the calibration (= proxy) tokens, pruned model
    tokens: int
    block_sq_norm: list[float]  # Σ ||Ŵ||_F² over the pruned matrices of each block
    dense_sq_norm: list[float]  # the same for the dense weights
    sparsity: list[dict[str, float]]  # achieved sparsity per block and matrix
    seconds: float = 0.0

    @property
    def log_norm_ratio(self) -> list[float]:
        """log(||Ŵ_k||_F / ||W_k||_F) per block: the terms of the SRM generalisation bound G."""
        return [0.5 * math.log(p / d) if d > 0 else 0.0 for p, d in zip(self.block_sq_norm, self.dense_sq_norm)]

    @property
    def mean_sparsity(self) -> float:
        return _weighted_mean(self.sparsity, self._counts)

    _counts: list[dict[str, int]] = field(default_factory=list, repr=False)


def _weighted_mean(values: list[dict[str, float]], counts: list[dict[str, int]]) -> float:
    total = sum(c for block in counts for c in block.values())
    return sum(values[b][n] * counts[b][n] for b in range(len(counts)) for n in counts[b]) / total


def block_ratios(policy, adapter: ModelAdapter) -> list[Ratios]:
    """Normalise a policy (one float, one float per block, or one dict per block) to per-matrix ratios."""
    names = list(adapter.linears(0))
    if isinstance(policy, (int, float)):
        policy = [float(policy)] * adapter.num_blocks
    if len(policy) != adapter.num_blocks:
        raise ValueError(f"policy has {len(policy)} entries, the model has {adapter.num_blocks} decoder blocks")
    out = []
    for entry in policy:
        ratios = {n: float(entry) for n in names} if isinstance(entry, (int, float)) else dict(entry)
        missing = set(names) - set(ratios)
        if missing:
            raise ValueError(f"policy entry lacks ratios for {sorted(missing)}")
        out.append({n: check_sparsity(ratios[n]) for n in names})
    return out


class SequentialPruner:
    """Holds the dense weights and block-0 inputs of the calibration batches; prunes with any policy.

    With `reuse_prefix`, the outputs of every block of the last policy are kept (a stack): a next
    policy that shares its first L block ratios starts at block L, since blocks < L already hold
    exactly those pruned weights. Sorting candidates lexicographically maximises the sharing.
    """

    def __init__(self, adapter: ModelAdapter, batches: list[dict], pattern: Pattern = Pattern(),
                 blocksize: int = 128, percdamp: float = 0.01, progress: bool = True, reuse_prefix: bool = False):
        self.adapter, self.pattern = adapter, pattern
        self.blocksize, self.percdamp, self.progress = blocksize, percdamp, progress
        self.reuse_prefix = reuse_prefix
        self.dense = [{n: m.weight.detach().clone() for n, m in adapter.linears(i).items()}
                      for i in range(adapter.num_blocks)]
        self.dense_sq_norm = [sum(float(w.double().square().sum()) for w in block.values()) for block in self.dense]
        self.counts = adapter.param_counts()
        self.inputs: list[BlockInputs] = [adapter.block_inputs(b) for b in batches]
        self.database: dict[tuple[int, str, float], Pruned] = {}
        self._stack: list[tuple] = []  # per block of the last policy: (key, outputs, sq_norm, sparsity)
        self.blocks_run = 0  # block passes actually computed (prefix reuse skips some)
        self.timings = {"hessian": 0.0, "sparsegpt": 0.0}  # seconds spent, cumulative (the rest is forward)

    def refresh_inputs(self, batches: list[dict]) -> None:
        """Recompute block-0 inputs (after the projector changed); drops every cache built on the old ones."""
        self.inputs = [self.adapter.block_inputs(b) for b in batches]
        self.database, self._stack = {}, []

    def restore_dense(self) -> None:
        self._stack = []
        for i, block in enumerate(self.dense):
            for n, m in self.adapter.linears(i).items():
                m.weight.data.copy_(block[n])

    @torch.no_grad()
    def prune(self, policy, levels: list[float] | None = None) -> PruneReport:
        """Prune all blocks sequentially with `policy`, leaving the pruned weights in the model.

        With `levels` every matrix is additionally pruned at each of these ratios from the same
        Hessian and stored in `self.database` (see `build_database`).
        """
        return self._run(policy, "seq", levels)

    def build_database(self, levels: list[float]) -> None:
        """Database mode: prune every block at every level once, from dense inputs (one Hessian each)."""
        self.database = {}
        self._run(0.0, "seq", list(levels))

    @torch.no_grad()
    def stitch(self, policy) -> PruneReport:
        """Database mode: assemble the policy from the database and measure it (no pruning)."""
        if not self.database:
            raise RuntimeError("build_database() first")
        return self._run(policy, "db", None)

    def _level(self, b: int, name: str, ratio: float) -> Pruned:
        try:
            return self.database[(b, name, round(ratio, 6))]
        except KeyError:
            raise ValueError(f"ratio {ratio} of block {b} is not a database level") from None

    def _run(self, policy, mode: str, levels) -> PruneReport:
        start = time.perf_counter()
        ratios = block_ratios(policy, self.adapter)
        keys = [(mode, tuple(sorted(r.items()))) for r in ratios]
        if levels is not None:
            keys = [k + ("levels", tuple(levels)) for k in keys]
        shared = 0
        if self.reuse_prefix:
            while shared < len(self._stack) and self._stack[shared][0] == keys[shared]:
                shared += 1
        self._stack = self._stack[:shared]
        hidden = self._stack[-1][1] if shared else [x.hidden for x in self.inputs]
        bar = tqdm(range(shared, self.adapter.num_blocks), desc="sparsegpt" if mode == "seq" else "stitch",
                   unit="block", disable=not self.progress, leave=False)
        for b in bar:
            if mode == "seq":
                pruned = self._prune_block(b, hidden, ratios[b], levels)
                hidden = pruned.pop("__outputs__")
                for (n, r), p in pruned.pop("__levels__").items():
                    self.database[(b, n, round(r, 6))] = p
            else:
                pruned = {n: self._level(b, n, r) for n, r in ratios[b].items()}
                for n, m in self.adapter.linears(b).items():
                    m.weight.data.copy_(pruned[n].weight)
                hidden = [self.adapter.run_block(b, h, x.kwargs) for h, x in zip(hidden, self.inputs)]
            self.blocks_run += 1
            self._stack.append((keys[b], hidden if self.reuse_prefix else None,
                                sum(p.sq_norm for p in pruned.values()), {n: p.ratio for n, p in pruned.items()}))
        total, count = 0.0, 0
        for h, x in zip(hidden, self.inputs):
            s, c = self.adapter.loss(h, x.labels)
            total, count = total + s, count + c
        return PruneReport(total / max(count, 1), count, [e[2] for e in self._stack], list(self.dense_sq_norm),
                           [e[3] for e in self._stack], time.perf_counter() - start, _counts=self.counts)

    def _prune_block(self, b: int, hidden: list[torch.Tensor], ratios: Ratios, levels) -> dict:
        adapter, stages = self.adapter, self.adapter.stages(b)
        for n, m in adapter.linears(b).items():  # start from the dense weights
            m.weight.data.copy_(self.dense[b][n])
        results: dict = {"__levels__": {}}
        hessians = [Hessian(stage[0][1].in_features, device=stage[0][1].weight.device) for stage in stages]
        done = [False] * len(stages)
        single = len(hidden) == 1
        state = {"mask": None, "target": -1}

        def prune_stage(s: int) -> None:
            t0 = time.perf_counter()
            names = [n for n, _ in stages[s]]
            targets = [[ratios[n]] + [r for r in (levels or []) if r != ratios[n]] for n in names]
            out = sparsegpt([self.dense[b][n] for n in names], hessians[s].matrix(),
                            None if self.pattern.structured else targets, self.pattern,
                            self.blocksize, self.percdamp)
            for (n, module), per_ratio, want in zip(stages[s], out, targets):
                module.weight.data.copy_(per_ratio[0].weight)
                results[n] = per_ratio[0]
                for r, p in zip(want, per_ratio):
                    if levels is not None:
                        results["__levels__"][(n, r)] = p
            done[s] = True
            hessians[s] = None  # free
            self.timings["sparsegpt"] += time.perf_counter() - t0

        def make_hook(s: int):
            def hook(_module, args):
                if done[s]:
                    return
                t0 = time.perf_counter()
                hessians[s].add(args[0], state["mask"])
                self.timings["hessian"] += time.perf_counter() - t0
                if single:
                    prune_stage(s)
                elif s == state["target"]:
                    raise _StopForward
            return hook

        handles = [stage[0][1].register_forward_pre_hook(make_hook(s)) for s, stage in enumerate(stages)]
        try:
            if not single:
                for s in range(len(stages)):
                    state["target"] = s
                    for h, x in zip(hidden, self.inputs):
                        state["mask"] = x.token_mask
                        try:
                            adapter.run_block(b, h, x.kwargs)
                        except _StopForward:
                            pass
                    prune_stage(s)
            outputs = []
            for h, x in zip(hidden, self.inputs):
                state["mask"] = x.token_mask
                outputs.append(adapter.run_block(b, h, x.kwargs))
        finally:
            for handle in handles:
                handle.remove()
        results["__outputs__"] = outputs
        return results
