"""LLaVA-NeXT (LlavaNextForConditionalGeneration): any-resolution tiles (image_sizes), MLP projector."""
from efficientllava.prune_engine.models.families.base import Family

FAMILY = Family("llava_next", "LLaVA-NeXT", decoder="model.language_model", vision="model.vision_tower",
                projector="model.multi_modal_projector")
