"""The model adapter: what the pruner needs from a LLaMA-family decoder inside a causal LM or a registered VLM family.

An adapter knows the decoder blocks of the language model, the prunable linears of a block
grouped into *stages* (linears that read the same input share one Hessian), how to turn a
calibration batch into the hidden states entering block 0 (using the model's own forward,
so image features are merged at the image tokens by transformers' code), how to run
one block, and how to turn the last hidden states into a loss. Where each part lives is the
family's (``prune_engine.models.families``, by the config's ``model_type``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from prune_engine.models.families import CAUSAL_LM, LLAMA_STAGES, Family, family_of, supported

EMBEDDED_SMOLLM2 = "smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

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


#: key of BlockInputs.kwargs holding, per block, the arguments that differ between blocks
#: (sliding-window and full-attention layers get different masks and rotary embeddings)
PER_BLOCK = "per_block_kwargs"


class ModelAdapter:
    """Adapter for a LLaMA-family decoder inside a causal LM or a registered VLM family."""

    def __init__(self, model: nn.Module, name: str = ""):
        self.model = model
        self.name = name
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        family = family_of(model_type)
        if family is None and hasattr(getattr(model, "config", None), "vision_config"):
            raise ModelError(f"{name or type(model).__name__}: unsupported image-text family '{model_type}' "
                             f"(supported: {supported()}, and LLaMA-family causal LMs)")
        self.family: Family = family or CAUSAL_LM
        self.is_multimodal = self.family.multimodal
        self.is_llava = self.is_multimodal  # an image-text model (any registered family)
        try:
            decoder = model.get_submodule(self.family.decoder)
        except AttributeError:
            decoder = None
        if decoder is None or not hasattr(decoder, "layers") or not hasattr(decoder, "norm"):
            raise ModelError(f"{name or type(model).__name__}: no decoder with .layers and .norm found "
                             f"(supported: LLaMA-family causal LMs and {supported()})")
        if not hasattr(model, "lm_head"):
            raise ModelError(f"{name or type(model).__name__}: no lm_head")
        self.decoder = decoder
        self.blocks: list[nn.Module] = list(decoder.layers)
        for name_ in (n for stage in self.family.stages for n in stage):
            module = self.blocks[0].get_submodule(name_) if _has_submodule(self.blocks[0], name_) else None
            if not isinstance(module, nn.Linear):
                raise ModelError(f"{name or type(model).__name__}: decoder block has no linear '{name_}' "
                                 f"(expected LLaMA-family names {', '.join(MATRIX_NAMES)})")
        # layers of different kinds (sliding-window / full attention) get different masks and
        # rotary embeddings: the inputs of block 0 alone do not say what the others get
        layer_types = getattr(getattr(decoder, "config", None), "layer_types", None) or []
        self.per_block_kwargs = len(set(layer_types)) > 1

    # --- structure -------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def stages(self, index: int) -> list[list[tuple[str, nn.Linear]]]:
        block = self.blocks[index]
        return [[(n, block.get_submodule(n)) for n in stage] for stage in self.family.stages]

    def linears(self, index: int) -> dict[str, nn.Linear]:
        return {n: m for stage in self.stages(index) for n, m in stage}

    def param_counts(self) -> list[dict[str, int]]:
        return [{n: m.weight.numel() for n, m in self.linears(i).items()} for i in range(self.num_blocks)]

    @property
    def projector(self) -> nn.Module | None:
        """The module search-space evolution trains (None for text-only models)."""
        return self.family.module(self.model, self.family.projector)

    @property
    def vision_tower(self) -> nn.Module | None:
        return self.family.module(self.model, self.family.vision)

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

        inputs = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items() if k != "labels"}
        if self.per_block_kwargs:
            captured = self._capture_every_block(inputs)
        handle = self.blocks[0].register_forward_pre_hook(hook, with_kwargs=True) if not captured else None
        try:
            if handle is not None:
                self.model(**inputs, use_cache=False)
        except _StopForward:
            pass
        finally:
            if handle is not None:
                handle.remove()
        if "hidden" not in captured:
            raise ModelError("the model's forward never reached decoder block 0")
        hidden = captured["hidden"]
        labels = batch.get("labels", batch["input_ids"]).to(self.device)
        mask = batch.get("attention_mask")
        token_mask = (mask.bool() if mask is not None else torch.ones_like(labels, dtype=torch.bool)).to(self.device)
        kwargs = captured["kwargs"]
        kwargs.pop("past_key_values", None)
        kwargs.pop("cache", None)
        kwargs["use_cache"] = False
        return BlockInputs(hidden, kwargs, labels, token_mask)

    def _capture_every_block(self, inputs: dict) -> dict:
        """Block 0's hidden states and every block's own arguments, from one pass of the model's forward
        in which each block only records what it is given (and hands its input on unchanged)."""
        seen: list[dict] = []

        def record(hidden_states=None, *args, **kwargs):
            if not seen:
                captured["hidden"] = hidden_states
            seen.append(kwargs)
            return hidden_states

        def stop(_module, _args):
            raise _StopForward

        captured: dict = {}
        originals = [block.forward for block in self.blocks]
        handle = self.decoder.norm.register_forward_pre_hook(stop)
        try:
            for block in self.blocks:
                block.forward = record
            self.model(**inputs, use_cache=False)
        except _StopForward:
            pass
        finally:
            handle.remove()
            for block, forward in zip(self.blocks, originals):
                block.forward = forward
        if len(seen) != len(self.blocks):
            raise ModelError(f"the model's forward reached {len(seen)} of {len(self.blocks)} decoder blocks")
        # the arguments shared by every block once; those that differ, per block
        shared = {k: v for k, v in seen[0].items() if all(k in s and s[k] is v for s in seen)}
        per_block = [{k: v for k, v in s.items() if k not in shared} for s in seen]
        captured["kwargs"] = {**shared, PER_BLOCK: per_block} if any(per_block) else shared
        return captured

    def run_block(self, index: int, hidden: torch.Tensor, kwargs: dict) -> torch.Tensor:
        if PER_BLOCK in kwargs:
            kwargs = {**{k: v for k, v in kwargs.items() if k != PER_BLOCK}, **kwargs[PER_BLOCK][index]}
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


