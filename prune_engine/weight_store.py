"""Weights the pruner keeps off the device: the dense copies of the decoder linears and the level database, in CPU memory or as memory-mapped files.

The pruner restarts every candidate from the dense weights and, in database mode, stitches
candidates from every linear pruned at every level: for a 7B model that is one copy of the
language model plus five more. Neither has to sit on the accelerator, nor (with a directory on
local disk) in RAM: each store holds its tensors in CPU memory, or writes each one once to its
own file and maps it back (``torch.load(mmap=True)``) only while it is being copied into the
model, so the operating system pages it in and drops it again as memory requires.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from efficientllava.prune_engine.sparsegpt import Pruned


class _Files:
    """One file per key in a private directory under `parent`, removed when the store is dropped; the
    directories a killed process left behind (named after its pid, on this machine) go at the next start."""

    def __init__(self, parent: str | Path, prefix: str):
        Path(parent).mkdir(parents=True, exist_ok=True)
        _remove_orphans(Path(parent))
        self.root = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))
        self._count = 0

    def write(self, tensor: torch.Tensor) -> Path:
        path = self.root / f"{self._count}.pt"
        self._count += 1
        torch.save(tensor.detach().to("cpu").contiguous(), path)
        return path

    @staticmethod
    def read(path: Path) -> torch.Tensor:
        return torch.load(path, mmap=True, weights_only=True)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _remove_orphans(parent: Path) -> None:
    for path in parent.iterdir():
        match = re.fullmatch(r"(?:dense|levels)-(\d+)-\w+", path.name)
        if match and path.is_dir() and not _alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class DenseWeights:
    """The dense weights of every block's linears, kept off the device (CPU memory, or files in `directory`)."""

    def __init__(self, blocks: list[dict[str, torch.Tensor]], directory: str | Path | None = None):
        self._files = _Files(directory, "dense-") if directory is not None else None
        self._blocks: list[dict[str, torch.Tensor | Path]] = []
        for block in blocks:
            if self._files is None:
                self._blocks.append({n: w.detach().to("cpu", copy=True) for n, w in block.items()})
            else:
                self._blocks.append({n: self._files.write(w) for n, w in block.items()})

    def __len__(self) -> int:
        return len(self._blocks)

    def block(self, b: int) -> dict[str, torch.Tensor]:
        """Block b's dense weights by matrix name (memory-mapped when on disk: copy, do not keep)."""
        return {n: w if torch.is_tensor(w) else _Files.read(w) for n, w in self._blocks[b].items()}

    def __del__(self):
        if getattr(self, "_files", None) is not None:
            self._files.remove()


class LevelDatabase:
    """Every linear of every block pruned at every level, by (block, matrix name, level), off the device.

    In memory (`directory` None) it is a plain mapping to `Pruned` entries on the CPU; with a
    directory each entry's weight is written to its own file when stored, and `[key]` maps it
    back. The scalars (ratio, squared norm, error) always stay in memory.
    """

    def __init__(self, directory: str | Path | None = None):
        self.directory = directory
        self._files = _Files(directory, "levels-") if directory is not None else None
        self._entries: dict[tuple[int, str, float], Pruned | tuple[Path, Pruned]] = {}

    def __setitem__(self, key: tuple[int, str, float], pruned: Pruned) -> None:
        if self._files is None:
            self._entries[key] = dataclasses.replace(pruned, weight=pruned.weight.to("cpu"))
        else:
            self._entries[key] = (self._files.write(pruned.weight), dataclasses.replace(pruned, weight=None))

    def __getitem__(self, key: tuple[int, str, float]) -> Pruned:
        entry = self._entries[key]
        if isinstance(entry, Pruned):
            return entry
        path, meta = entry
        return dataclasses.replace(meta, weight=_Files.read(path))

    def __contains__(self, key) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def keys(self) -> Iterator[tuple[int, str, float]]:
        return iter(list(self._entries))

    __iter__ = keys

    def items(self) -> Iterator[tuple[tuple[int, str, float], Pruned]]:
        for key in list(self._entries):
            yield key, self[key]

    def values(self) -> Iterator[Pruned]:
        for key in list(self._entries):
            yield self[key]

    def clear(self) -> None:
        self._entries = {}
        if self._files is not None:
            self._files.remove()
            self._files = _Files(self.directory, "levels-")

    def __del__(self):
        if getattr(self, "_files", None) is not None:
            self._files.remove()
