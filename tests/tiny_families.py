"""Tiny random checkpoints + processors of every supported VLM family (SmolLM2 tokenizer), saved with save_pretrained."""
from __future__ import annotations

from pathlib import Path

import torch

# a tiny language model shared by the families (head_dim 32; M-RoPE sections sum to head_dim / 2)
TEXT = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, head_dim=32, max_position_embeddings=512, rms_norm_eps=1e-5)
CLIP_VISION = dict(image_size=32, patch_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                   num_attention_heads=2)
SIGLIP_VISION = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                     num_attention_heads=2)


def chatml_template(image: str) -> str:
    """A ChatML chat template (SmolLM2's turns) where an image content item becomes `image`."""
    return ("{%- for message in messages -%}"
            "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
            "{%- if message['content'] is string -%}{{- message['content'] -}}"
            "{%- else -%}{%- for item in message['content'] -%}"
            "{%- if item['type'] == 'image' -%}{{- '" + image + "' -}}"
            "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}{%- endif -%}"
            "{%- endfor -%}{%- endif -%}"
            "{{- '<|im_end|>\\n' -}}"
            "{%- endfor -%}"
            "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}")


def smollm2_tokenizer(special: list[str] = (), named: dict[str, str] | None = None):
    """The real SmolLM2 tokenizer with the family's image tokens added as special tokens
    (`named`: tokens the processor reads as tokenizer attributes, e.g. image_token)."""
    from transformers import AutoTokenizer

    from efficientllava.prune_engine.models.embedded import embedded_smollm2_dir

    named = dict(named or {})
    tok = AutoTokenizer.from_pretrained(embedded_smollm2_dir(), extra_special_tokens=named)
    new = [t for t in [*special, *named.values()] if t not in tok.get_vocab()]
    if new:
        tok.add_special_tokens({"additional_special_tokens": new}, replace_extra_special_tokens=False)
    return tok


class ProcessorParts:
    """A processor's parts saved as its files, for processors transformers cannot build here
    (those with a video processor need torchvision): image processor, tokenizer, chat template."""

    def __init__(self, cls, image_processor, tokenizer, chat_template: str, **kwargs):
        self.cls, self.image_processor, self.tokenizer = cls, image_processor, tokenizer
        self.chat_template, self.kwargs = chat_template, kwargs

    def save_pretrained(self, out) -> None:
        import json

        self.tokenizer.save_pretrained(out)
        self.image_processor.save_pretrained(out)  # preprocessor_config.json
        (Path(out) / "chat_template.jinja").write_text(self.chat_template)
        (Path(out) / "processor_config.json").write_text(json.dumps({"processor_class": self.cls.__name__,
                                                                     **self.kwargs}, indent=2))


def build_processor(cls, image_processor, tokenizer, chat_template: str, **kwargs):
    """`cls(...)`, or its ProcessorParts when transformers cannot build it without torchvision."""
    import importlib.util

    try:
        return cls(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template, **kwargs)
    except (AttributeError, ValueError):
        if importlib.util.find_spec("torchvision") is not None:
            raise
        return ProcessorParts(cls, image_processor, tokenizer, chat_template, **kwargs)


def processor_needs_torchvision(family: str) -> bool:
    """True when this family's processor cannot be built here (transformers without torchvision)."""
    import importlib.util

    return family in ("llava_onevision", "qwen2_vl", "qwen2_5_vl") and importlib.util.find_spec("torchvision") is None


def _token_ids(tok) -> dict:
    return dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id)


