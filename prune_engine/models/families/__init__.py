"""The registry of supported VLM families, by config `model_type`: every module of this package that defines FAMILY."""
from __future__ import annotations

import importlib
import pkgutil

from efficientllava.prune_engine.models.families.base import CAUSAL_LM, LLAMA_STAGES, Family

_NOT_FAMILIES = ("base",)


def _discover() -> dict[str, Family]:
    found = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name in _NOT_FAMILIES:
            continue
        family = getattr(importlib.import_module(f"{__name__}.{info.name}"), "FAMILY", None)
        if isinstance(family, Family):
            found[family.model_type] = family
    return dict(sorted(found.items()))


FAMILIES: dict[str, Family] = _discover()


def family_of(model_type: str | None) -> Family | None:
    """The registered image-text family of a `model_type`, or None."""
    return FAMILIES.get(model_type or "")


def supported() -> str:
    """'LLaVA (llava), LLaVA-NeXT (llava_next), ...' for error messages."""
    return ", ".join(f"{f.label} ({t})" for t, f in FAMILIES.items())


__all__ = ["CAUSAL_LM", "FAMILIES", "LLAMA_STAGES", "Family", "family_of", "supported"]
