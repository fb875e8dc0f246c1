"""OWL baseline: outlier ratios against a whole-model reference, the policy's shape, and `prune --owl`."""
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from efficientllava.prune_engine.data.calibration import text_batches
from efficientllava.actors.cli import app
from efficientllava.prune_engine.models.loading import load_model
from efficientllava.prune_engine.owl import outlier_ratios, owl_policy


def reference_outlier_ratios(model, batch, m):
    """One ordinary forward of the dense model with hooks on every linear; no block-by-block code."""
    sq, handles = {}, []
    layers = model.model.layers
    for b, layer in enumerate(layers):
        for name, mod in layer.named_modules():
            if isinstance(mod, torch.nn.Linear):
                def hook(_m, args, key=(b, name)):
                    x = args[0].reshape(-1, args[0].shape[-1]).double()
                    sq[key] = sq.get(key, 0) + (x ** 2).sum(0)
                handles.append(mod.register_forward_pre_hook(hook))
    with torch.no_grad():
        model(input_ids=batch["input_ids"])
    for h in handles:
        h.remove()
    out = []
    for b, layer in enumerate(layers):
        scores = [(mod.weight.double().abs() * sq[(b, name)].sqrt()).flatten()
                  for name, mod in layer.named_modules() if isinstance(mod, torch.nn.Linear)]
        s = torch.cat(scores)
        out.append(float((s > m * s.mean()).double().mean()))
    return out


@pytest.mark.parametrize("m", [2.0, 5.0])
def test_outlier_ratios_match_whole_model_reference(tiny_llama_dir, m):
    adapter, tok = load_model(str(tiny_llama_dir))
    batches = text_batches(tok, "wiki:calib", 8, 64, seed=0)
    ours = outlier_ratios(adapter, batches, m)
    ref = reference_outlier_ratios(adapter.model, batches[0], m)
    assert len(ours) == adapter.num_blocks
    np.testing.assert_allclose(ours, ref, atol=1e-9)
    assert any(r > 0 for r in ours)
    # the same with the calibration split into two batches
    split = text_batches(tok, "wiki:calib", 8, 64, seed=0, batch_size=4)
    np.testing.assert_allclose(outlier_ratios(adapter, split, m), ours, atol=1e-9)


def test_owl_policy_shape():
    d = [0.01, 0.05, 0.03, 0.02]
    s = owl_policy(d, 0.5, lam=0.08)
    assert np.mean(s) == pytest.approx(0.5, abs=1e-12)
    assert max(s) - min(s) == pytest.approx(0.16)
    assert np.argmin(s) == 1 and np.argmax(s) == 0  # most outliers -> least sparse
    assert s[2] < s[3]
    w = [1.0, 3.0, 1.0, 1.0]
    sw = owl_policy(d, 0.5, lam=0.08, weights=w)
    assert np.dot(sw, w) / sum(w) == pytest.approx(0.5, abs=1e-12)
    assert owl_policy([0.02] * 3, 0.6) == [0.6] * 3
    with pytest.raises(ValueError, match="smaller lambda"):
        owl_policy(d, 0.9, lam=0.2)


def test_prune_cli_owl(tiny_llama_dir, tmp_path):
    runner = CliRunner()
    out = tmp_path / "owl"
    res = runner.invoke(app, ["prune", "--model", str(tiny_llama_dir), "--out", str(out), "--sparsity", "0.5",
                              "--owl", "0.1", "--nsamples", "8", "--seqlen", "64"])
    assert res.exit_code == 0, res.output
    policy = json.loads((out / "policy.json").read_text())
    sparsity = json.loads((out / "sparsity.json").read_text())
    assert policy["mean_sparsity"] == pytest.approx(0.5, abs=2e-3)
    ratios = policy["ratios"]
    assert max(ratios) - min(ratios) == pytest.approx(0.2, abs=1e-9)
    for r, block in zip(ratios, sparsity["blocks"]):
        assert all(v == pytest.approx(r, abs=2e-3) for v in block.values())
    bad = runner.invoke(app, ["prune", "--model", str(tiny_llama_dir), "--out", str(tmp_path / "x"),
                              "--owl", "0.1", "--pattern", "2:4"])
    assert bad.exit_code == 2 and "--owl" in bad.output and not (tmp_path / "x").exists()
