"""smol-llava assembly: tiny random LLaVA round trips (fast) and the committed asset (real_model)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from efficientllava.prune_engine.models import smol_llava as demo_model
from efficientllava.prune_engine.data.vqa import collate_vqa, load_easy_vqa, load_fashion_mnist

TINY_ARCH = {"image_size": 32, "patch_size": 16, "hidden_size": 32, "intermediate_size": 64,
             "num_hidden_layers": 2, "num_attention_heads": 2}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def make_tiny_lm(path: Path, tokenizer_dir: Path) -> Path:
    """A tiny random LLaMA with SmolLM2's vocabulary and tokenizer, saved like a HF checkpoint."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                         bos_token_id=1, eos_token_id=2, pad_token_id=2, max_position_embeddings=256)
    LlamaForCausalLM(config).save_pretrained(path)
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, path / name)
    return path


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    from efficientllava.prune_engine.models.embedded import embedded_smollm2_dir

    return make_tiny_lm(tmp_path_factory.mktemp("tiny_lm"), embedded_smollm2_dir())


@pytest.fixture(scope="module")
def samples():
    return load_easy_vqa("test", limit=3, seed=1) + load_fashion_mnist("test", limit=2, seed=1)


def _logits(model, batch):
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


def test_build_uses_existing_special_token_and_exact_lm(tiny_lm):
    from transformers import AutoModelForCausalLM

    model, processor = demo_model.build_demo_model(None, arch=TINY_ARCH, lm_dir=tiny_lm)
    assert processor.image_token == "<empty_output>"
    assert processor.image_token_id == demo_model.IMAGE_TOKEN_ID == model.config.image_token_id
    assert len(processor.tokenizer) == model.config.text_config.vocab_size  # vocabulary untouched
    lm = AutoModelForCausalLM.from_pretrained(tiny_lm)
    ours = model.model.language_model.state_dict()
    for key, value in lm.model.state_dict().items():
        assert torch.equal(ours[key], value), key
    assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
    assert demo_model.num_image_tokens(TINY_ARCH) == 4


def test_weights_round_trip_same_logits(tiny_lm, samples, tmp_path):
    model, processor = demo_model.build_demo_model(None, arch=TINY_ARCH, lm_dir=tiny_lm)
    with torch.no_grad():  # make the tower/projector differ from a fresh initialisation
        for p in model.model.multi_modal_projector.parameters():
            p.add_(0.1)
    path = demo_model.save_weights(model, tmp_path / "w.safetensors", TINY_ARCH)
    tensors, arch = demo_model.read_weights(path)
    assert arch["image_size"] == 32 and arch["patch_size"] == 16
    assert all(k.startswith(demo_model.VISION_PREFIXES) for k in tensors)
    model2, processor2 = demo_model.build_demo_model(path, lm_dir=tiny_lm)
    batch = collate_vqa(processor, samples)
    assert torch.equal(_logits(model, batch), _logits(model2, collate_vqa(processor2, samples)))


def test_demo_model_dir_loads_offline_with_auto_classes(tiny_lm, samples, tmp_path, monkeypatch):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model, processor = demo_model.build_demo_model(None, arch=TINY_ARCH, lm_dir=tiny_lm)
    weights = demo_model.save_weights(model, tmp_path / "w.safetensors", TINY_ARCH)
    monkeypatch.setenv("EFFICIENTLLAVA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = demo_model.demo_model_dir(weights, lm_dir=tiny_lm)
    assert out.parent == tmp_path / "cache" and not list(out.parent.glob("*.tmp*"))
    assert demo_model.demo_model_dir(weights, lm_dir=tiny_lm) == out  # cached
    loaded = LlavaForConditionalGeneration.from_pretrained(out).eval()
    loaded_processor = AutoProcessor.from_pretrained(out)
    assert type(loaded_processor.image_processor).__name__ == "CLIPImageProcessorPil"
    batch = collate_vqa(loaded_processor, samples)
    assert torch.equal(batch["input_ids"], collate_vqa(processor, samples)["input_ids"])
    torch.testing.assert_close(_logits(loaded, batch), _logits(model, batch), rtol=0, atol=1e-5)
    assert json.loads((out / "config.json").read_text())["image_token_index"] == demo_model.IMAGE_TOKEN_ID


def test_missing_weights_is_a_clear_error(tmp_path):
    from efficientllava.prune_engine.models.adapter import ModelError

    with pytest.raises(ModelError, match="weights missing"):
        demo_model.demo_model_dir(tmp_path / "nope.safetensors")


@pytest.mark.real_model
def test_committed_asset_assembles_with_the_real_smollm2():
    from transformers import AutoModelForCausalLM

    from efficientllava.prune_engine.models.embedded import embedded_smollm2_dir
    from efficientllava.prune_engine.models.loading import load_model

    if not demo_model.WEIGHTS_FILE.exists():
        pytest.skip("demo-model weights not trained yet")
    assert demo_model.WEIGHTS_FILE.stat().st_size < 50e6
    adapter, processor = load_model("smol-llava")
    model = adapter.model
    lm = AutoModelForCausalLM.from_pretrained(embedded_smollm2_dir())
    tensors, arch = demo_model.read_weights(demo_model.WEIGHTS_FILE)
    ours = model.model.language_model.state_dict()
    for key, value in lm.model.state_dict().items():  # SmolLM2 exactly, plus the merged LoRA deltas if any
        lora = "model.language_model." + key[: -len(".weight")]
        if lora + ".lora_A" in tensors:
            delta = tensors[lora + ".lora_B"].float() @ tensors[lora + ".lora_A"].float()  # fp16 on disk
            value = value + arch["lora_scale"] * delta
            torch.testing.assert_close(ours[key], value, rtol=0, atol=1e-6)
        else:
            assert torch.equal(ours[key], value), key
    from efficientllava.prune_engine.evaluation.vqa import vqa_accuracy

    result = vqa_accuracy(model, processor, load_easy_vqa("test", limit=48, seed=3), batch_size=16, progress=False)
    assert result["accuracy"] >= 0.6


def test_lora_adapters_are_merged_at_build(tiny_lm, tmp_path):
    model, _ = demo_model.build_demo_model(None, arch=TINY_ARCH, lm_dir=tiny_lm)
    base = model.model.language_model.layers[1].self_attn.q_proj.weight.detach().clone()
    key = "model.language_model.layers.1.self_attn.q_proj"
    torch.manual_seed(1)
    lora = {key + ".lora_A": torch.randn(2, 32), key + ".lora_B": torch.randn(32, 2)}
    path = demo_model.save_weights(model, tmp_path / "w.safetensors", {**TINY_ARCH, "lora_scale": 0.5}, lora=lora)
    merged, _ = demo_model.build_demo_model(path, lm_dir=tiny_lm)
    expected = base + 0.5 * lora[key + ".lora_B"] @ lora[key + ".lora_A"]
    torch.testing.assert_close(merged.model.language_model.layers[1].self_attn.q_proj.weight, expected)
    assert torch.equal(merged.model.language_model.layers[0].self_attn.q_proj.weight,
                       model.model.language_model.layers[0].self_attn.q_proj.weight)
    with pytest.raises(ValueError, match="LoRA adapter"):
        demo_model.merge_lora(merged, {key + ".lora_A": torch.randn(2, 31), key + ".lora_B": torch.randn(32, 2)}, 1.0)
