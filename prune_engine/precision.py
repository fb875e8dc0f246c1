"""Precision: the model's dtype (engine.dtype: float32, bfloat16, float16 or auto by device) and the screening forward's (bfloat16 where the hardware multiplies it fast, else float32).

The model's weights and forward run in its dtype; what must not lose precision stays in float32
whatever it is: the Hessians and the OBS updates (prune_engine/sparsegpt.py), the projector's
master weights and optimizer (prune_engine/projector.py), and the projector gradient, which a
half-precision backward scales against underflow (prune_engine/answer_loss.py).

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
#: the model dtypes of engine.dtype / --dtype; auto: float16 on a GPU, float32 on a CPU
DTYPES = ("auto", "float32", "bfloat16", "float16")


def resolve_device(device: str) -> str:
    """engine.device as a torch device string: 'auto' is the GPU when one is visible here, else the CPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def check_dtype(dtype: str) -> str:
    """`dtype` when it is one of DTYPES, else a one-line ValueError."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got '{dtype}'")
    return dtype


def model_dtype(dtype: str | torch.dtype, device: str | torch.device) -> torch.dtype:
    """The dtype of a model that computes on `device` (where it computes, not where it is loaded: an
    offloaded model is loaded on the CPU and still runs in the GPU's dtype)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if check_dtype(dtype) == "auto":
        return torch.float32 if torch.device(resolve_device(str(device))).type == "cpu" else torch.float16
    return getattr(torch, dtype)


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
