"""Tensors across processes: torch serialisation to bytes, and state dicts as numpy arrays (zero-copy in Ray's object store)."""
from __future__ import annotations

import io
import warnings

import torch


def serialise(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def deserialise(data: bytes):
    return torch.load(io.BytesIO(data), weights_only=True)


def pack_tensors(state: dict[str, torch.Tensor]) -> dict:
    """numpy arrays (zero-copy in the object store); tied tensors are stored once."""
    arrays, aliases, seen = {}, {}, {}
    for name, t in state.items():
        t = t.detach().cpu()
        key = (t.data_ptr(), t.dtype, tuple(t.shape), tuple(t.stride()))
        if t.numel() and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        dtype = str(t.dtype).removeprefix("torch.")
        t = t.contiguous()
        arrays[name] = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy(), dtype
    return {"arrays": arrays, "aliases": aliases}


def unpack_tensors(packed: dict) -> dict[str, torch.Tensor]:
    out = {}
    with warnings.catch_warnings():  # object-store arrays are read-only; load_state_dict copies them
        warnings.simplefilter("ignore", UserWarning)
        for name, (array, dtype) in packed["arrays"].items():
            t = torch.from_numpy(array)
            out[name] = t.view(torch.bfloat16) if dtype == "bfloat16" else t
    for name, target in packed["aliases"].items():
        out[name] = out[target]
    return out
