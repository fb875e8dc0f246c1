"""Idefics3 / SmolVLM (Idefics3ForConditionalGeneration): SigLIP-style tower, pixel-shuffle connector, LLaMA LM at .text_model."""
from efficientllava.prune_engine.models.families.base import Family

FAMILY = Family("idefics3", "Idefics3 (SmolVLM)", decoder="model.text_model", vision="model.vision_model",
                projector="model.connector")
