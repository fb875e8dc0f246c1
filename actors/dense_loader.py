"""The loader task: the dense model's weights, loaded once per search, into the object store.

``load_dense`` returns the weights (and the projector's) as numpy arrays: they live in the object
store, read zero-copy by the actors on the node and transferred once to each other node, so the
evaluator actors build their models from them without reading the checkpoint again.
"""
from __future__ import annotations

import ray
import torch

from efficientllava.prune_engine.tensors import pack_tensors


def _dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


@ray.remote(max_retries=3)
def load_dense(engine: dict, dtype: str) -> tuple[dict, dict | None]:
    """The dense model's weights, and its projector's (None for text-only models)."""
    from efficientllava.prune_engine.models.adapter import ModelError
    from efficientllava.prune_engine.models.loading import load_model

    try:
        adapter, _ = load_model(engine["model"], dtype=_dtype(dtype))
    except ModelError:
        raise
    except Exception as exc:  # unreadable weights and the like: one line for the CLI
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"cannot load the weights of {engine['model']}: {first}") from None
    weights = pack_tensors(adapter.model.state_dict())
    projector = pack_tensors(adapter.projector.state_dict()) if adapter.projector is not None else None
    return weights, projector