def _structured(model, seed: int) -> None:
    """Scale the columns of every matrix by random factors, so that pruning has work to do."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(torch.exp(torch.randn(p.shape[1], generator=gen) * 0.5))


def _llama_text(tok):
    from transformers import LlamaConfig

    return LlamaConfig(**_token_ids(tok), tie_word_embeddings=True, **TEXT)


# --- one builder per family: (config, processor) --------------------------------------------
def _llava(tok):
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, LlavaConfig, LlavaProcessor

    size = CLIP_VISION["image_size"]
    config = LlavaConfig(vision_config=CLIPVisionConfig(**CLIP_VISION), text_config=_llama_text(tok),
                         image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
                         vision_feature_select_strategy="default", tie_word_embeddings=True)
    images = CLIPImageProcessorPil(size={"height": size, "width": size}, crop_size={"height": size, "width": size},
                                do_center_crop=False)
    processor = LlavaProcessor(image_processor=images, tokenizer=tok, patch_size=CLIP_VISION["patch_size"],
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=chatml_template("<image>\\n"))
    return config, processor


def _llava_next(tok):
    from transformers import CLIPVisionConfig, LlavaNextConfig, LlavaNextImageProcessorPil, LlavaNextProcessor

    size = CLIP_VISION["image_size"]
    grid = [[size, size], [size, 2 * size], [2 * size, size], [2 * size, 2 * size]]
    config = LlavaNextConfig(vision_config=CLIPVisionConfig(**CLIP_VISION), text_config=_llama_text(tok),
                             image_token_id=tok.convert_tokens_to_ids("<image>"), image_grid_pinpoints=grid,
                             vision_feature_layer=-1, vision_feature_select_strategy="default",
                             tie_word_embeddings=True)
    images = LlavaNextImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                     image_grid_pinpoints=grid)
    processor = LlavaNextProcessor(image_processor=images, tokenizer=tok, patch_size=CLIP_VISION["patch_size"],
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                   chat_template=chatml_template("<image>\\n"))
    return config, processor


def _llava_onevision(tok):
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionImageProcessorPil, LlavaOnevisionProcessor,
                              Qwen2Config, SiglipVisionConfig)

    size = SIGLIP_VISION["image_size"]
    grid = [[size, size], [size, 2 * size], [2 * size, size], [2 * size, 2 * size]]
    text = Qwen2Config(**_token_ids(tok), tie_word_embeddings=True, **TEXT)
    config = LlavaOnevisionConfig(vision_config=SiglipVisionConfig(**SIGLIP_VISION), text_config=text,
                                  image_token_id=tok.convert_tokens_to_ids("<image>"),
                                  video_token_id=tok.convert_tokens_to_ids("<video>"), image_grid_pinpoints=grid,
                                  vision_feature_layer=-1, vision_feature_select_strategy="full",
                                  vision_aspect_ratio="anyres_max_9", tie_word_embeddings=True)
    images = LlavaOnevisionImageProcessorPil(size={"height": size, "width": size}, image_grid_pinpoints=grid)
    processor = build_processor(LlavaOnevisionProcessor, images, tok, chatml_template("<image>\\n"),
                                num_image_tokens=(size // SIGLIP_VISION["patch_size"]) ** 2,
                                vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9")
    return config, processor


def _qwen2_vl_ids(tok) -> dict:
    return dict(image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
                video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
                vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
                vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"))


def _qwen2_vl_images():
    from transformers import Qwen2VLImageProcessorPil

    # 64 px images -> 56 x 56 -> a 4 x 4 grid of 14 px patches -> 4 tokens after the 2 x 2 merge
    return Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=56 * 56, patch_size=14, merge_size=2)


def _qwen2_vl(tok):
    from transformers import Qwen2VLConfig, Qwen2VLProcessor

    text = dict(**_token_ids(tok), **TEXT, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                           "mrope_section": [4, 6, 6]})
    vision = dict(depth=1, embed_dim=32, hidden_size=TEXT["hidden_size"], mlp_ratio=2, num_heads=2, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2)
    config = Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **_qwen2_vl_ids(tok))
    processor = build_processor(Qwen2VLProcessor, _qwen2_vl_images(), tok,
                                chatml_template("<|vision_start|><|image_pad|><|vision_end|>"))
    return config, processor


def _qwen2_5_vl(tok):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLProcessor

    text = dict(**_token_ids(tok), **TEXT, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                           "mrope_section": [4, 6, 6]})
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=TEXT["hidden_size"],
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                  fullatt_block_indexes=[1])
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True,
                              **_qwen2_vl_ids(tok))
    processor = build_processor(Qwen2_5_VLProcessor, _qwen2_vl_images(), tok,
                                chatml_template("<|vision_start|><|image_pad|><|vision_end|>"))
    return config, processor


def _idefics3(tok):
    from transformers import Idefics3Config, Idefics3ImageProcessorPil, Idefics3Processor, Idefics3VisionConfig

    size, patch, scale = 32, 8, 2
    config = Idefics3Config(vision_config=Idefics3VisionConfig(**{**SIGLIP_VISION, "image_size": size,
                                                                  "patch_size": patch}),
                            text_config=_llama_text(tok), scale_factor=scale,
                            image_token_id=tok.convert_tokens_to_ids("<image>"), tie_word_embeddings=True)
    images = Idefics3ImageProcessorPil(size={"longest_edge": size}, max_image_size={"longest_edge": size},
                                    do_image_splitting=False)
    processor = Idefics3Processor(image_processor=images, tokenizer=tok,
                                  image_seq_len=(size // patch) ** 2 // scale ** 2,
                                  chat_template=chatml_template("<image>"))
    return config, processor


def _gemma3(tok):
    from transformers import Gemma3Config, Gemma3ImageProcessorPil, Gemma3Processor, Gemma3TextConfig, SiglipVisionConfig

    # sliding-window layers (window 8) and full layers alternate: their masks differ per layer
    text = Gemma3TextConfig(**_token_ids(tok), **TEXT, query_pre_attn_scalar=32, sliding_window=8,
                            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                            tie_word_embeddings=True)
    size = SIGLIP_VISION["image_size"]
    config = Gemma3Config(text_config=text, vision_config=SiglipVisionConfig(**SIGLIP_VISION), mm_tokens_per_image=4,
                          boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
                          eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"),
                          image_token_index=tok.convert_tokens_to_ids("<image_soft_token>"), tie_word_embeddings=True)
    images = Gemma3ImageProcessorPil(size={"height": size, "width": size})
    processor = Gemma3Processor(image_processor=images, tokenizer=tok, image_seq_length=4,
                                chat_template=chatml_template("<start_of_image>"))
    return config, processor


# family -> (builder, tokens the tokenizer needs, tokens it exposes as attributes)
FAMILIES = {
    "llava": (_llava, ["<image>"], {}),
    "llava_next": (_llava_next, ["<image>"], {}),
    "llava_onevision": (_llava_onevision, ["<image>", "<video>"], {}),
    "qwen2_vl": (_qwen2_vl, ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"], {}),
    "qwen2_5_vl": (_qwen2_5_vl, ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"], {}),
    "idefics3": (_idefics3, ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"], {}),
    "gemma3": (_gemma3, [], {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                             "image_token": "<image_soft_token>"}),
}


def make_tiny_family(family: str, out: Path, seed: int = 0) -> Path:
    """A tiny random checkpoint of `family` with its processor, saved into `out`."""
    from transformers import AutoModelForImageTextToText

    build, special, named = FAMILIES[family]
    tok = smollm2_tokenizer(special, named)
    config, processor = build(tok)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    _structured(model, seed)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return Path(out)
