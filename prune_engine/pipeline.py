"""Layer-sequential SparseGPT: prune the decoder blocks in order, each calibrated on pruned outputs.

Block l is calibrated on the outputs of the already pruned blocks < l, and inside a block each
stage (q/k/v, then o, then gate/up, then down) is calibrated on the outputs of the already
pruned stages before it. The steps for one block (`_prune_block`):

1. start from the block's dense weights;
2. for each stage, in order: accumulate the stage's Hessian from the input its linears receive
   on every calibration batch (`_accumulate_hessian`: the block runs only up to the stage), then
   prune the stage with SparseGPT (`_prune_stage`: the pruned weights go into the model, so the
   stages after it are calibrated on its pruned outputs);
3. propagate: run the pruned block on every batch (`_propagate`); its outputs are the next
   block's inputs.

A stage can only be pruned once all batches have reached it, so with several batches the block
runs up to each stage once per batch. With the whole calibration set in one batch, the same
steps take a single forward per block (`_prune_block_in_one_forward`): each stage is pruned the
moment the forward reaches it, from the input it is about to receive, and the forward goes on
through the pruned stage, so its output is the pruned block's output.

In database mode (`build_database`) every stage is pruned at every level from the dense model's
activations, so one forward per batch records the inputs of all the stages of a block at once
(`_record_all_hessians`), and one SparseGPT run per stage serves all the levels
(`_prune_at_levels`).

The vision tower, projector, embeddings, final norm and lm_head are never touched.
"""
from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from efficientllava.prune_engine.models.adapter import BlockInputs, ModelAdapter
from efficientllava.prune_engine.prefix_cache import PrefixCache
from efficientllava.prune_engine.sparsegpt import Hessian, Pattern, Pruned, check_sparsity, sparsegpt
from efficientllava.prune_engine.threads import one_cpu_thread
from efficientllava.prune_engine.weight_store import DenseWeights, LevelDatabase

Ratios = dict[str, float]  # target sparsity per matrix name of one block
RATIO_DECIMALS = 6  # a ratio's precision in a policy and in the level database's keys
Stage = list[tuple[str, nn.Linear]]  # linears of one block that read the same input, by name


@dataclass
class PruneReport:
    """Outcome of one sequential pass."""

    loss: float  # mean token loss (cross-entropy, or KL to the dense model) on all calibration (= proxy) targets
    tokens: int
    block_sq_norm: list[float]  # Σ ||Ŵ||_F² over the pruned matrices of each block
    dense_sq_norm: list[float]  # the same for the dense weights
    sparsity: list[dict[str, float]]  # achieved sparsity per block and matrix
    seconds: float = 0.0
    loss_text: float | None = None  # the same over the text batches' targets only (None: no text batch)
    loss_mm: float | None = None  # ... over the image-text batches' answer tokens only

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


def round_ratio(ratio: float) -> float:
    """A sparsity ratio as policies carry it (and the level database is keyed by): RATIO_DECIMALS decimals."""
    return round(float(ratio), RATIO_DECIMALS)


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


LOSS_KINDS = ("ce", "kl")


@dataclass
class BlockResult:
    """What pruning one decoder block gives."""

    outputs: list[torch.Tensor] = field(default_factory=list)  # per batch: the pruned block's outputs
    pruned: dict[str, Pruned] = field(default_factory=dict)  # per matrix: at the policy's ratio (in the model)
    levels: dict[tuple[str, float], Pruned] = field(default_factory=dict)  # with levels: per (matrix, ratio)

    def add(self, pruned: dict[str, Pruned], levels: dict[tuple[str, float], Pruned]) -> None:
        """Add the matrices of one pruned stage."""
        self.pruned.update(pruned)
        self.levels.update(levels)

    @property
    def sq_norm(self) -> float:
        """Σ ||Ŵ||_F² over the block's pruned matrices."""
        return sum(p.sq_norm for p in self.pruned.values())

    @property
    def sparsity(self) -> dict[str, float]:
        return {n: p.ratio for n, p in self.pruned.items()}


