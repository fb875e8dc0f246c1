"""Export the language model of a causal LM or LLaVA model to ONNX, and check the export.

Two fixed-shape fp32 graphs, written with the TorchScript exporter (`dynamo=False`, opset 17):

* prefill: `input_ids` (1, T) int64 -> `logits` (1, vocab) of the LAST position only. That is
  all generation needs after the prompt; running lm_head over every position would add
  T x hidden x vocab multiply-adds (for SmolLM2-135M about 20% of the whole prefill), which is
  dense work that weight sparsity cannot speed up and would only dilute the measurement.
* decode: `input_ids` (1, 1) plus the KV cache of a T-token prefix as explicit inputs
  (`past_key_{i}`, `past_value_{i}`, each (1, kv_heads, T, head_dim)) -> `logits` (1, vocab) of
  the new token and `present_key_{i}` / `present_value_{i}` (1, kv_heads, T + 1, head_dim).
  The new token sits at position T; no mask is needed since it may attend to every cached key.

Why a wrapper instead of the model's own forward: transformers 5 builds its attention masks
with code (`masking_utils.create_causal_mask`, `aten::diff`, vmap'ed mask functions) that the
TorchScript exporter cannot translate, and its sdpa path hides the mask. The wrapper therefore
drives the pieces of the decoder itself: embeddings, rotary embeddings, an explicit additive
4-D causal mask built from `arange` comparisons, the decoder layers with eager attention
(switched on only while the wrapper runs and switched back afterwards), the final norm and
lm_head. For decode, the layers receive a minimal cache object whose `update()` concatenates
the past tensors with the new ones, which the tracer records as plain `Concat` nodes (a
transformers `DynamicCache` would work too, but its lazily initialised layers add needless
`Concat`s of empty tensors to the graph).

Pruned weights keep their zeros: the weights are exported as fp32 initializers exactly as
they are (constant folding only transposes them). A tied lm_head is written twice (the
embedding for Gather, its transpose for MatMul), so the file is a little larger than the model.
Graphs whose weights exceed protobuf's 2 GB limit are written by the TorchScript exporter with
external data (one file per initializer, next to the .onnx file): give each graph its own
folder and keep the folder together. That path is not exercised by the tests (SmolLM2's
graph is ~650 MB).

The graphs have fixed shapes: a decode graph serves exactly one cache length. A generator
would export one per length or a padded cache with a mask input; the benchmark only times.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from efficientllava.prune_engine.models.kv_cache import cache_kwarg, output_cache

OPSET = 17


def _parts(model_or_adapter) -> tuple[nn.Module, nn.Module]:
    """(decoder with .layers/.norm/.embed_tokens/.rotary_emb, lm_head) of an adapter or HF model."""
    if hasattr(model_or_adapter, "decoder") and hasattr(model_or_adapter, "model"):  # ModelAdapter
        return model_or_adapter.decoder, model_or_adapter.model.lm_head
    from efficientllava.prune_engine.models.adapter import ModelAdapter

    adapter = ModelAdapter(model_or_adapter)
    return adapter.decoder, adapter.model.lm_head


@contextlib.contextmanager
def eager_attention(config):
    """Use transformers' eager attention (explicit additive mask) while inside the block."""
    old = config._attn_implementation
    config._attn_implementation = "eager"
    try:
        yield
    finally:
        config._attn_implementation = old


def causal_mask(q_len: int, kv_len: int, dtype: torch.dtype, device=None) -> torch.Tensor:
    """Additive (1, 1, q_len, kv_len) mask: 0 where query i may see key j (j <= i + kv_len - q_len), else min."""
    q = torch.arange(q_len, device=device).unsqueeze(1) + (kv_len - q_len)
    k = torch.arange(kv_len, device=device).unsqueeze(0)
    blocked = k > q
    return torch.zeros(q_len, kv_len, dtype=dtype, device=device).masked_fill(
        blocked, torch.finfo(dtype).min)[None, None]


