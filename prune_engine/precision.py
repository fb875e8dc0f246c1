"""The precision of the screening forward: bfloat16 where the hardware multiplies it fast, else float32.

Screening (multi-fidelity selection, docs/method.md §4a) only ranks children, so it may run the
stitched candidate in bfloat16: on a GPU with bf16 support or a CPU with AMX / AVX512-BF16 the
matrix products are several times cheaper, and the ranking barely moves (measured on smol-llava at
0.7: Spearman 0.99 between bf16 and fp32 screening losses over 24 children). Full-fidelity scores,
pruning and the projector step stay in the model's own dtype. It applies to a model held in fp32
(the CPU default); a model loaded in half precision (the GPU default) screens in its own dtype.
"""
from __future__ import annotations

from functools import lru_cache

import torch

PRECISIONS = ("auto", "fp32", "bf16")


@lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when the CPU multiplies bfloat16 in hardware (AMX-BF16 or AVX512-BF16; Linux flags)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool({"amx_bf16", "avx512_bf16"} & flags)
    except OSError:
        pass
    return False


def screen_dtype(precision: str, device: str | torch.device) -> torch.dtype | None:
    """The dtype of the screening forward for setting `precision` on `device` (None: the model's own)."""
    if precision not in PRECISIONS:
        raise ValueError(f"screen precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if device.type == "cpu" and cpu_has_fast_bf16() else None
