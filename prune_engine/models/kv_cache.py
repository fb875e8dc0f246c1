"""The KV cache's name in transformers' forward calls and outputs: `cache` in newer 5.x, `past_key_values` before.

transformers 5.2x renamed the argument and the output field (the old name still works there, with a deprecation
warning, and goes in 5.40); our range `transformers>=5,<6` covers both sides, so the engine asks the module which
name it takes instead of pinning one.
"""
from __future__ import annotations

import functools
import inspect


@functools.lru_cache(maxsize=None)
def _forward_takes(cls: type) -> str:
    params = inspect.signature(cls.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_kwarg(module) -> str:
    """The keyword under which `module.forward` takes a KV cache."""
    return _forward_takes(type(module))


def output_cache(output):
    """The KV cache a forward returned (None when it returned none)."""
    fields = getattr(output, "__dataclass_fields__", {})
    if "cache" in fields:
        return output.cache
    return getattr(output, "past_key_values", None)
