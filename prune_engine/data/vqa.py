"""Image-text samples (image, question, answer) for LLaVA calibration, projector steps and evaluation."""
from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image


@dataclass(frozen=True)
class VQASample:
    """One image-question-answer record.

    ``choices`` is the closed answer set used for constrained-choice evaluation (empty for
    open-ended benchmarks); ``category`` feeds per-category breakdowns (paper Table 3).
    """

    image: Image.Image | None
    question: str
    answer: str
    choices: tuple[str, ...] = ()
    category: str = ""
    id: str = ""
    context: str = ""  # extra text context (e.g. ScienceQA hint); empty when none
    meta: dict = field(default_factory=dict, compare=False, hash=False)
