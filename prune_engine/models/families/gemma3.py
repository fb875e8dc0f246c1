"""Gemma 3 (Gemma3ForConditionalGeneration): SigLIP tower, pooling projector; sliding-window and full layers get different masks."""
from efficientllava.prune_engine.models.families.base import Family

FAMILY = Family("gemma3", "Gemma 3", decoder="model.language_model", vision="model.vision_tower",
                projector="model.multi_modal_projector")
