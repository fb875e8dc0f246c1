"""Qwen2.5-VL (Qwen2_5_VLForConditionalGeneration): windowed vision transformer, its patch merger is the projector; M-RoPE."""
from efficientllava.prune_engine.models.families.base import Family

FAMILY = Family("qwen2_5_vl", "Qwen2.5-VL", decoder="model.language_model", vision="model.visual",
                projector="model.visual.merger", cached_choice_scoring=False)
