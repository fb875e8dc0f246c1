"""Half precision (engine.dtype / --dtype bfloat16 and float16) end to end on CPU: prune, database parts, scores, the loss-scaled projector gradient, held-out evaluation, search."""
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from efficientllava.actors.cli import app

runner = CliRunner()
HALF = ("bfloat16", "float16")
#: unit roundoff of each half dtype (2^-(mantissa bits + 1))
ROUNDOFF = {"bfloat16": 2.0 ** -8, "float16": 2.0 ** -11}


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def test_loss_scaling_keeps_a_gradient_that_float16_flushes_to_zero():
    """d/dw of 1e-9 * w * x is 1e-9 * x: below float16's smallest subnormal (6e-8), so an unscaled float16
    backward gives exactly zero; the scaled backward gives it back in float32 to float16's precision."""
    from efficientllava.prune_engine.answer_loss import scaled_gradients

    w = torch.nn.Parameter(torch.ones(4, dtype=torch.float16))
    x = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float16)

    def backward(scale):
        loss = (w * x).sum().float() * 1e-9
        (loss * scale).backward()
        return float(loss.detach())

    _, unscaled = scaled_gradients(backward, [w], scale=1.0)
    assert not unscaled[0].any()
    _, (grad,) = scaled_gradients(backward, [w])
    assert grad.dtype == torch.float32
    torch.testing.assert_close(grad, x.float() * 1e-9, rtol=2 * ROUNDOFF["float16"], atol=0)


def test_an_overflowing_scale_is_halved_until_the_gradient_is_finite():
    from efficientllava.prune_engine.answer_loss import scaled_gradients

    w = torch.nn.Parameter(torch.ones(2, dtype=torch.float16))
    scales = []

    def backward(scale):
        scales.append(scale)
        (w.sum().float() * 1e3 * scale).backward()  # gradient 1e3 x scale: inf in float16 above 65504
        return 2e3

    _, (grad,) = scaled_gradients(backward, [w])
    assert torch.equal(grad, torch.full((2,), 1e3))
    assert scales[0] == 2.0 ** 16 and scales[-1] * 1e3 <= torch.finfo(torch.float16).max < scales[-2] * 1e3


@pytest.fixture(scope="module")
def scorers(tiny_llava_dir):
    """One database-mode scorer per dtype on the same proxy data (its database built in one part, as an
    evaluator does before sharing it). Cross-entropy fitness, so that the projector trains on a loss of
    order 1: the default KL objective is a small difference of log-probabilities (about 1e-3 on this tiny
    model) whose relative rounding error in half precision says nothing about underflow."""
    from efficientllava.prune_engine.config import DataConfig, EngineConfig
    from efficientllava.prune_engine.scoring import CandidateScorer

    data = DataConfig(nsamples=4, seqlen=32, mm_calib="easy-vqa:train", mm_samples=8)
    out = {}
    for dtype in ("float32", *HALF):
        engine = EngineConfig(model=str(tiny_llava_dir), mode="database", dtype=dtype, monitor_samples=2,
                              projector_batch=2, loss="ce")
        scorer = CandidateScorer(engine, data, [0.3, 0.5, 0.7], build_database=False)
        out[dtype] = scorer, scorer.database_part(0, 1)
        scorer.add_database(out[dtype][1])
    return out


@pytest.mark.parametrize("dtype", HALF)
def test_database_parts_travel_without_loss_in_half_precision(scorers, dtype):
    scorer, part = scorers[dtype]
    assert scorer.pruner.dtype == getattr(torch, dtype)
    for key, (packed, ratio, *_rest) in part.items():
        held = scorer.pruner.database[tuple(key)].weight
        assert held.dtype == getattr(torch, dtype) and packed[1] == dtype
        assert int((held == 0).sum()) == round(ratio * held.numel())


@pytest.mark.parametrize("dtype", HALF)
def test_half_precision_scores_and_projector_gradient_follow_float32(scorers, dtype):
    """Scores and the projector gradient of one candidate in each half dtype against float32. The masks may
    differ where two weights tie within the dtype's rounding, so the bound is not a rounding bound: 0.1
    relative (25 x bfloat16's unit roundoff, 200 x float16's) still fails a gradient that underflowed
    (relative error 1) or points elsewhere."""
    ratios = np.array([0.5, 0.5, 0.5])
    ref, _ = scorers["float32"]
    half, _ = scorers[dtype]
    a, b = ref.evaluate(ratios), half.evaluate(ratios)
    assert b.mean_sparsity == pytest.approx(a.mean_sparsity, abs=1e-3)
    assert np.isfinite([b.l_text, b.l_mm]).all() and np.isfinite(b.log_norm_ratio).all()
    (va, ga), (vb, gb) = ref.projector_gradient(ratios, 0), half.projector_gradient(ratios, 0)
    assert all(g.dtype == np.float32 for g in gb)
    flat_a, flat_b = np.concatenate([g.ravel() for g in ga]), np.concatenate([g.ravel() for g in gb])
    assert np.linalg.norm(flat_b - flat_a) <= 0.1 * np.linalg.norm(flat_a)
    assert vb == pytest.approx(va, rel=0.1)


def test_sequential_mode_prunes_in_bfloat16(tiny_llava_dir):
    from efficientllava.prune_engine.config import DataConfig, EngineConfig
    from efficientllava.prune_engine.scoring import CandidateScorer

    engine = EngineConfig(model=str(tiny_llava_dir), mode="sequential", dtype="bfloat16")
    scorer = CandidateScorer(engine, DataConfig(nsamples=4, seqlen=32), [0.5])
    score = scorer.evaluate(np.array([0.4, 0.5, 0.6]))
    assert score.mean_sparsity == pytest.approx(0.5, abs=1e-3) and np.isfinite(score.l_text)
    assert all(m.weight.dtype == torch.bfloat16 for m in scorer.adapter.linears(0).values())


