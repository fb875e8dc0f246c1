"""Qwen2-VL (Qwen2VLForConditionalGeneration): the patch merger of the vision transformer is the projector; M-RoPE positions."""
from efficientllava.prune_engine.models.families.base import Family

FAMILY = Family("qwen2_vl", "Qwen2-VL", decoder="model.language_model", vision="model.visual",
                projector="model.visual.merger", cached_choice_scoring=False)
