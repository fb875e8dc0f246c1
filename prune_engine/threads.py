"""How many CPU threads torch uses: for the whole process, or for one piece of work."""
from __future__ import annotations

from contextlib import contextmanager

import torch


def use_threads(count: int) -> None:
    """Let torch use `count` CPU threads from now on (intra-op parallelism)."""
    torch.set_num_threads(count)


@contextmanager
def one_cpu_thread(device: torch.device):
    """Run the body on one CPU thread when `device` is the CPU (no effect on other devices).

    For work made of many small operations, such as SparseGPT's column loop, where handing
    each operation to several threads costs more than it saves.
    """
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
