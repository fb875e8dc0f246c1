"""Every supported VLM family end to end on a tiny random checkpoint: block inputs, prune (text and image-text), load back, generate, search; loading errors."""
import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from efficientllava.actors.cli import app
from tiny_families import FAMILIES, make_tiny_family, processor_needs_torchvision

runner = CliRunner()
PRUNED = 0.5


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module", params=list(FAMILIES))
def family_dir(request, tmp_path_factory):
    return request.param, make_tiny_family(request.param, tmp_path_factory.mktemp("families") / request.param)


def _samples(n=3):
    from efficientllava.prune_engine.data.vqa import load_easy_vqa

    return load_easy_vqa("train", limit=n, seed=1)


def _qwen2_vl_batch(model_dir, samples):
    """What Qwen2VLProcessor would return, built by hand (its class needs torchvision here)."""
    from transformers import AutoImageProcessor, AutoTokenizer

    images = AutoImageProcessor.from_pretrained(model_dir)(images=[s.image for s in samples], return_tensors="pt")
    tok = AutoTokenizer.from_pretrained(model_dir)
    rows = []
    for s, grid in zip(samples, images["image_grid_thw"]):
        pads = "<|image_pad|>" * int(grid.prod() // images_merge(images))
        rows.append(tok(f"<|im_start|>user\n<|vision_start|>{pads}<|vision_end|>{s.question}<|im_end|>\n"
                        "<|im_start|>assistant\n", add_special_tokens=False)["input_ids"])
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), tok.pad_token_id)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), 1
    image_pad = tok.convert_tokens_to_ids("<|image_pad|>")
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": images["pixel_values"],
            "image_grid_thw": images["image_grid_thw"], "mm_token_type_ids": (ids == image_pad).long()}


def images_merge(_images) -> int:
    return 4  # the 2 x 2 spatial merge of the tiny Qwen2-VL image processor


def _image_text_batch(family, model_dir, processor, samples):
    from efficientllava.prune_engine.data.vqa import collate_vqa

    if not processor_needs_torchvision(family):
        batch = collate_vqa(processor, samples)
        return {k: v for k, v in batch.items() if k != "labels"}
    if family in ("qwen2_vl", "qwen2_5_vl"):
        return _qwen2_vl_batch(model_dir, samples)
    return None


def test_block_inputs_reproduce_the_models_own_hidden_states(family_dir):
    """Block 0's captured inputs run block by block give the model's own last hidden states
    (image-text batches; per-layer masks for Gemma 3's sliding-window layers)."""
    from efficientllava.prune_engine.models.loading import load_model

    family, model_dir = family_dir
    adapter, processor = load_model(str(model_dir))
    assert adapter.family.model_type == family and adapter.is_multimodal
    batch = _image_text_batch(family, model_dir, processor, _samples())
    if batch is None:  # LLaVA-OneVision without its processor: a text batch
        batch = {"input_ids": torch.tensor([processor("a red circle, then a blue square")["input_ids"]])}
    x = adapter.block_inputs(batch)
    h = x.hidden
    for i in range(adapter.num_blocks):
        h = adapter.run_block(i, h, x.kwargs)
    with torch.no_grad():
        own = adapter.model.model(**batch, use_cache=False).last_hidden_state
    torch.testing.assert_close(adapter.decoder.norm(h), own, rtol=1e-5, atol=1e-5)
    if family == "gemma3":  # sliding-window and full-attention layers were given different inputs
        per_block = x.kwargs["per_block_kwargs"]
        assert per_block[0]["attention_mask"] is not per_block[1]["attention_mask"]
        assert not torch.equal(per_block[0]["attention_mask"], per_block[1]["attention_mask"])


def _decoder_linear_names(model) -> set[str]:
    from efficientllava.prune_engine.models.adapter import ModelAdapter

    adapter = ModelAdapter(model)
    return {f"{adapter.family.decoder}.layers.{i}.{n}.weight" for i in range(adapter.num_blocks)
            for n in adapter.linears(i)}