@pytest.mark.parametrize("dtype", HALF)
def test_prune_cli_in_half_precision_saves_that_dtype_and_evaluates(tiny_llava_dir, tmp_path, dtype):
    from transformers import LlavaForConditionalGeneration

    from efficientllava.prune_engine.config import HeldoutConfig
    from efficientllava.prune_engine.evaluation.heldout import heldout_metrics

    out = tmp_path / "pruned"
    code, output = run("prune", "--model", tiny_llava_dir, "--out", out, "--dtype", dtype, "--nsamples", 4,
                       "--seqlen", 32, "--mm-calib", "easy-vqa:train", "--mm-samples", 4)
    assert code == 0, output
    assert json.loads((out / "policy.json").read_text())["job"]["dtype"] == dtype
    model = LlavaForConditionalGeneration.from_pretrained(out, dtype="auto")
    assert model.dtype == getattr(torch, dtype)
    w = model.model.language_model.layers[0].mlp.down_proj.weight
    assert int((w == 0).sum()) == round(0.5 * w.numel())
    row = heldout_metrics(str(out), HeldoutConfig(segments=2, seqlen=32, vqa=4), device="cpu", dtype=dtype)
    assert np.isfinite(row["ppl"]) and row["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert 0 <= row["easy_vqa"] <= 1


def test_a_bad_dtype_is_one_line(tiny_llava_dir, tmp_path):
    for command in ("prune", "search"):
        code, output = run(command, "--model", tiny_llava_dir, "--out", tmp_path / command, "--dtype", "float8")
        lines = output.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "dtype" in lines[0], output
        assert not (tmp_path / command).exists()


@pytest.mark.ray
def test_search_cli_in_float16_with_projector_steps(tiny_llava_dir, tmp_path):
    """--dtype float16 through the search: database mode with screening, projector steps (loss-scaled), the
    final prune; the saved model is float16 at the target sparsity."""
    from transformers import LlavaForConditionalGeneration

    from ray_helpers import language_model_sparsity

    out = tmp_path / "run"
    code, output = run("search", "--model", tiny_llava_dir, "--dtype", "float16", "--target", 0.5, "--population", 3,
                       "--generations", 2, "--mm-calib", "easy-vqa:train", "--out", out, "--actors", 1,
                       "--num-cpus", 2, "--nsamples", 4, "--seqlen", 32, "--mm-samples", 6, "--offspring", 4,
                       "--projector-lr", 0.01, "--set", "search.elites=1", "--set", "search.projector_guard=false",
                       "--no-progress")
    assert code == 0, output
    model = LlavaForConditionalGeneration.from_pretrained(out / "model", dtype="auto")
    dense = LlavaForConditionalGeneration.from_pretrained(tiny_llava_dir)
    assert model.dtype == torch.float16
    assert abs(language_model_sparsity(model) - 0.5) <= 0.01 + 1e-3
    assert any((p.float() != q.half().float()).any() for p, q in zip(model.model.multi_modal_projector.parameters(),
                                                                     dense.model.multi_modal_projector.parameters()))


@pytest.mark.ray
def test_demo_cli_in_bfloat16(tiny_llava_dir, tmp_path):
    """`efficientllava demo --dtype bfloat16` on a tiny LLaVA: uniform, search and held-out evaluation all in
    bfloat16 (the run's engine.dtype), the searched model saved in it."""
    from transformers import LlavaForConditionalGeneration

    out = tmp_path / "demo"
    code, output = run("demo", "--model", tiny_llava_dir, "--dtype", "bfloat16", "--out", out, "--population", 3,
                       "--generations", 1, "--nsamples", 4, "--seqlen", 32, "--mm-samples", 4, "--actors", 1,
                       "--num-cpus", 2, "--eval-segments", 2, "--eval-seqlen", 32, "--eval-vqa", 4,
                       "--time-budget", 0, "--set", "search.elites=1", "--set", "search.offspring=2")
    assert code == 0, output
    doc = json.loads((out / "demo.json").read_text())
    assert doc["run"]["engine"]["dtype"] == "bfloat16"
    for name in ("uniform", "searched"):
        assert np.isfinite(doc["rows"][name]["ppl"]) and doc["rows"][name]["sparsity"] == pytest.approx(0.5, abs=0.011)
    for model_dir in (out / "uniform", out / "search" / "model"):
        assert LlavaForConditionalGeneration.from_pretrained(model_dir, dtype="auto").dtype == torch.bfloat16


def test_the_automatic_dtype_follows_where_the_model_computes(tiny_llava_dir):
    """auto: float16 on a GPU, float32 on a CPU, decided by the compute device, so an offloaded model (loaded on
    the CPU, run on the GPU) is float16 as the memory estimate assumes."""
    from efficientllava.prune_engine.models.loading import load_model
    from efficientllava.prune_engine.precision import model_dtype

    assert model_dtype("auto", "cpu") == torch.float32 and model_dtype("auto", "cuda:1") == torch.float16
    assert model_dtype("bfloat16", "cuda") == torch.bfloat16 and model_dtype(torch.float16, "cpu") == torch.float16
    with pytest.raises(ValueError, match="dtype must be one of"):
        model_dtype("float8", "cpu")
    adapter, _ = load_model(str(tiny_llava_dir), "auto", "cpu", compute_device="cuda")
    assert adapter.model.dtype == torch.float16 and adapter.device.type == "cpu"
