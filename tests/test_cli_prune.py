"""`efficientllava prune` / `eval ppl` end to end on tiny models; bad input gives one line and writes nothing."""
import json

import pytest
import torch
from typer.testing import CliRunner

from efficientllava.actors.cli import app

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def test_prune_save_load_same_logits(tiny_llama_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from efficientllava.prune_engine.models.loading import load_model

    out = tmp_path / "pruned"
    code, output = run("prune", "--model", tiny_llama_dir, "--out", out, "--sparsity", 0.6, "--nsamples", 8,
                       "--seqlen", 64)
    assert code == 0, output
    policy = json.loads((out / "policy.json").read_text())
    sparsity = json.loads((out / "sparsity.json").read_text())
    assert policy["mean_sparsity"] == pytest.approx(0.6, abs=1e-3)
    assert all(v == pytest.approx(0.6, abs=1e-3) for block in sparsity["blocks"] for v in block.values())
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    adapter, tok = load_model(str(tiny_llama_dir))
    # re-prune in-process with the same settings: the saved model must give the same logits
    from efficientllava.prune_engine.data.calibration import text_batches
    from efficientllava.prune_engine.pipeline import LayerwisePruner

    LayerwisePruner(adapter, text_batches(tok, "wiki:calib", 8, 64, seed=0), progress=False).prune(0.6)
    ids = torch.tensor([[1, 2, 3, 400, 500, 600, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, adapter.model(input_ids=ids).logits)
    code, output = run("eval", "ppl", "--model", out, "--nsamples", 4, "--seqlen", 32, "--json", tmp_path / "p.json")
    assert code == 0, output
    assert json.loads((tmp_path / "p.json").read_text())["perplexity"] > 1


def test_prune_with_policy_file_and_llava(tiny_llava_dir, tmp_path):
    from transformers import LlavaForConditionalGeneration

    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"ratios": [0.4, 0.5, 0.6]}))
    out = tmp_path / "pruned-llava"
    code, output = run("prune", "--model", tiny_llava_dir, "--out", out, "--policy", policy, "--nsamples", 4,
                       "--seqlen", 32, "--mm-calib", "easy-vqa:train", "--mm-samples", 4)
    assert code == 0, output
    model = LlavaForConditionalGeneration.from_pretrained(out)
    layers = model.model.language_model.layers
    for layer, ratio in zip(layers, [0.4, 0.5, 0.6]):
        w = layer.mlp.down_proj.weight
        assert int((w == 0).sum()) == round(ratio * w.numel())


@pytest.mark.parametrize("args, message", [
    (["--sparsity", "1.0"], "outside [0, 1)"),
    (["--sparsity", "-0.2"], "outside [0, 1)"),
    (["--pattern", "2-4"], "malformed"),
    (["--pattern", "4:2"], "0 < N < M"),
    (["--nsamples", "100000"], "too little text"),
    (["--calib", "missing-file.txt"], "missing-file.txt"),
])
def test_bad_input_one_line_error_nothing_written(tiny_llama_dir, tmp_path, args, message):
    out = tmp_path / "out"
    code, output = run("prune", "--model", tiny_llama_dir, "--out", out, "--seqlen", 64, *args)
    assert code == 2
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], output
    assert not out.exists()
    assert not list(tmp_path.glob(".out.tmp*"))


def test_unknown_model_and_bad_policy(tmp_path):
    code, output = run("prune", "--model", "no/such/model", "--out", tmp_path / "o")
    assert code == 2 and "no such directory" in output and len(output.strip().splitlines()) == 1
    bad = tmp_path / "p.json"
    bad.write_text("{not json")
    code, output = run("prune", "--model", "smollm2", "--out", tmp_path / "o", "--policy", bad)
    assert code == 2 and "not valid JSON" in output
    assert not (tmp_path / "o").exists()


def test_policy_length_must_match_blocks(tiny_llama_dir, tmp_path):
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"ratios": [0.5, 0.5]}))
    code, output = run("prune", "--model", tiny_llama_dir, "--out", tmp_path / "o", "--policy", policy)
    assert code == 2 and "3 decoder blocks" in output
    assert not (tmp_path / "o").exists()


def test_refuses_non_empty_output_dir(tiny_llama_dir, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    code, output = run("prune", "--model", tiny_llama_dir, "--out", out)
    assert code == 2 and "--overwrite" in output
    assert (out / "keep.txt").read_text() == "x"
