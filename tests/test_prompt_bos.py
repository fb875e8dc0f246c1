"""Image-text prompts begin as each registered family's documented prompt format begins: the tokenizer's BOS when the family's sequences start with one (written by the chat template or added by the tokenizer), exactly once."""
import pytest

from tiny_families import smollm2_tokenizer

QUESTION = "What is shown?"
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'][-1]['text'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
#: family -> (BOS token, the tokenizer adds it, chat template (the family's turn format, text only), the documented
#: prompt of QUESTION with its special tokens written out). LLaVA-1.5 (Vicuna) and LLaVA-NeXT (Mistral/Vicuna):
#: LLaMA tokenizers add <s>, their HF templates do not write it; Gemma 3, Mistral 3 and Idefics3 (Llama 3) templates
#: write it; Qwen2 tokenizers (Qwen2-VL, Qwen2.5-VL, LLaVA-OneVision) have none.
DOCUMENTED = {
    "llava": ("<s>", True, "{% for m in messages %}{{ m['role'].upper() }}: {{ m['content'][-1]['text'] }} "
              "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}",
              f"<s>USER: {QUESTION} ASSISTANT:"),
    "llava_next": ("<s>", True, "{% for m in messages %}[INST] {{ m['content'][-1]['text'] }} [/INST]{% endfor %}",
                   f"<s>[INST] {QUESTION} [/INST]"),
    "mistral3": ("<s>", True, "{{- bos_token }}{% for m in messages %}[INST]{{ m['content'][-1]['text'] }}[/INST]"
                 "{% endfor %}", f"<s>[INST]{QUESTION}[/INST]"),
    "gemma3": ("<bos>", True, "{{ bos_token }}{% for m in messages %}<start_of_turn>user\n{{ m['content'][-1]['text'] }}"
               "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}",
               f"<bos><start_of_turn>user\n{QUESTION}<end_of_turn>\n<start_of_turn>model\n"),
    "idefics3": ("<|begin_of_text|>", True, "<|begin_of_text|>{% for m in messages %}User:{{ m['content'][-1]['text'] }}"
                 "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}",
                 f"<|begin_of_text|>User:{QUESTION}<end_of_utterance>\nAssistant:"),
    "qwen2_vl": (None, False, CHATML, f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"),
    "qwen2_5_vl": (None, False, CHATML, f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"),
    "llava_onevision": (None, False, CHATML, f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"),
}


def family_tokenizer(bos: str | None, adds: bool, template: str, special=()):
    """SmolLM2's tokenizer made to begin sequences as the family's does: `bos` as its BOS token, added to every
    sequence (a post-processor, as LLaMA tokenizers do) when `adds`."""
    from tokenizers.processors import TemplateProcessing

    tok = smollm2_tokenizer([*special, *([bos] if bos else [])])
    if bos:
        tok.bos_token = bos
    if adds:
        bos_id = tok.convert_tokens_to_ids(bos)
        tok.backend_tokenizer.post_processor = TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                                  special_tokens=[(bos, bos_id)])
    tok.chat_template = template
    return tok


def test_every_registered_family_declares_how_its_prompts_begin():
    from efficientllava.prune_engine.models.families import FAMILIES

    assert set(DOCUMENTED) == set(FAMILIES)


@pytest.mark.parametrize("family", sorted(DOCUMENTED))
def test_prompt_ids_are_the_documented_format(family):
    from efficientllava.prune_engine.data.vqa import VQASample, encode_prompts

    bos, adds, template, documented = DOCUMENTED[family]
    tok = family_tokenizer(bos, adds, template, ["<start_of_turn>", "<end_of_turn>", "<end_of_utterance>"])
    ids, _ = encode_prompts(tok, [VQASample(image=None, question=QUESTION, answer="a")])
    assert ids[0] == tok(documented, add_special_tokens=False)["input_ids"]
    if bos:
        assert ids[0].count(tok.bos_token_id) == (1 if adds or documented.startswith(bos) else 0)


def test_llava15_image_prompt_is_the_processors_documented_call():
    """LLaVA-1.5 with an image: the ids the engine builds equal the model card's usage, the processor called on
    ``USER: <image>\\n... ASSISTANT:`` with its default tokenisation (which puts Vicuna's <s> first)."""
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    from efficientllava.prune_engine.data.vqa import encode_prompts, load_easy_vqa
    from tiny_families import CLIP_VISION

    template = ("{% for m in messages %}{{ m['role'].upper() }}: {% for c in m['content'] %}{% if c['type'] == "
                "'image' %}<image>\n{% else %}{{ c['text'] }} {% endif %}{% endfor %}{% endfor %}"
                "{% if add_generation_prompt %}ASSISTANT:{% endif %}")
    tok = family_tokenizer("<s>", True, template, ["<image>"])
    size = CLIP_VISION["image_size"]
    images = CLIPImageProcessorPil(size={"height": size, "width": size}, crop_size={"height": size, "width": size},
                                   do_center_crop=False)
    processor = LlavaProcessor(image_processor=images, tokenizer=tok, patch_size=CLIP_VISION["patch_size"],
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=template)
    samples = load_easy_vqa("train", limit=2, seed=0)
    ids, _ = encode_prompts(processor, samples)
    documented = processor(text=[f"USER: <image>\n{s.question} ASSISTANT:" for s in samples],
                           images=[[s.image] for s in samples])["input_ids"]
    assert ids == [list(row) for row in documented]
    assert all(row[0] == tok.bos_token_id and row[1] != tok.bos_token_id for row in ids)
