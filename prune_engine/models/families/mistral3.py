"""Mistral 3 (Mistral3ForConditionalGeneration): Pixtral tower, patch-merging projector, Mistral LM."""
from efficientllava.prune_engine.models.families.base import Family

FAMILY = Family("mistral3", "Mistral 3", decoder="model.language_model", vision="model.vision_tower",
                projector="model.multi_modal_projector")