def check_pruned_checkpoint(family, dense_dir, out):
    """Loads with AutoModelForImageTextToText; only the LM's decoder linears changed, to the target sparsity;
    generates from an image and a question."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    dense = AutoModelForImageTextToText.from_pretrained(dense_dir)
    pruned = AutoModelForImageTextToText.from_pretrained(out)
    linears = _decoder_linear_names(pruned)
    dense_sd, pruned_sd = dense.state_dict(), pruned.state_dict()
    assert dense_sd.keys() == pruned_sd.keys()
    for name in dense_sd:
        if name not in linears:
            assert torch.equal(dense_sd[name], pruned_sd[name]), f"{name} changed"
    zeros = sum(int((pruned_sd[n] == 0).sum()) for n in linears)
    total = sum(pruned_sd[n].numel() for n in linears)
    assert abs(zeros / total - PRUNED) <= 0.01
    sample = _samples(1)
    if processor_needs_torchvision(family):
        batch = _image_text_batch(family, out, None, sample)
        if batch is None:
            pytest.skip(f"{family}: transformers cannot build its processor without torchvision")
    else:
        processor = AutoProcessor.from_pretrained(out)
        prompt = processor.apply_chat_template([{"role": "user", "content": [
            {"type": "image"}, {"type": "text", "text": sample[0].question}]}], add_generation_prompt=True)
        batch = dict(processor(text=[prompt], images=[[sample[0].image]], add_special_tokens=False,
                               return_tensors="pt"))
    with torch.no_grad():
        generated = pruned.generate(**batch, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] == batch["input_ids"].shape[1] + 4


def test_prune_text_calibration_load_back_and_generate(family_dir, tmp_path):
    family, model_dir = family_dir
    out = tmp_path / "pruned"
    code, output = run("prune", "--model", model_dir, "--out", out, "--sparsity", PRUNED, "--nsamples", 4,
                       "--seqlen", 32)
    assert code == 0, output
    assert json.loads((out / "policy.json").read_text())["mean_sparsity"] == pytest.approx(PRUNED, abs=1e-3)
    check_pruned_checkpoint(family, model_dir, out)


def test_prune_image_text_calibration_load_back_and_generate(family_dir, tmp_path):
    family, model_dir = family_dir
    out = tmp_path / "pruned"
    code, output = run("prune", "--model", model_dir, "--out", out, "--sparsity", PRUNED, "--nsamples", 4,
                       "--seqlen", 32, "--mm-calib", "easy-vqa:train", "--mm-samples", 4)
    if processor_needs_torchvision(family):  # said in one line, nothing written
        lines = output.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "torchvision" in lines[0], output
        assert not out.exists()
        return
    assert code == 0, output
    assert "4 sequences" in output or "8 sequences" in output, output
    check_pruned_checkpoint(family, model_dir, out)


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray cluster for the searches of every family (each search joins it)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="efficientllava")
    yield
    ray.shutdown()


@pytest.mark.ray
def test_search_with_projector_step_and_load_back(family_dir, tmp_path, local_ray):
    family, model_dir = family_dir
    if processor_needs_torchvision(family):
        pytest.skip(f"{family}: transformers cannot build its processor without torchvision")
    from transformers import AutoModelForImageTextToText

    from efficientllava.prune_engine.models.adapter import ModelAdapter

    out = tmp_path / "run"
    code, output = run("search", "--model", model_dir, "--out", out, "--population", 3, "--generations", 2,
                       "--set", "search.elites=1", "--set", "search.projector_guard=false",  # the step itself, kept
                       "--nsamples", 4, "--seqlen", 32, "--mm-calib", "easy-vqa:train",
                       "--mm-samples", 4, "--actors", 1, "--preset", "none", "--projector-lr", 0.01, "--no-progress")
    assert code == 0, output
    dense = AutoModelForImageTextToText.from_pretrained(model_dir)
    pruned = AutoModelForImageTextToText.from_pretrained(out / "model")
    projector, dense_projector = ModelAdapter(pruned).projector, ModelAdapter(dense).projector
    assert any((p != q).any() for p, q in zip(projector.parameters(), dense_projector.parameters())), \
        "the projector step changed the projector"
    linears = _decoder_linear_names(pruned)
    sd = pruned.state_dict()
    assert abs(sum(int((sd[n] == 0).sum()) for n in linears) / sum(sd[n].numel() for n in linears) - 0.5) <= 0.02


# --- loading errors: one line, exit code 2, nothing written ---------------------------------
@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    return make_tiny_family("llava", tmp_path_factory.mktemp("families") / "llava")


def _one_line_error(args, out, *needles):
    code, output = run("prune", *args, "--out", out, "--nsamples", 4, "--seqlen", 32)
    lines = output.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), output
    for needle in needles:
        assert needle in lines[0], output
    assert not out.exists() and not list(out.parent.glob(f".{out.name}.tmp*"))


def test_missing_weights_are_an_error_naming_them(llava_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(llava_dir, broken)
    weights = load_file(broken / "model.safetensors")
    name = next(k for k in weights if "layers.1.mlp.down_proj" in k)
    del weights[name]
    weights["model.extra_head.weight"] = torch.zeros(2, 2)
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    _one_line_error(["--model", broken], tmp_path / "out", "1 missing", "layers.1.mlp.down_proj", "1 unexpected",
                    "extra_head")


def test_original_llava_layout_names_the_conversion_script(tmp_path):
    from safetensors.torch import save_file

    original = tmp_path / "llava-v1.5-liuhaotian"
    original.mkdir()
    (original / "config.json").write_text(json.dumps({
        "architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava", "hidden_size": 64,
        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 128, "vocab_size": 100,
        "mm_vision_tower": "openai/clip-vit-large-patch14-336", "mm_projector_type": "mlp2x_gelu",
        "mm_hidden_size": 1024}))
    save_file({"model.layers.0.self_attn.q_proj.weight": torch.zeros(64, 64),
               "model.mm_projector.0.weight": torch.zeros(64, 1024)}, original / "model.safetensors")
    _one_line_error(["--model", original], tmp_path / "out", "original-format LLaVA", "convert_llava_weights_to_hf.py")


def test_unsupported_family_lists_the_supported_ones(llava_dir, tmp_path):
    other = tmp_path / "paligemma"
    shutil.copytree(llava_dir, other)
    config = json.loads((other / "config.json").read_text())
    config.update(model_type="paligemma", architectures=["PaliGemmaForConditionalGeneration"])
    (other / "config.json").write_text(json.dumps(config))
    _one_line_error(["--model", other], tmp_path / "out", "paligemma", "supported:", "LLaVA-NeXT (llava_next)",
                    "Qwen2-VL (qwen2_vl)", "Gemma 3 (gemma3)")


def test_no_image_processor_prunes_on_text_and_says_what_image_text_needs(llava_dir, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(llava_dir, bare)
    (bare / "processor_config.json").unlink()
    _one_line_error(["--model", bare, "--mm-calib", "easy-vqa:train", "--mm-samples", 4], tmp_path / "mm",
                    "no image processor", "preprocessor_config.json")
    out = tmp_path / "text"
    code, output = run("prune", "--model", bare, "--out", out, "--nsamples", 4, "--seqlen", 32)
    assert code == 0, output
    from transformers import AutoModelForImageTextToText

    pruned = AutoModelForImageTextToText.from_pretrained(out)
    linears = _decoder_linear_names(pruned)
    sd = pruned.state_dict()
    assert abs(sum(int((sd[n] == 0).sum()) for n in linears) / sum(sd[n].numel() for n in linears) - 0.5) <= 0.01
    code, output = run("search", "--model", bare, "--out", tmp_path / "run", "--mm-calib", "easy-vqa:train")
    assert code == 2 and "no image processor" in output and len(output.strip().splitlines()) == 1, output
    assert not (tmp_path / "run").exists()


def test_choice_scores_with_the_cached_prompt_equal_whole_sequences(family_dir):
    """eval vqa: the fast path (prompt once, cached) scores the choices as whole (prompt + choice) forwards do."""
    family, model_dir = family_dir
    if processor_needs_torchvision(family):
        pytest.skip(f"{family}: transformers cannot build its processor without torchvision")
    from efficientllava.prune_engine.evaluation.vqa import choice_logliks, whole_sequence_logliks
    from efficientllava.prune_engine.models.loading import load_model

    adapter, processor = load_model(str(model_dir))
    samples = _samples(2)
    fast, whole = choice_logliks(adapter.model, processor, samples), whole_sequence_logliks(adapter.model, processor,
                                                                                            samples)
    assert len(fast) == 2 and len(fast[0]) == len(samples[0].choices)
    torch.testing.assert_close(torch.tensor(fast), torch.tensor(whole), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_scores_and_projector_gradient(family_dir, dtype):
    """engine.dtype in half precision on every family: a database-mode candidate score and the projector
    gradient (loss-scaled in float16) are finite, and the gradient did not underflow to zero."""
    import numpy as np

    from efficientllava.prune_engine.config import DataConfig, EngineConfig
    from efficientllava.prune_engine.scoring import CandidateScorer

    family, model_dir = family_dir
    if processor_needs_torchvision(family):
        pytest.skip(f"{family}: transformers cannot build its processor without torchvision")
    engine = EngineConfig(model=str(model_dir), mode="database", dtype=dtype, monitor_samples=2, projector_batch=2)
    scorer = CandidateScorer(engine, DataConfig(nsamples=4, seqlen=32, mm_calib="easy-vqa:train", mm_samples=6),
                             [PRUNED])
    assert scorer.pruner.dtype == getattr(torch, dtype)
    ratios = np.full(scorer.adapter.num_blocks, PRUNED)
    score = scorer.evaluate(ratios)
    assert np.isfinite([score.l_text, score.l_mm]).all()
    value, grads = scorer.projector_gradient(ratios, 0)
    assert np.isfinite(value) and any(np.abs(g).max() > 0 for g in grads)
