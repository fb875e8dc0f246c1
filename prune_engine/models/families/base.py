"""What an adapter must know about one model family: where the language model's decoder, vision tower, projector and lm_head live."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

# LLaMA-family names (LLaMA, Mistral, Qwen2, Gemma 3, SmolLM, Vicuna...): stages in forward order;
# the linears of a stage read the same input (one Hessian).
LLAMA_STAGES = (
    ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    ("self_attn.o_proj",),
    ("mlp.gate_proj", "mlp.up_proj"),
    ("mlp.down_proj",),
)


@dataclass(frozen=True)
class Family:
    """A model family, by its config's `model_type`; paths are dotted attribute paths from the top model."""

    model_type: str
    label: str  # how users call it ("LLaVA-NeXT")
    decoder: str  # the language model's decoder (its .layers are the blocks, .norm the final norm)
    vision: str | None = None  # the vision tower
    projector: str | None = None  # what search-space evolution trains (the vision-to-text connector)
    stages: tuple[tuple[str, ...], ...] = LLAMA_STAGES
    # the model's own positions cannot be rebuilt from the attention mask (M-RoPE over image grids):
    # constrained-choice scoring runs whole prompt+choice sequences instead of a cached prompt
    cached_choice_scoring: bool = True

    @property
    def multimodal(self) -> bool:
        return self.projector is not None

    def module(self, model: nn.Module, path: str | None) -> nn.Module | None:
        return model.get_submodule(path) if path else None


#: any causal LM (LlamaForCausalLM, Qwen2ForCausalLM...): no vision, decoder at .model
CAUSAL_LM = Family("causal_lm", "causal LM", decoder="model")
