"""LLaVA-OneVision (LlavaOnevisionForConditionalGeneration): SigLIP tower, any-resolution tiles, Qwen2 LM."""
from efficientllava.prune_engine.models.families.base import Family

FAMILY = Family("llava_onevision", "LLaVA-OneVision", decoder="model.language_model", vision="model.vision_tower",
                projector="model.multi_modal_projector")
