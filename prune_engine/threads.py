"""How many CPU threads torch uses: for the whole process, or for one piece of work."""
from __future__ import annotations

from contextlib import contextmanager

import torch


def use_threads(count: int) -> None:
    """Let torch use `count` CPU threads from now on (intra-op parallelism)."""
    torch.set_num_threads(count)


@contextmanager
def cpu_threads(count: int | None = None):
    """Run the body with `count` torch CPU threads (None: every CPU this process can run on, at least as many as
    now); the thread count is restored afterwards, also when the body fails."""
    import os

    before = torch.get_num_threads()
    torch.set_num_threads(count or max(before, len(os.sched_getaffinity(0))))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def one_cpu_thread(device: torch.device):
    """Run the body on one CPU thread when `device` is the CPU (no effect on other devices).

    For work made of many small operations, such as SparseGPT's column loop, where handing
    each operation to several threads costs more than it saves.
    """
    if device.type != "cpu":
        yield
        return
    with cpu_threads(1):
        yield
