"""The model adapter: what the pruner needs from a LLaMA-family decoder inside a causal LM or a registered VLM family.

An adapter knows the decoder blocks of the language model, the prunable linears of a block
grouped into *stages* (linears that read the same input share one Hessian), how to turn a
calibration batch into the hidden states entering block 0 (using the model's own forward,
so image features are merged at the image tokens by transformers' code), how to run one
block, or only the part of a block up to one of its linears (to see that linear's input), and
how to turn the last hidden states into a loss. Where each part lives is the family's
(``prune_engine.models.families``, by the config's ``model_type``).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from efficientllava.prune_engine.models.families import CAUSAL_LM, LLAMA_STAGES, Family, family_of, supported

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


class _InputCaptured(Exception):
    """Raised by a pre-hook once it holds the input it waited for: ends the forward there (the rest
    of it is not needed). Private to this module: see `_capture_input`."""


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
        self.offloaded = False  # see offload_blocks
        self._onload_depth: dict[int, int] = {}

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

    # --- block offloading ---------------------------------------------------------------
    def offload_blocks(self, device) -> None:
        """Keep the decoder blocks in CPU memory and everything else on `device`: a block moves to the
        device only while it runs (`on_device`), so a model larger than the device can be pruned one
        block at a time (the device holds the embeddings, vision tower, projector, lm_head and one block)."""
        layers = self.decoder.layers
        self.decoder.layers = nn.ModuleList()
        try:
            self.model.to(device)
        finally:
            self.decoder.layers = layers
        layers.to("cpu")
        self.offloaded = True

    @contextmanager
    def on_device(self, index: int):
        """Inside the with block, decoder block `index` is on the device (re-entrant; a no-op unless
        the blocks are offloaded). Changes made to its weights there are kept when it moves back."""
        if not self.offloaded:
            yield
            return
        depth = self._onload_depth.get(index, 0)
        if depth == 0:
            self.blocks[index].to(self.device)
        self._onload_depth[index] = depth + 1
        try:
            yield
        finally:
            self._onload_depth[index] -= 1
            if self._onload_depth[index] == 0:
                self.blocks[index].to("cpu")

    # --- running ---------------------------------------------------------------------
    def block_inputs(self, batch: dict, grad: bool = False) -> BlockInputs:
        """Run the model's own forward up to block 0 and capture its inputs (and every block's own
        arguments where the blocks get different ones); with `grad`, the hidden states keep their
        graph (to the projector)."""
        with torch.set_grad_enabled(grad):
            return self._block_inputs(batch)

    def _block_inputs(self, batch: dict) -> BlockInputs:
        inputs = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items() if k != "labels"}
        if self.per_block_kwargs:
            hidden, kwargs = self._capture_every_block(inputs)
        else:
            captured = _capture_input(self.blocks[0], lambda: self.model(**inputs, use_cache=False))
            if captured is None:
                raise ModelError("the model's forward never reached decoder block 0")
            args, kwargs = captured
            hidden = args[0] if args else kwargs["hidden_states"]
        kwargs = {k: v for k, v in kwargs.items() if k not in ("hidden_states", "past_key_values", "cache")}
        kwargs["use_cache"] = False
        labels = batch.get("labels", batch["input_ids"]).to(self.device)
        mask = batch.get("attention_mask")
        token_mask = (mask.bool() if mask is not None else torch.ones_like(labels, dtype=torch.bool)).to(self.device)
        return BlockInputs(hidden, kwargs, labels, token_mask)

    def _capture_every_block(self, inputs: dict) -> tuple[torch.Tensor, dict]:
        """Block 0's hidden states and every block's own arguments, from one pass of the model's forward
        in which each block only records what it is given (and hands its input on unchanged)."""
        seen: list[dict] = []
        first: list[torch.Tensor] = []

        def record(hidden_states=None, *args, **kwargs):
            if not seen:
                first.append(hidden_states)
            seen.append(kwargs)
            return hidden_states

        originals = [block.forward for block in self.blocks]
        try:
            for block in self.blocks:
                block.forward = record
            _capture_input(self.decoder.norm, lambda: self.model(**inputs, use_cache=False))  # stops at the norm
        finally:
            for block, forward in zip(self.blocks, originals):
                block.forward = forward
        if len(seen) != len(self.blocks):
            raise ModelError(f"the model's forward reached {len(seen)} of {len(self.blocks)} decoder blocks")
        # the arguments shared by every block once; those that differ, per block
        shared = {k: v for k, v in seen[0].items() if all(k in s and s[k] is v for s in seen)}
        per_block = [{k: v for k, v in s.items() if k not in shared} for s in seen]
        return first[0], ({**shared, PER_BLOCK: per_block} if any(per_block) else shared)

    @staticmethod
    def _kwargs_of_block(index: int, kwargs: dict) -> dict:
        """The arguments of block `index`: the shared ones, and its own where the blocks differ."""
        if PER_BLOCK not in kwargs:
            return kwargs
        return {**{k: v for k, v in kwargs.items() if k != PER_BLOCK}, **kwargs[PER_BLOCK][index]}

    def run_block(self, index: int, hidden: torch.Tensor, kwargs: dict) -> torch.Tensor:
        with self.on_device(index):
            out = self.blocks[index](hidden, **self._kwargs_of_block(index, kwargs))
        return out[0] if isinstance(out, tuple) else out

    def linear_input(self, index: int, linear: nn.Linear, hidden: torch.Tensor, kwargs: dict) -> torch.Tensor:
        """The input that `linear`, a linear of block `index`, receives when the block runs on `hidden`.

        The block runs only up to that linear: what comes after it is not computed.
        """
        with self.on_device(index):
            captured = _capture_input(linear, lambda: self.blocks[index](hidden, **self._kwargs_of_block(index, kwargs)))
        if captured is None:
            raise ModelError(f"decoder block {index}'s forward never reached the linear asked for")
        args, _ = captured
        return args[0]

    def loss_targets(self, hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Final-norm hidden states at the positions that predict a labelled token, and those tokens."""
        h = self.decoder.norm(hidden)[:, :-1].reshape(-1, hidden.shape[-1])
        targets = labels[:, 1:].reshape(-1)
        keep = targets != -100
        return h[keep], targets[keep]

    def loss(self, hidden: torch.Tensor, labels: torch.Tensor, chunk: int = 1024) -> tuple[float, int]:
        """Summed next-token cross-entropy over labelled positions, and their count (chunked logits)."""
        hidden, targets = self.loss_targets(hidden, labels)
        total = 0.0
        for s in range(0, len(targets), chunk):
            logits = self.model.lm_head(hidden[s:s + chunk]).float()
            total += torch.nn.functional.cross_entropy(logits, targets[s:s + chunk], reduction="sum").item()
        return total, len(targets)


def _capture_input(module: nn.Module, forward) -> tuple[tuple, dict] | None:
    """Call `forward()` until it calls `module`, and return the positional and keyword arguments
    `module` got (None: it never got called). The forward stops there."""
    captured = []

    def hook(_module, args, kwargs):
        captured.append((args, kwargs))
        raise _InputCaptured

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        forward()
    except _InputCaptured:
        pass
    finally:
        handle.remove()
    return captured[0] if captured else None


def _has_submodule(module: nn.Module, name: str) -> bool:
    try:
        module.get_submodule(name)
        return True
    except AttributeError:
        return False