class LayerwisePruner:
    """Holds the dense weights and block-0 inputs of the calibration batches; prunes with any policy,
    block by block, in either mode: layer-sequentially (`prune`), or in database mode by stitching
    levels pruned once from the dense model (`build_database`, then `stitch` / `install`).

    Batches have a kind ("text" or "mm") so that losses are reported per modality. The loss is
    next-token cross-entropy to the labels ("ce") or the KL divergence from the dense model's
    next-token distribution ("kl"; the dense log-probabilities are computed once, off the device).

    With `reuse_prefix`, the outputs of the blocks of the last policy are kept (`PrefixCache`, off the
    device, within `cache_bytes`): a next policy that shares its first L block ratios starts at
    block L (or at the deepest kept block before it), since blocks < L already hold exactly those
    pruned weights. Sorting candidates lexicographically maximises the sharing. In database mode
    (`stitch`) the cache has one lane per batch, so a candidate scored on a subset of the batches
    (screening) and later on all of them shares the work.

    Off the device: the dense weights and the level database (in CPU memory, or as memory-mapped
    files under `offload_dir`), the cached block outputs and the KL teacher. With an adapter whose
    blocks are offloaded (`ModelAdapter.offload_blocks`), a block is on the device only while it
    is pruned or run.
    """

    def __init__(self, adapter: ModelAdapter, batches: list[dict], pattern: Pattern = Pattern(),
                 blocksize: int = 128, percdamp: float = 0.01, progress: bool = True, reuse_prefix: bool = False,
                 kinds: list[str] | None = None, loss: str = "ce", scored: list[int] | None = None,
                 calibrating: list[int] | None = None, offload_dir: str | None = None,
                 cache_bytes: int | None = None):
        if loss not in LOSS_KINDS:
            raise ValueError(f"loss must be one of {', '.join(LOSS_KINDS)}, got '{loss}'")
        self.adapter, self.pattern = adapter, pattern
        self.blocksize, self.percdamp, self.progress = blocksize, percdamp, progress
        self.reuse_prefix = reuse_prefix
        self.kinds = list(kinds) if kinds is not None else ["text"] * len(batches)
        if len(self.kinds) != len(batches):
            raise ValueError(f"{len(self.kinds)} kinds for {len(batches)} batches")
        self.loss_kind = loss
        # the batches whose loss is reported (the others only calibrate: Hessians)
        self.scored = list(range(len(batches))) if scored is None else sorted(scored)
        # the batches whose activations build the Hessians (the others only run forward: a held-aside fitness)
        self.calibrating = set(range(len(batches)) if calibrating is None else calibrating)
        if not self.calibrating or not self.calibrating <= set(range(len(batches))):
            raise ValueError(f"calibrating batches must be a non-empty subset of the {len(batches)} batches")
        linears = [adapter.linears(i) for i in range(adapter.num_blocks)]
        self.dense = DenseWeights([{n: m.weight for n, m in block.items()} for block in linears], offload_dir)
        self.dtype = next(iter(linears[0].values())).weight.dtype  # the model's own (pruning, full scores)
        self._head: dict[torch.dtype, tuple] = {}  # lm_head weight and bias cast for a lower-precision forward
        self.dense_sq_norm = [sum(float(m.weight.double().square().sum()) for m in block.values()) for block in linears]
        self.counts = adapter.param_counts()
        self.inputs: list[BlockInputs] = [adapter.block_inputs(b) for b in batches]
        self.database = LevelDatabase(offload_dir)
        block_bytes = sum(x.hidden.numel() * x.hidden.element_size() for x in self.inputs)
        self.cache = PrefixCache(adapter.num_blocks, block_bytes, cache_bytes if reuse_prefix else 0)
        self._installed: list = [None] * adapter.num_blocks  # database mode: the level key held by each block
        self.blocks_run = 0  # block passes actually computed (prefix reuse skips some)
        self.timings = {"hessian": 0.0, "sparsegpt": 0.0}  # seconds spent, cumulative (the rest is forward)
        self.teacher = self._dense_logprobs() if loss == "kl" else None

    # ---- inputs and state ---------------------------------------------------------------
    def refresh_inputs(self, batches: list[dict], indices: list[int] | None = None) -> None:
        """Recompute the block-0 inputs of the batches at `indices` (default: all), e.g. the image-text
        batches after the projector changed; caches built on them are dropped, the rest is kept."""
        indices = list(range(len(self.inputs))) if indices is None else list(indices)
        if len(batches) != len(indices):
            raise ValueError(f"{len(batches)} batches for {len(indices)} indices")
        for i, batch in zip(indices, batches):
            self.inputs[i] = self.adapter.block_inputs(batch)
            self.cache.drop(i)
        self.cache.drop(_ALL_BATCHES)

    def restore_dense(self) -> None:
        self.cache.drop()
        self._installed = [None] * self.adapter.num_blocks
        for b in range(self.adapter.num_blocks):
            self._load_dense(b)

    # ---- losses -------------------------------------------------------------------------
    def _targets(self, i: int, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Final-norm hidden states at the positions that predict a labelled token, and those tokens."""
        return self.adapter.loss_targets(hidden, self.inputs[i].labels)

    @torch.no_grad()
    def _dense_logprobs(self, chunk: int = 512) -> list[torch.Tensor]:
        """The dense model's next-token log-probabilities at every target of every batch (CPU, fp16)."""
        hidden = {i: self.inputs[i].hidden for i in self.scored}
        for b in range(self.adapter.num_blocks):
            with self.adapter.on_device(b):
                hidden = {i: self.adapter.run_block(b, h, self.inputs[i].kwargs) for i, h in hidden.items()}
        out = []
        for i in range(len(self.inputs)):
            if i not in self.scored:
                out.append(None)
                continue
            h, _ = self._targets(i, hidden.pop(i))
            out.append(torch.cat([torch.log_softmax(self.adapter.model.lm_head(h[s:s + chunk]).float(), -1)
                                  .to("cpu", torch.float16) for s in range(0, len(h), chunk)]
                                 or [torch.zeros(0, 0, dtype=torch.float16)]))
        return out

    def _batch_loss(self, i: int, hidden: torch.Tensor, chunk: int = 512) -> tuple[float, int]:
        """Summed token loss of batch i (cross-entropy or KL to dense) and its number of targets."""
        h, targets = self._targets(i, hidden)
        total = 0.0
        for s in range(0, len(targets), chunk):
            logp = torch.log_softmax(self._logits(h[s:s + chunk]).float(), dim=-1)
            if self.teacher is None:
                total += -logp.gather(1, targets[s:s + chunk, None]).sum().item()
            else:
                t = self.teacher[i][s:s + chunk].to(logp.device, torch.float32)
                total += (t.exp() * (t - logp)).sum().item()
        return total, int(len(targets))

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        """lm_head(h); inside a lower-precision `stitch`, with a cast copy of lm_head's weight (made once:
        lm_head is never pruned, and may be tied to the embeddings, so the model's own is left as is)."""
        head = self.adapter.model.lm_head
        dtype = torch.get_autocast_dtype(h.device.type) if torch.is_autocast_enabled(h.device.type) else None
        if dtype is None or dtype == head.weight.dtype:
            return head(h)
        if dtype not in self._head:
            self._head[dtype] = (head.weight.detach().to(dtype), None if head.bias is None
                                 else head.bias.detach().to(dtype))
        return torch.nn.functional.linear(h.to(dtype), *self._head[dtype])

    def _report(self, losses: dict[int, tuple[float, int]], sq_norms: list[float], sparsity: list[dict],
                start: float) -> PruneReport:
        def mean(kind: str | None) -> float | None:
            picked = [v for i, v in losses.items() if kind is None or self.kinds[i] == kind]
            count = sum(c for _, c in picked)
            return sum(s for s, _ in picked) / count if picked and count else None

        total = mean(None)
        return PruneReport(total if total is not None else 0.0, sum(c for _, c in losses.values()), sq_norms,
                           list(self.dense_sq_norm), sparsity, time.perf_counter() - start,
                           loss_text=mean("text"), loss_mm=mean("mm"), _counts=self.counts)

    # ---- sequential pruning ---------------------------------------------------------------
    @torch.no_grad()
    def prune(self, policy, levels: list[float] | None = None) -> PruneReport:
        """Prune all blocks sequentially with `policy`, leaving the pruned weights in the model.

        With `levels` every matrix is additionally pruned at each of these ratios from the same
        Hessian and stored in `self.database` (see `build_database`).
        """
        return self._run(policy, levels)

    @torch.no_grad()
    def build_database(self, levels: list[float], blocks: list[int] | None = None) -> None:
        """Database mode: every matrix of every block (or of `blocks` only) pruned at every level
        from the dense model's activations. The inputs are dense, so one forward per batch
        accumulates all stage Hessians of a block at once; then one OBS run per stage serves all
        levels. Entries live off the device. Blocks outside `blocks` are only run forward."""
        self.restore_dense()
        if blocks is None:
            self.database.clear()
        wanted = set(range(self.adapter.num_blocks) if blocks is None else blocks)
        levels = [float(r) for r in levels]
        hidden = [x.hidden for x in self.inputs]
        for b in range(max(wanted) + 1 if wanted else 0):
            with self.adapter.on_device(b):
                if b in wanted:
                    hessians, hidden = self._record_all_hessians(b, hidden)
                    for stage in self.adapter.stages(b):
                        self._prune_at_levels(b, stage, hessians.pop(0), levels)  # each Hessian freed once used
                else:
                    hidden = self._propagate(b, hidden)
            self.blocks_run += 1

    def _run(self, policy, levels) -> PruneReport:
        start = time.perf_counter()
        ratios = block_ratios(policy, self.adapter)
        for i in range(len(self.inputs)):  # the weights change under the database mode's lanes
            self.cache.drop(i)
        self._installed = [None] * self.adapter.num_blocks
        keys = [("seq", tuple(sorted(r.items()))) for r in ratios]
        if levels is not None:
            keys = [k + ("levels", tuple(levels)) for k in keys]
        first, hidden = self.cache.start(_ALL_BATCHES, keys, self.adapter.device)
        hidden = hidden if first else [x.hidden for x in self.inputs]
        bar = tqdm(range(first, self.adapter.num_blocks), desc="sparsegpt", unit="block",
                   disable=not self.progress, leave=False)
        for b in bar:
            with self.adapter.on_device(b):
                block = self._prune_block(b, hidden, ratios[b], levels)
            for (name, ratio), pruned in block.levels.items():
                self._store_level(b, name, ratio, pruned)
            hidden = block.outputs
            self.blocks_run += 1
            self.cache.push(_ALL_BATCHES, keys[b], hidden, sq_norm=block.sq_norm, sparsity=block.sparsity)
        losses = {i: self._batch_loss(i, h) for i, h in enumerate(hidden) if i in self.scored}
        blocks = [e.facts for e in self.cache.entries(_ALL_BATCHES)]
        return self._report(losses, [e["sq_norm"] for e in blocks], [e["sparsity"] for e in blocks], start)

    # ---- database mode --------------------------------------------------------------------
    def _level(self, b: int, name: str, ratio: float) -> Pruned:
        try:
            return self.database[(b, name, round_ratio(ratio))]
        except KeyError:
            raise ValueError(f"ratio {ratio} of block {b} is not a database level") from None

    def install(self, policy, dtype: torch.dtype | None = None) -> list[tuple]:
        """Database mode: put the policy's level weights into the model (only blocks whose level or
        dtype changed are copied), in `dtype` (default: the model's own). Returns the per-block keys."""
        if not self.database:
            raise RuntimeError("build_database() first")
        dtype = dtype or self.dtype
        ratios = block_ratios(policy, self.adapter)
        keys = [("db", tuple(sorted(r.items())), str(dtype)) for r in ratios]
        self.cache.drop(_ALL_BATCHES)  # the sequential lane no longer matches the weights
        for b, (key, r) in enumerate(zip(keys, ratios)):
            if self._installed[b] != key:
                for n, m in self.adapter.linears(b).items():
                    _put_weight(m, self._level(b, n, r[n]).weight, dtype)
                self._installed[b] = key
        return keys

    @torch.no_grad()
    def stitch(self, policy, batches: list[int] | None = None, dtype: torch.dtype | None = None) -> PruneReport:
        """Database mode: assemble the policy from the database and measure it on `batches` (indices;
        default all), running each batch from the first block where it differs from what that
        batch last ran. `dtype` (e.g. bfloat16 for screening): the weights are installed in it and
        the forward runs under autocast; outputs of another dtype are never reused (the keys differ)."""
        start = time.perf_counter()
        keys = self.install(policy, dtype)
        ratios = block_ratios(policy, self.adapter)
        indices = self.scored if batches is None else batches
        device = self.adapter.device
        low = dtype is not None and dtype != self.dtype
        with torch.autocast(device.type, dtype=dtype, enabled=low):
            starts, hidden = {}, {}
            for i in indices:
                starts[i], h = self.cache.start(i, keys, device)
                hidden[i] = h if starts[i] else self.inputs[i].hidden
            first = min(starts.values(), default=self.adapter.num_blocks)
            for b in range(first, self.adapter.num_blocks):  # blocks outer: an offloaded block moves once
                with self.adapter.on_device(b):
                    for i in indices:
                        if starts[i] <= b:
                            hidden[i] = self.adapter.run_block(b, hidden[i], self.inputs[i].kwargs)
                            self.cache.push(i, keys[b], hidden[i])
            losses = {i: self._batch_loss(i, hidden[i]) for i in indices}
        self.blocks_run += self.adapter.num_blocks - first
        levels = [{n: self._level(b, n, r[n]) for n in r} for b, r in enumerate(ratios)]
        return self._report(losses, [sum(p.sq_norm for p in block.values()) for block in levels],
                            [{n: p.ratio for n, p in block.items()} for block in levels], start)

    # ---- the steps of one block ------------------------------------------------------------
    def _prune_block(self, b: int, hidden: list[torch.Tensor], ratios: Ratios, levels) -> BlockResult:
        """Prune block b, whose inputs are `hidden` (one per batch), stage by stage: see the module docstring."""
        self._load_dense(b)
        if len(hidden) == 1:  # (the one batch calibrates: `calibrating` is not empty)
            return self._prune_block_in_one_forward(b, hidden[0], self.inputs[0], ratios, levels)
        result = BlockResult()
        for stage in self.adapter.stages(b):
            hessian = self._accumulate_hessian(b, stage, hidden)
            result.add(*self._prune_stage(b, stage, hessian, ratios, levels))
        result.outputs = self._propagate(b, hidden)
        return result

    def _prune_block_in_one_forward(self, b: int, hidden: torch.Tensor, x: BlockInputs, ratios: Ratios,
                                    levels) -> BlockResult:
        """The steps of `_prune_block` for a single batch, in one forward of block b.

        When the forward reaches a stage, the stage's Hessian is accumulated from the input it is
        about to receive (computed by the pruned stages before it) and the stage is pruned; then
        the forward goes on through the pruned stage. Its output is the pruned block's output.
        """
        result = BlockResult()

        def prune_stage_now(stage: Stage, stage_input: torch.Tensor) -> None:
            hessian = _new_hessian(stage)
            self._add_to_hessian(hessian, stage_input, x.token_mask)
            result.add(*self._prune_stage(b, stage, hessian, ratios, levels))

        with _calls_on_input([(stage[0][1], functools.partial(prune_stage_now, stage))
                              for stage in self.adapter.stages(b)]):
            result.outputs = [self.adapter.run_block(b, hidden, x.kwargs)]
        return result

    def _load_dense(self, b: int) -> None:
        dense = self.dense.block(b)
        for n, m in self.adapter.linears(b).items():
            _put_weight(m, dense[n], self.dtype)

    def _accumulate_hessian(self, b: int, stage: Stage, hidden: list[torch.Tensor]) -> Hessian:
        """The stage's Hessian from the input its linears receive on every batch, with block b's
        weights as they are now. The block runs only up to the stage."""
        hessian = _new_hessian(stage)
        for i, (h, x) in enumerate(zip(hidden, self.inputs)):
            if i in self.calibrating:
                self._add_to_hessian(hessian, self.adapter.linear_input(b, stage[0][1], h, x.kwargs), x.token_mask)
        return hessian

    def _record_all_hessians(self, b: int, hidden: list[torch.Tensor]) -> tuple[list[Hessian], list[torch.Tensor]]:
        """Database mode (dense weights, so no stage waits for another): one forward of block b per
        batch, recording the input of every stage into the stage's Hessian. Returns the Hessians
        and the block's outputs."""
        stages = self.adapter.stages(b)
        hessians = [_new_hessian(stage) for stage in stages]
        outputs = []
        for i, (h, x) in enumerate(zip(hidden, self.inputs)):
            record = [(stage[0][1], functools.partial(self._add_to_hessian, hessian, token_mask=x.token_mask))
                      for stage, hessian in zip(stages, hessians)] if i in self.calibrating else []
            with _calls_on_input(record):
                outputs.append(self.adapter.run_block(b, h, x.kwargs))
        return hessians, outputs

    def _add_to_hessian(self, hessian: Hessian, stage_input: torch.Tensor, token_mask: torch.Tensor) -> None:
        t0 = time.perf_counter()
        hessian.add(stage_input, token_mask)
        self.timings["hessian"] += time.perf_counter() - t0

    def _prune_stage(self, b: int, stage: Stage, hessian: Hessian, ratios: Ratios,
                     levels) -> tuple[dict[str, Pruned], dict[tuple[str, float], Pruned]]:
        """Prune the stage's dense weights with its Hessian at each matrix's ratio in the policy, and
        put them into the model (the stages after it are calibrated on them). With `levels`, the
        same OBS run also prunes every matrix at every level.

        Returns the pruned matrices by name, and with `levels` by (name, ratio) at every ratio.
        """
        t0 = time.perf_counter()
        names = [n for n, _ in stage]
        wanted = {n: [ratios[n]] + [r for r in (levels or []) if r != ratios[n]] for n in names}
        out = self._sparsegpt(b, names, hessian, None if self.pattern.structured else list(wanted.values()))
        pruned, at_levels = {}, {}
        for (n, module), per_ratio in zip(stage, out):
            module.weight.data.copy_(per_ratio[0].weight)
            pruned[n] = per_ratio[0]
            if levels is not None:
                at_levels.update({(n, r): p for r, p in zip(wanted[n], per_ratio)})
        self.timings["sparsegpt"] += time.perf_counter() - t0
        return pruned, at_levels

    def _prune_at_levels(self, b: int, stage: Stage, hessian: Hessian, levels: list[float]) -> None:
        """Database mode: prune the stage's dense weights at every level into the database (the
        model keeps the dense weights)."""
        t0 = time.perf_counter()
        names = [n for n, _ in stage]
        out = self._sparsegpt(b, names, hessian, [levels] * len(names))
        for n, per_level in zip(names, out):
            for r, p in zip(levels, per_level):
                self._store_level(b, n, r, p)
        self.timings["sparsegpt"] += time.perf_counter() - t0

    def _sparsegpt(self, b: int, names: list[str], hessian: Hessian, ratios) -> list[list[Pruned]]:
        """SparseGPT on the dense weights of the matrices `names` of block b, which share `hessian`."""
        H = hessian.matrix()
        dense = self.dense.block(b)
        with one_cpu_thread(H.device):
            return sparsegpt([dense[n] for n in names], H, ratios, self.pattern, self.blocksize, self.percdamp)

    def _store_level(self, b: int, name: str, ratio: float, pruned: Pruned) -> None:
        self.database[(b, name, round_ratio(ratio))] = pruned  # the database keeps it off the device

    def _propagate(self, b: int, hidden: list[torch.Tensor]) -> list[torch.Tensor]:
        """Block b's outputs on every batch: the next block's inputs."""
        return [self.adapter.run_block(b, h, x.kwargs) for h, x in zip(hidden, self.inputs)]


#: the prefix cache's lane in sequential mode: the blocks are pruned on all batches together
_ALL_BATCHES = "all"


def _new_hessian(stage: Stage) -> Hessian:
    first = stage[0][1]
    return Hessian(first.in_features, device=first.weight.device)


@contextmanager
def _calls_on_input(calls: list[tuple[nn.Module, Callable[[torch.Tensor], None]]]):
    """Inside the with block, `call(x)` runs whenever `module` is about to run on x, for each (module, call)."""
    handles = [module.register_forward_pre_hook(lambda _module, args, call=call: call(args[0]))
               for module, call in calls]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _put_weight(module: nn.Module, weight: torch.Tensor, dtype: torch.dtype) -> None:
    """Copy `weight` into the module's weight, in `dtype` (a new tensor when the dtype changes)."""
    if module.weight.dtype == dtype:
        module.weight.data.copy_(weight)
    else:
        module.weight.data = weight.to(device=module.weight.device, dtype=dtype, copy=True)
