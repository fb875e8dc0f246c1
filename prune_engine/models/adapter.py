"""The model adapter: what the pruner needs from a LLaMA-family decoder inside a causal LM or a LLaVA model.

An adapter knows the decoder blocks of the language model, the prunable linears of a block
grouped into *stages* (linears that read the same input share one Hessian), how to turn a
calibration batch into the hidden states entering block 0 (using the model's own forward,
so LLaVA image features are merged at the image tokens by transformers' code), how to run
one block, and how to turn the last hidden states into a loss.
"""
from __future__ import annotations

from dataclasses import dataclass

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


