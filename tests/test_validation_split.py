"""The validation split and the shifted sets: proxy, validation and test data disjoint; template sets disjoint."""
import itertools
import json
import re

import pytest

from efficientllava.prune_engine.config import DataConfig, HeldoutConfig
from efficientllava.prune_engine.data.calibration import calibration_vqa, check_calibration_data, load_vqa
from efficientllava.prune_engine.data.rephrase import TEMPLATES, easy_vqa_meaning, rephrase
from efficientllava.prune_engine.data.text import DataError, load_text
from efficientllava.prune_engine.data.vqa import (VAL_FRACTION, easy_vqa_dir, held_aside, load_easy_vqa,
                                                  load_fashion_mnist)


def test_held_aside_partitions_by_key():
    keys = [i // 3 for i in range(300)]  # 100 groups (images) of 3 records (questions)
    train, val, test = held_aside(keys, "train"), held_aside(keys, "val"), held_aside(keys, "test")
    assert sorted(train + val) == list(range(300)) and not set(train) & set(val) and test == list(range(300))
    assert {keys[i] for i in val}.isdisjoint({keys[i] for i in train})  # a group never straddles two splits
    assert len({keys[i] for i in val}) == round(100 * VAL_FRACTION)
    assert held_aside(keys, "val") == val  # fixed: not a run's seed


def test_easy_vqa_validation_is_held_aside_from_train_by_image():
    train, val, test = load_easy_vqa("train"), load_easy_vqa("val"), load_easy_vqa("test")
    ids = [{s.id for s in part} for part in (train, val, test)]
    assert all(not a & b for a, b in itertools.combinations(ids, 2))
    train_images, val_images = {s.meta["image_id"] for s in train}, {s.meta["image_id"] for s in val}
    assert not train_images & val_images
    everything = json.loads((easy_vqa_dir() / "train" / "questions.json").read_text())
    assert len(train) + len(val) == len(everything) and len(val) >= 1000
    assert len(val_images) == round(len({r[2] for r in everything}) * VAL_FRACTION)
    assert all(s.id.startswith("easy-vqa/train/") for s in val) and all(s.id.startswith("easy-vqa/test/") for s in test)


def test_fashion_mnist_validation_is_held_aside_from_train():
    val = load_fashion_mnist("val")
    train_ids = {s.id for s in load_fashion_mnist("train", limit=3000, seed=1)}
    assert len(val) == 6000 and not {s.id for s in val} & train_ids
    assert all(s.id.startswith("fashion-mnist/train/") for s in val)


def test_proxy_validation_and_test_are_disjoint_by_sample_and_article():
    """The three parts every number rests on: what the search calibrates on (the default proxy draw, for
    several seeds), what every choice is scored on (validation) and what only reports (test)."""
    data = DataConfig()
    heldout = {split: HeldoutConfig(split=split) for split in ("val", "test")}
    for seed in (0, 1, 2):
        proxy = calibration_vqa("easy-vqa:train,fashion-mnist:train", 64, seed=seed)
        scored = {split: {s.id for spec in h.vqa_sets().values() for s in load_vqa(spec, limit=1000, seed=seed)}
                  for split, h in heldout.items()}
        proxy_ids = {s.id for s in proxy}
        assert not proxy_ids & scored["val"] and not proxy_ids & scored["test"] and not scored["val"] & scored["test"]
    # text: by article; the proxy segments come from wiki:calib only
    articles = {spec: {d.id for d in load_text(spec)} for spec in (data.calib, heldout["val"].text_spec,
                                                                   heldout["test"].text_spec)}
    assert [data.calib, heldout["val"].text_spec, heldout["test"].text_spec] == ["wiki:calib", "wiki:val", "wiki:eval"]
    assert all(not a & b for a, b in itertools.combinations(articles.values(), 2))
    assert heldout["val"].text_sets()["ppl_pydoc"] == "pydoc:val" and heldout["test"].text_sets()["ppl_pydoc"] == "pydoc:test"


def test_calibration_refuses_validation_and_shifted_sets():
    for text, mm in (("wiki:val", None), ("pydoc:val", None), ("wiki:calib", "easy-vqa:val"),
                     ("wiki:calib", "fashion-mnist:val"), ("wiki:calib", "easy-vqa-rephrased:val"),
                     ("wiki:calib", "easy-vqa-rephrased:test")):
        with pytest.raises(DataError, match="force with --allow-eval-split"):
            check_calibration_data(text, mm)
    check_calibration_data("wiki:calib", "easy-vqa-rephrased:train,fashion-mnist:train")  # augmentation: allowed


def test_template_sets_are_disjoint_and_cover_every_question_kind():
    kinds = set(TEMPLATES["test"])
    assert all(set(t) == kinds for t in TEMPLATES.values())
    for a, b in itertools.combinations(TEMPLATES, 2):
        for kind in kinds:
            assert not set(TEMPLATES[a][kind]) & set(TEMPLATES[b][kind]), (a, b, kind)


def test_rephrased_questions_keep_image_answer_and_meaning():
    samples = load_easy_vqa("test", limit=400, seed=3)
    originals = {s.question for s in samples}
    for split in ("val", "test"):
        words = {t.split("{")[0] for kind in TEMPLATES[split].values() for t in kind}
        for s in samples:
            r = rephrase(s, split)
            assert (r.image, r.answer, r.choices, r.id) == (s.image, s.answer, s.choices, s.id)
            assert r.question not in originals and any(r.question.startswith(w) for w in words)
            assert rephrase(s, split) == r  # the template is fixed by the sample, not drawn
    # every template of the generator parses to what it asks
    assert easy_vqa_meaning("what is the color of the circle?") == ("colour", {"obj": "circle"})
    assert easy_vqa_meaning("what is the red shape?") == ("shape", {"thing": "red object"})
    assert easy_vqa_meaning("what shape does the image contain?") == ("shape", {"thing": "object"})
    assert easy_vqa_meaning("is no teal shape present?") == ("absent", {"x": "teal shape"})
    assert easy_vqa_meaning("does the image not contain a triangle?") == ("absent", {"x": "triangle"})
    assert easy_vqa_meaning("is a brown shape present?") == ("present", {"x": "brown shape"})
    # the spec loads the same images with the split's wording; the test wording never reaches validation
    val = load_vqa("easy-vqa-rephrased:val", limit=50, seed=0)
    test_wordings = {t.split("{")[0] for kind in TEMPLATES["test"].values() for t in kind}
    assert [s.id for s in val] == [s.id for s in load_vqa("easy-vqa:val", limit=50, seed=0)]
    assert not any(s.question.startswith(w) for s in val for w in test_wordings)
    fm = load_vqa("fashion-mnist-rephrased:test", limit=20, seed=0)
    assert {s.question for s in fm} <= set(TEMPLATES["test"]["fashion"])


def test_tune_scores_on_validation_only():
    from efficientllava.actors.tune import TuneJob

    with pytest.raises(ValueError, match="validation split"):
        TuneJob(run={}, heldout=HeldoutConfig(split="test"))
    assert TuneJob(run={}).heldout.split == "val"


def test_reports_leave_out_the_test_data_earlier_choices_were_made_on():
    from efficientllava.prune_engine.evaluation.heldout import USED_VQA, heldout_questions, heldout_text

    h = HeldoutConfig(vqa=300)
    for spec in h.vqa_sets().values():
        used = {s.id for s in load_vqa(spec.replace("-rephrased", ""), limit=USED_VQA, seed=0)}
        fresh = heldout_questions(spec, h)
        assert len(fresh) == 300 and not {s.id for s in fresh} & used
        assert [s.id for s in heldout_questions(spec, h)] == [s.id for s in fresh]  # seeded
    assert HeldoutConfig(split="val", vqa=10).vqa_sets()["easy_vqa"] == "easy-vqa:val"
    assert len(heldout_questions("easy-vqa:val", HeldoutConfig(split="val", vqa=10))) == 10

    class Chars:  # a tokenizer with one token per character: windows are easy to locate
        def __call__(self, texts, add_special_tokens=False):
            if isinstance(texts, str):
                return {"input_ids": [ord(c) for c in texts]}
            return {"input_ids": [[ord(c) for c in t] for t in texts]}

    tok = Chars()
    whole = heldout_text(tok, "wiki:eval", HeldoutConfig(exclude_used=False, segments=70, seqlen=256))
    fresh = heldout_text(tok, "wiki:eval", HeldoutConfig(segments=6, seqlen=256))
    assert (fresh == whole[64:]).all()  # the first 64x256 tokens are left out
    assert (heldout_text(tok, "pydoc:test", HeldoutConfig(segments=2, seqlen=256))
            == heldout_text(tok, "pydoc:test", HeldoutConfig(segments=2, seqlen=256, exclude_used=False))).all()


def test_paraphrase_augmentation_rewords_a_share_of_the_proxy_in_train_wordings():
    """data.mm_rephrase: the same draw (images, answers, order), a seeded share of its questions asked with the
    train templates, none with a validation or test wording."""
    spec = "easy-vqa:train,fashion-mnist:train"
    plain = calibration_vqa(spec, 64, seed=2)
    mixed = calibration_vqa(spec, 64, seed=2, rephrase_share=0.5)
    assert [(s.id, s.image, s.answer, s.choices) for s in mixed] == [(s.id, s.image, s.answer, s.choices)
                                                                      for s in plain]
    reworded = [m for m, p in zip(mixed, plain) if m.question != p.question]
    assert len(reworded) == 32 and all(m.meta.get("rephrased") for m in reworded)
    assert {m.meta["dataset"] for m in reworded} == {"easy-vqa", "fashion-mnist"}
    assert all(m == rephrase(p, "train") for m, p in zip(mixed, plain) if m.question != p.question)
    def pattern(template):  # a template with its slots as wildcards
        return re.compile("".join(".+" if i % 2 else re.escape(part)
                                  for i, part in enumerate(re.split(r"\{(\w+)\}", template))))

    held_out = [pattern(t) for split in ("val", "test") for kind in TEMPLATES[split].values() for t in kind]
    train = [pattern(t) for kind in TEMPLATES["train"].values() for t in kind]
    assert all(any(t.fullmatch(m.question) for t in train) for m in reworded)
    assert not any(t.fullmatch(m.question) for m in reworded for t in held_out)
    assert calibration_vqa(spec, 64, seed=2, rephrase_share=0.5) == mixed  # seeded
    assert all(m.question != p.question for m, p in zip(calibration_vqa(spec, 64, seed=2, rephrase_share=1.0), plain))


@pytest.mark.parametrize("settings, message", [
    ({"mm_rephrase": 0.5}, "needs mm_calib"),
    ({"mm_rephrase": 0.5, "mm_calib": "easy-vqa:train,scienceqa"}, "not scienceqa"),
    ({"mm_rephrase": 1.5, "mm_calib": "easy-vqa:train"}, "less than or equal to 1"),
])
def test_paraphrase_augmentation_needs_data_it_can_reword(settings, message):
    with pytest.raises(ValueError, match=message):
        DataConfig(**settings)