class _Wrapper(nn.Module):
    def __init__(self, model_or_adapter):
        super().__init__()
        self.decoder, self.lm_head = _parts(model_or_adapter)
        self.config = self.decoder.config
        self.layers = list(self.decoder.layers)[: self.config.num_hidden_layers]

    def _run(self, input_ids, position_ids, mask, cache=None):
        hidden = self.decoder.embed_tokens(input_ids)
        position_embeddings = self.decoder.rotary_emb(hidden, position_ids=position_ids)
        with eager_attention(self.config):
            for layer in self.layers:
                out = layer(hidden, attention_mask=mask, position_ids=position_ids, use_cache=cache is not None,
                            position_embeddings=position_embeddings, **{cache_kwarg(layer): cache})
                hidden = out[0] if isinstance(out, tuple) else out
        last = self.decoder.norm(hidden[:, -1])  # RMSNorm is per position: normalise the last one only
        return self.lm_head(last)  # (batch, vocab)


class PrefillWrapper(_Wrapper):
    """input_ids (1, T) -> logits of the last position (1, vocab), with an explicit causal mask."""

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        seq = input_ids.shape[1]
        positions = torch.arange(seq, device=input_ids.device).unsqueeze(0)
        mask = causal_mask(seq, seq, self.lm_head.weight.dtype, input_ids.device)
        return self._run(input_ids, positions, mask)


class _TensorCache:
    """The part of transformers' Cache API that the attention layers use: `update()` appends."""

    def __init__(self, keys, values):
        self.keys, self.values = list(keys), list(values)

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        self.keys[layer_idx] = torch.cat([self.keys[layer_idx], key_states], dim=-2)
        self.values[layer_idx] = torch.cat([self.values[layer_idx], value_states], dim=-2)
        return self.keys[layer_idx], self.values[layer_idx]


class DecodeWrapper(_Wrapper):
    """(input_ids (1, 1), past k_0, v_0, k_1, v_1, ...) -> (logits (1, vocab), present k_0, v_0, ...)."""

    def forward(self, input_ids: torch.Tensor, *past: torch.Tensor):
        n = len(self.layers)
        if len(past) != 2 * n:
            raise ValueError(f"expected {2 * n} past tensors (key, value per layer), got {len(past)}")
        cache = _TensorCache(past[0::2], past[1::2])
        past_len = past[0].shape[-2]
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0) + past_len
        logits = self._run(input_ids, positions, None, cache)  # one new token sees every key: no mask
        present = [t for kv in zip(cache.keys, cache.values) for t in kv]
        return (logits, *present)


def kv_shape(model_or_adapter, past_len: int, batch: int = 1) -> tuple[int, int, int, int]:
    decoder, _ = _parts(model_or_adapter)
    c = decoder.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return batch, c.num_key_value_heads, past_len, head_dim


def kv_names(num_layers: int, prefix: str) -> list[str]:
    return [f"{prefix}_{kind}_{i}" for i in range(num_layers) for kind in ("key", "value")]


def _export(wrapper: nn.Module, args: tuple, path: Path, input_names, output_names) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python values and the exporter's deprecation
        torch.onnx.export(wrapper.eval(), args, str(path), input_names=input_names, output_names=output_names,
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)
    return path


def export_prefill(model_or_adapter, path: str | Path, seq_len: int) -> Path:
    """Write the prefill graph (input_ids (1, seq_len) -> last-position logits (1, vocab)) to `path`."""
    wrapper = PrefillWrapper(model_or_adapter)
    ids = torch.zeros(1, seq_len, dtype=torch.long, device=wrapper.lm_head.weight.device)
    return _export(wrapper, (ids,), path, ["input_ids"], ["logits"])


