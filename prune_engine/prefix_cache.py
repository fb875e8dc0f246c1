"""Prefix reuse: the block outputs of the last policy, kept so that a next policy sharing its first blocks starts after them; bounded in bytes and kept off the device.

A *lane* is one stream of block outputs: in sequential mode the whole calibration set (the
blocks are pruned on all batches together), in database mode one batch (a candidate may be
scored on some batches only). Every lane remembers the key of each block it ran (its level
or ratios) and, for the blocks in `kept`, that block's output. With a byte budget smaller than
every block's outputs, the kept blocks are spread evenly (every `stride`-th block), so a policy
that first differs at block j restarts at most `stride` - 1 blocks before j.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Entry:
    key: tuple  # what block b of the lane ran (its ratios or levels)
    output: Any = None  # its output (a tensor, or one per batch), or None when not kept
    facts: dict = field(default_factory=dict)  # whatever the caller records per block (norms, sparsity)


def _to(value, device):
    if torch.is_tensor(value):
        return value.to(device)
    if isinstance(value, list):
        return [_to(v, device) for v in value]
    return value


class PrefixCache:
    """Per lane, the blocks of the last policy run on it, and the outputs of the kept blocks (on `store`)."""

    def __init__(self, num_blocks: int, block_bytes: int, budget_bytes: int | None = None, store="cpu"):
        """`block_bytes`: the outputs of one block over all lanes; `budget_bytes`: what all kept outputs may
        take (None: no bound, every block's outputs are kept; 0: none are, there is no reuse)."""
        self.num_blocks, self.store = num_blocks, torch.device(store)
        if budget_bytes is None:
            self.stride = 1
        else:
            fits = budget_bytes // max(block_bytes, 1)
            self.stride = math.ceil(num_blocks / fits) if fits else None
        self.kept = set() if self.stride is None else {b for b in range(num_blocks) if (b + 1) % self.stride == 0}
        self._lanes: dict[Any, list[Entry]] = {}

    def start(self, lane, keys: list[tuple], device) -> tuple[int, Any]:
        """Where a policy whose blocks have `keys` starts on `lane`: the block after the deepest kept
        output of the prefix it shares with what the lane last ran, and that output on `device` (None:
        start at block 0). The lane's entries from there on are dropped."""
        entries = self._lanes.setdefault(lane, [])
        shared = 0
        while shared < len(entries) and entries[shared].key == keys[shared]:
            shared += 1
        start = shared
        while start > 0 and entries[start - 1].output is None:
            start -= 1
        del entries[start:]
        return start, (_to(entries[start - 1].output, device) if start else None)

    def push(self, lane, key: tuple, output, **facts) -> None:
        """Record the next block of `lane`: its key, its output (kept if the block is), and `facts`."""
        entries = self._lanes.setdefault(lane, [])
        kept = len(entries) in self.kept
        entries.append(Entry(key, _to(output, self.store) if kept else None, facts))

    def entries(self, lane) -> list[Entry]:
        return self._lanes.get(lane, [])

    def drop(self, lane=None) -> None:
        """Forget `lane` (default: every lane), e.g. when its inputs or the weights it ran changed."""
        if lane is None:
            self._lanes = {}
        else:
            self._lanes.pop(lane, None)

    @property
    def bytes(self) -> int:
        """What the kept outputs take now."""
        def size(value) -> int:
            if torch.is_tensor(value):
                return value.numel() * value.element_size()
            return sum(size(v) for v in value) if isinstance(value, list) else 0

        return sum(size(e.output) for entries in self._lanes.values() for e in entries)
