"""ONNX export of a pruned tiny LLaMA: outputs match PyTorch and the pruned zeros survive."""
from __future__ import annotations

import pytest
import torch

from efficientllava.prune_engine.data.calibration import text_batches
from efficientllava.prune_engine.export import (DecodeWrapper, OnnxRunner, PrefillWrapper, compare_logits, export_decode,
                                 export_prefill, initializer_sparsity, kv_shape, prefill_with_cache)
from efficientllava.prune_engine.models.kv_cache import cache_kwarg, output_cache
from efficientllava.prune_engine.models.loading import load_model
from efficientllava.prune_engine.pipeline import LayerwisePruner

T = 12
ATOL = 1e-4


@pytest.fixture(scope="module")
def pruned(tiny_llama_dir):
    torch.set_num_threads(1)
    adapter, tok = load_model(str(tiny_llama_dir), dtype=torch.float32)
    LayerwisePruner(adapter, text_batches(tok, "wiki:calib", 4, 32, seed=0), progress=False).prune(0.5)
    prompt = text_batches(tok, "wiki:eval", 1, T + 1, seed=0)[0]["input_ids"]
    return adapter, prompt[:, :T].contiguous(), prompt[:, T:].contiguous()


@pytest.fixture(scope="module")
def backend():
    pytest.importorskip("onnx", reason="the extra efficientllava[deepsparse] is not installed")
    pytest.importorskip("deepsparse", reason="DeepSparse is not installed: cannot run the exported graph")
    return "deepsparse"


def test_wrappers_match_the_model(pruned):
    adapter, ids, nxt = pruned
    with torch.no_grad():
        full = adapter.model(torch.cat([ids, nxt], 1)).logits
        prefill = PrefillWrapper(adapter)(ids)
        _, past = prefill_with_cache(adapter, ids)
        decode = DecodeWrapper(adapter)(nxt, *past)
    assert prefill.shape == (1, adapter.model.config.vocab_size)
    assert torch.allclose(prefill, full[:, T - 1], atol=1e-5)
    assert torch.allclose(decode[0], full[:, T], atol=1e-5)
    assert len(decode) == 1 + 2 * adapter.num_blocks
    assert decode[1].shape == kv_shape(adapter, T + 1)
    assert torch.equal(decode[1][:, :, :T], past[0])  # present = past + the new token's key


def test_wrappers_pass_the_cache_under_the_name_transformers_takes(pruned):
    """transformers 5.2x renamed `past_key_values` to `cache` (the old name warns, and goes in 5.40)."""
    import warnings

    adapter, ids, nxt = pruned
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        _, past = prefill_with_cache(adapter, ids)
        DecodeWrapper(adapter)(nxt, *past)
        assert output_cache(adapter.decoder(input_ids=ids, use_cache=True)) is not None
        assert output_cache(adapter.decoder(input_ids=ids, use_cache=False)) is None
    assert not [w for w in caught if "past_key_values" in str(w.message)], [str(w.message) for w in caught]


def test_prefill_export_runs_and_keeps_zeros(pruned, backend, tmp_path):
    adapter, ids, _ = pruned
    path = export_prefill(adapter, tmp_path / "prefill.onnx", T)
    with torch.no_grad():
        ref = PrefillWrapper(adapter)(ids)
    out = OnnxRunner(path, backend, num_cores=1).run([ids.numpy()])
    assert out[0].shape == (1, adapter.model.config.vocab_size)
    agree = compare_logits(out[0], ref)
    assert agree.ok(ATOL), agree

    vocab = adapter.model.config.vocab_size
    stats = initializer_sparsity(path)
    linears = {n: frac for n, (shape, frac) in stats.items() if vocab not in shape}
    assert len(linears) == 7 * adapter.num_blocks  # q, k, v, o, gate, up, down per block
    assert min(linears.values()) >= 0.49, linears
    assert all(frac < 0.01 for n, (shape, frac) in stats.items() if vocab in shape)  # embeddings stay dense


def test_decode_export_matches_the_cached_forward(pruned, backend, tmp_path):
    adapter, ids, nxt = pruned
    path = export_decode(adapter, tmp_path / "decode.onnx", T)
    _, past = prefill_with_cache(adapter, ids)
    with torch.no_grad():
        ref = adapter.model(nxt, **{cache_kwarg(adapter.model): _hf_cache(adapter, ids)}).logits[:, -1]  # HF's own cache
    out = OnnxRunner(path, backend, num_cores=1).run([nxt.numpy()] + [t.numpy() for t in past])
    agree = compare_logits(out[0], ref)
    assert agree.ok(ATOL), agree
    assert len(out) == 1 + 2 * adapter.num_blocks
    assert out[1].shape == kv_shape(adapter, T + 1)
    assert abs(out[1][:, :, :T] - past[0].numpy()).max() < 1e-6


def test_onnxruntime_agrees_when_installed(pruned, tmp_path):
    pytest.importorskip("onnx", reason="the extra efficientllava[deepsparse] is not installed")
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    adapter, ids, _ = pruned
    path = export_prefill(adapter, tmp_path / "prefill.onnx", T)
    with torch.no_grad():
        ref = PrefillWrapper(adapter)(ids)
    agree = compare_logits(OnnxRunner(path, "onnxruntime", num_cores=1).run([ids.numpy()])[0], ref)
    assert agree.ok(ATOL), agree


def _hf_cache(adapter, ids):
    with torch.no_grad():
        return output_cache(adapter.model(ids, use_cache=True))