def export_decode(model_or_adapter, path: str | Path, past_len: int) -> Path:
    """Write the decode graph (one token + a KV cache of past_len tokens) to `path`."""
    wrapper = DecodeWrapper(model_or_adapter)
    weight = wrapper.lm_head.weight
    ids = torch.zeros(1, 1, dtype=torch.long, device=weight.device)
    past = [torch.zeros(kv_shape(model_or_adapter, past_len), dtype=weight.dtype, device=weight.device)
            for _ in range(2 * len(wrapper.layers))]
    n = len(wrapper.layers)
    return _export(wrapper, (ids, *past), path, ["input_ids"] + kv_names(n, "past"),
                   ["logits"] + kv_names(n, "present"))


@torch.no_grad()
def prefill_with_cache(model_or_adapter, input_ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """PyTorch reference: last-position logits and the KV cache [k_0, v_0, k_1, ...] of a prompt.

    Uses the model's own forward (transformers' cache and masks), independent of the wrappers.
    """
    decoder, lm_head = _parts(model_or_adapter)
    out = decoder(input_ids=input_ids, use_cache=True)
    cache = output_cache(out)
    tensors = []
    for layer in cache.layers:
        tensors += [layer.keys, layer.values]
    return lm_head(out.last_hidden_state[:, -1]), tensors


# --- running the exported graphs -----------------------------------------------------------
class OnnxRunner:
    """Runs an exported graph with DeepSparse (default) or onnxruntime; `run(list of arrays) -> list`."""

    def __init__(self, path: str | Path, backend: str = "deepsparse", num_cores: int | None = None):
        self.path, self.backend = str(path), backend
        if backend == "deepsparse":
            from deepsparse import compile_model

            self.engine = compile_model(self.path, batch_size=1, num_cores=num_cores)
            self._run = self.engine.run
        elif backend == "onnxruntime":
            import onnxruntime as ort

            options = ort.SessionOptions()
            if num_cores:
                options.intra_op_num_threads = num_cores
                options.inter_op_num_threads = 1
            self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
            names = [i.name for i in self.session.get_inputs()]
            self._run = lambda arrays: self.session.run(None, dict(zip(names, arrays)))
        else:
            raise ValueError(f"unknown backend '{backend}' (deepsparse or onnxruntime)")

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return self._run([np.ascontiguousarray(a) for a in arrays])


def available_backends() -> list[str]:
    import importlib.util

    return [b for b in ("deepsparse", "onnxruntime") if importlib.util.find_spec(b) is not None]


@dataclass
class Agreement:
    max_abs_diff: float  # max |logit_onnx - logit_torch|
    argmax_agree: float  # fraction of rows whose argmax agrees
    max_abs_logit: float  # scale of the logits, for a relative view

    def ok(self, atol: float) -> bool:
        return self.max_abs_diff <= atol and self.argmax_agree == 1.0


def compare_logits(onnx_logits, torch_logits) -> Agreement:
    a = np.asarray(onnx_logits, dtype=np.float64).reshape(-1, np.shape(onnx_logits)[-1])
    b = torch_logits.detach().double().cpu().numpy().reshape(a.shape) if torch.is_tensor(torch_logits) \
        else np.asarray(torch_logits, dtype=np.float64).reshape(a.shape)
    return Agreement(float(np.abs(a - b).max()), float((a.argmax(-1) == b.argmax(-1)).mean()), float(np.abs(b).max()))


def initializer_sparsity(path: str | Path, min_size: int = 1) -> dict[str, tuple[tuple[int, ...], float]]:
    """Zero fraction of every 2-D fp32 initializer of an ONNX file: name -> (shape, fraction of zeros)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path), load_external_data=True)
    out = {}
    for init in model.graph.initializer:
        if len(init.dims) == 2 and init.data_type == onnx.TensorProto.FLOAT and np.prod(init.dims) >= min_size:
            arr = numpy_helper.to_array(init)
            out[init.name] = (tuple(arr.shape), float((arr == 0).mean()))
    return out
