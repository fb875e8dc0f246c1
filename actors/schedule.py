"""Handing candidates to evaluator actors (pure scheduling logic, no Ray).

Candidates are sorted lexicographically by their ratios and cut into contiguous chunks, one per
actor, so that the candidates an actor evaluates one after the other share long prefixes (its
pruner then starts at the first differing block). An idle actor takes, in this order: a
candidate whose actor died (never back on the actor it died on while another actor lives), the
next candidate of its own chunk, or the last candidate of the longest other chunk (stealing from
the tail keeps the victim's prefix sharing). Which actor evaluates what never changes a result:
an evaluation is a pure function of (policy, projector version).
"""
from __future__ import annotations

from collections import deque
from typing import Hashable, Sequence


def lexicographic_order(ratios: Sequence[Sequence[float]]) -> list[int]:
    return sorted(range(len(ratios)), key=lambda i: (tuple(float(x) for x in ratios[i]), i))


def contiguous_chunks(order: list[int], n: int) -> list[list[int]]:
    """`order` cut into n contiguous, balanced chunks (the first ones one longer)."""
    n = max(1, n)
    q, r = divmod(len(order), n)
    out, start = [], 0
    for w in range(n):
        size = q + (1 if w < r else 0)
        out.append(order[start:start + size])
        start += size
    return out


class Schedule:
    """Which candidate each actor should evaluate next."""

    def __init__(self, ratios: Sequence[Sequence[float]], workers: list[Hashable]):
        if not workers:
            raise RuntimeError("no live evaluator actor")
        chunks = contiguous_chunks(lexicographic_order(ratios), len(workers))
        self.queues: dict[Hashable, deque[int]] = {w: deque(c) for w, c in zip(workers, chunks)}
        self.orphans: list[int] = []  # candidates lost with a dead actor, to re-run
        self.failed_on: dict[int, set] = {}  # candidate -> actors it was lost on

    def next_for(self, worker: Hashable) -> int | None:
        live = set(self.queues)
        for k, cand in enumerate(self.orphans):
            bad = self.failed_on.get(cand, set())
            if worker not in bad or not (live - bad):
                return self.orphans.pop(k)
        own = self.queues.get(worker)
        if own:
            return own.popleft()
        victims = [q for w, q in self.queues.items() if w != worker and q]
        if victims:
            return max(victims, key=len).pop()
        return None

    def failed(self, cand: int, worker: Hashable) -> None:
        """Candidate `cand` was lost with `worker`'s death: re-run it elsewhere."""
        self.failed_on.setdefault(cand, set()).add(worker)
        self.orphans.append(cand)

    def retire(self, worker: Hashable) -> None:
        """`worker` is gone for good: its chunk goes to the others."""
        self.orphans.extend(self.queues.pop(worker, deque()))

    @property
    def workers(self) -> list[Hashable]:
        return list(self.queues)

    def empty(self) -> bool:
        return not self.orphans and not any(self.queues.values())
