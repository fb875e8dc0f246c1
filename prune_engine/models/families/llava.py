"""LLaVA (LlavaForConditionalGeneration): CLIP tower, MLP projector, any decoder-only LM."""
from efficientllava.prune_engine.models.families.base import Family

FAMILY = Family("llava", "LLaVA", decoder="model.language_model", vision="model.vision_tower",
                projector="model.multi_modal_projector")
