"""Rephrased questions: the easy-VQA and Fashion-MNIST images asked in wordings their generators never use.

A shifted evaluation set (docs/method.md §6): the proxy samples are worded like the generators'
own templates, so accuracy on the same kind of question cannot tell whether a pruned model (or an
evolved projector) still answers the *question* rather than the template. Each question is parsed
into what it asks (the colour of the shape, which shape, whether a colour / shape is there or not;
Fashion-MNIST: which article) and asked again with a template of the split's own set:

* ``test`` templates only report; ``val`` templates score every choice; ``train`` templates are
  there for augmenting the proxy questions. The three sets share no template (a test checks it),
  so neither the search nor a choice made on validation ever reads the test wording.
* The answer, the choices and the image are kept; which template a question gets is fixed by its
  sample id (CRC-32), not by a run's seed.

Specs: ``easy-vqa-rephrased:SPLIT`` and ``fashion-mnist-rephrased:SPLIT`` (``prune_engine.data.calibration.load_vqa``),
with SPLIT the images' split (``val`` images get ``val`` templates, and so on).
"""
from __future__ import annotations

import dataclasses
import re
import zlib

from efficientllava.prune_engine.data.text import DataError
from efficientllava.prune_engine.data.vqa import EASY_VQA_COLOURS, EASY_VQA_SHAPES, VQASample

#: name of a rephrased set -> the set whose images and answers it asks about
REPHRASED = {"easy-vqa-rephrased": "easy-vqa", "fashion-mnist-rephrased": "fashion-mnist"}

# {obj}: "shape" or the shape's name; {thing}: "object" or "<colour> object"; {x}: "<colour> shape" or a shape
TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "train": {
        "colour": ("Which colour is the {obj}?", "The {obj} is which colour?"),
        "shape": ("Which figure is the {thing}?", "Say which form the {thing} has."),
        "present": ("Is a {x} visible?", "Do you see a {x}?"),
        "absent": ("Is a {x} missing from the image?", "Would a {x} be impossible to find here?"),
        "fashion": ("What item is pictured?", "Which product is this a photo of?"),
    },
    "val": {
        "colour": ("What colour has the {obj} got?", "Tell me the colour of the {obj}."),
        "shape": ("What kind of figure is the {thing}?", "Which form does the {thing} take?"),
        "present": ("Can you see a {x} in the picture?", "Does the picture show a {x}?"),
        "absent": ("Is the picture free of any {x}?", "Is it true that no {x} can be seen?"),
        "fashion": ("Which item of clothing is in this photo?", "What kind of fashion article do you see?"),
    },
    "test": {
        "colour": ("In what colour is the {obj} drawn?", "Name the colour of the {obj} in this picture."),
        "shape": ("Identify the geometric form of the {thing}.", "Looking at the picture, which form is the {thing}?"),
        "present": ("Would you say the image includes a {x}?", "Is a {x} depicted here?"),
        "absent": ("Does the image lack a {x}?", "Is a {x} absent from this image?"),
        "fashion": ("Name the garment or accessory in the picture.", "What does this image depict?"),
    },
}

_WORDS = re.compile(r"[a-z]+")


def easy_vqa_meaning(question: str) -> tuple[str, dict[str, str]]:
    """What an easy-VQA question asks: (kind, slots) with kind colour / shape / present / absent.

    colour: "what color is the circle?" -> ("colour", {"obj": "circle"}); shape: "what is the red
    shape?" -> ("shape", {"thing": "red object"}); yes/no: "is there not a blue shape?" ->
    ("absent", {"x": "blue shape"}), "does the image contain a triangle?" -> ("present", {"x": "triangle"})."""
    words = _WORDS.findall(question.lower())
    colour = next((w for w in words if w in EASY_VQA_COLOURS), None)
    shape = next((w for w in words if w in EASY_VQA_SHAPES), None)
    if words[:1] == ["what"]:
        if "color" in words or "colour" in words:
            return "colour", {"obj": shape or "shape"}
        return "shape", {"thing": f"{colour} object" if colour else "object"}
    if colour is None and shape is None:
        raise DataError(f"easy-vqa question {question!r}: names neither a colour nor a shape")
    negated = "not" in words or "no" in words
    return ("absent" if negated else "present"), {"x": f"{colour} shape" if colour else shape}


def rephrase(sample: VQASample, split: str) -> VQASample:
    """The sample asked with a template of ``split``'s set (same image, answer and choices)."""
    if split not in TEMPLATES:
        raise DataError(f"rephrased questions: unknown split '{split}' (expected one of {', '.join(TEMPLATES)})")
    dataset = sample.meta.get("dataset")
    if dataset == "easy-vqa":
        kind, slots = easy_vqa_meaning(sample.question)
    elif dataset == "fashion-mnist":
        kind, slots = "fashion", {}
    else:
        raise DataError(f"rephrased questions exist for easy-vqa and fashion-mnist, not {dataset!r}")
    options = TEMPLATES[split][kind]
    template = options[zlib.crc32(sample.id.encode()) % len(options)]
    return dataclasses.replace(sample, question=template.format(**slots),
                               meta={**sample.meta, "rephrased": True, "original_question": sample.question})
