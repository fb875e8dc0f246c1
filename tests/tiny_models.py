"""Tiny random LLaMA / LLaVA checkpoints saved with save_pretrained (use the real SmolLM2 tokenizer)."""
from __future__ import annotations

from pathlib import Path

import torch

TINY_LLAMA = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=32, max_position_embeddings=512, rms_norm_eps=1e-5,
                  tie_word_embeddings=True)
TINY_VISION = dict(image_size=32, patch_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                   num_attention_heads=2)


def make_tiny_llama(out: Path, seed: int = 0) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from efficientllava.prune_engine.models.embedded import embedded_smollm2_dir

    tok = AutoTokenizer.from_pretrained(embedded_smollm2_dir())
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, **TINY_LLAMA)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # give the weights some structure so pruning has work to do
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(torch.exp(torch.randn(p.shape[1]) * 0.5))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def make_tiny_llava(out: Path, llama_dir: Path, seed: int = 0) -> Path:
    from transformers import LlamaForCausalLM, LlavaForConditionalGeneration

    from efficientllava.prune_engine.models.smol_llava import build_processor, demo_config

    torch.manual_seed(seed)
    config = demo_config(arch=TINY_VISION, lm_dir=llama_dir)
    model = LlavaForConditionalGeneration(config)
    lm = LlamaForCausalLM.from_pretrained(llama_dir)
    model.model.language_model.load_state_dict(lm.model.state_dict())
    model.lm_head.load_state_dict(lm.lm_head.state_dict())
    model.save_pretrained(out)
    build_processor(arch=TINY_VISION, lm_dir=llama_dir).save_pretrained(out)
    return out


def saved_llava_parts(model_dir: Path) -> tuple[dict, dict]:
    """(projector tensors by the projector's own names, language-model linear weights by full name) of a LLaVA
    saved with save_pretrained or our export."""
    from safetensors.torch import load_file

    weights = load_file(str(Path(model_dir) / "model.safetensors"))
    marker = "multi_modal_projector."
    projector = {k.split(marker, 1)[1]: v for k, v in weights.items() if marker in k}
    lm = {k: v for k, v in weights.items() if "language_model." in k and ".layers." in k and k.endswith("proj.weight")}
    return projector, lm


def perturbed_projector(dense: dict, seed: int = 0) -> dict:
    """A projector state far enough from `dense` to change the image-text activations (a stand-in evolved one)."""
    g = torch.Generator().manual_seed(seed)
    return {k: v + 0.5 * max(float(v.std()), 0.05) * torch.randn(v.shape, generator=g) for k, v in dense.items()}


def projector_experiment(tiny_llava_dir: Path):
    """What a test of a projector-dependent prune of the tiny LLaVA needs: its engine (cross-entropy loss), a small
    calibration set with image-text samples, its dense projector and a perturbed (stand-in evolved) one."""
    from efficientllava.prune_engine.config import DataConfig, EngineConfig

    engine = EngineConfig(model=str(tiny_llava_dir), loss="ce")
    data = DataConfig(nsamples=4, seqlen=32, mm_calib="easy-vqa:train", mm_samples=4)
    dense, _ = saved_llava_parts(tiny_llava_dir)
    return engine, data, dense, perturbed_projector(dense)
