"""VQA loaders (real package data, malformed fixtures) and collate_vqa."""
from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import pytest
import torch
from PIL import Image

from efficientllava.prune_engine.data import vqa
from efficientllava.prune_engine.data.vqa import (EASY_VQA_CATEGORIES, FASHION_MNIST_CLASSES, DataError, VQASample, collate_vqa,
                                   easy_vqa_image_labels, load_easy_vqa, load_fashion_mnist)


# --- real package data ----------------------------------------------------------------------
def test_easy_vqa_subset_is_seeded_and_well_formed():
    a = load_easy_vqa("train", limit=40, seed=0)
    assert len(a) == 40
    assert [s.id for s in a] == [s.id for s in load_easy_vqa("train", limit=40, seed=0)]
    assert [s.id for s in a] != [s.id for s in load_easy_vqa("train", limit=40, seed=1)]
    answers = tuple((vqa.easy_vqa_dir() / "answers.txt").read_text().split())
    assert len(answers) == 13
    for s in a:
        assert s.choices == answers and s.answer in s.choices
        assert s.category in EASY_VQA_CATEGORIES
        assert s.image.size == (64, 64) and s.image.mode == "RGB"
        assert (s.category == "yes/no") == (s.answer in ("yes", "no"))
        if s.category == "colour":
            assert "color" in s.question


def test_easy_vqa_full_test_split_categories():
    samples = load_easy_vqa("test")
    assert len(samples) == 9673
    counts = {c: sum(s.category == c for s in samples) for c in EASY_VQA_CATEGORIES}
    assert counts["yes/no"] == 7136 and sum(counts.values()) == 9673
    assert len({id(s.image) for s in samples}) == 1000  # images shared per image id


def test_easy_vqa_image_labels_agree_with_every_qa_pair():
    labels = easy_vqa_image_labels("test")
    assert len(labels) > 900
    for s in load_easy_vqa("test"):
        got = labels.get(s.meta["image_id"], {})
        if s.category in ("shape", "colour") and s.category in got:
            assert got[s.category] == s.answer


def test_fashion_mnist_subset():
    a = load_fashion_mnist("test", limit=25, seed=3)
    assert len(a) == 25 and [s.id for s in a] == [s.id for s in load_fashion_mnist("test", limit=25, seed=3)]
    for s in a:
        assert s.choices == FASHION_MNIST_CLASSES and s.answer in FASHION_MNIST_CLASSES
        assert s.category == s.answer and s.question == "What is shown?"
        assert s.image.size == (28, 28) and s.image.mode == "L"
    assert len(load_fashion_mnist("train", limit=5)) == 5


def test_seeded_subset_plain_draw_is_the_seeded_sample():
    import random

    assert vqa.seeded_subset(50, 7, 3) == sorted(random.Random(3).sample(range(50), 7))
    assert vqa.seeded_subset(5, None, 0) == vqa.seeded_subset(5, 9, 0) == list(range(5))


def test_seeded_subset_balanced_takes_an_even_share_of_each_label():
    labels = ["yes"] * 70 + ["no"] * 20 + ["red"] * 6 + ["blue"] * 4  # a skewed population
    for seed in range(5):
        picked = vqa.seeded_subset(len(labels), 16, seed, labels)
        assert len(picked) == 16 == len(set(picked)) and picked == sorted(picked)
        counts = {lab: sum(labels[i] == lab for i in picked) for lab in set(labels)}
        assert counts == {"yes": 4, "no": 4, "red": 4, "blue": 4}
        assert picked == vqa.seeded_subset(len(labels), 16, seed, labels)  # seeded
    # a small label gives its turns to the others; the remainder goes to labels in a seeded order
    picked = vqa.seeded_subset(len(labels), 30, 0, labels)
    counts = sorted(sum(labels[i] == lab for i in picked) for lab in set(labels))
    assert len(picked) == 30 and counts[0] == 4 and counts[1] == 6 and counts[2:] == [10, 10]
    draws = {tuple(vqa.seeded_subset(len(labels), 18, s, labels)) for s in range(6)}
    assert len(draws) == 6
    with pytest.raises(ValueError, match="labels"):
        vqa.seeded_subset(10, 3, 0, ["a"] * 9)


def test_balanced_loaders_draw_evenly_over_the_answers():
    from efficientllava.prune_engine.data.calibration import calibration_vqa

    easy = load_easy_vqa("train", limit=39, seed=1, balance=True)
    counts = {a: sum(s.answer == a for s in easy) for a in easy[0].choices}
    assert set(counts.values()) == {3}  # 13 answers x 3 (a plain draw is mostly yes/no)
    plain = load_easy_vqa("train", limit=39, seed=1)
    assert sum(s.answer in ("yes", "no") for s in plain) > 2 * 6
    fashion = load_fashion_mnist("train", limit=20, seed=2, balance=True)
    assert sorted(s.answer for s in fashion) == sorted(FASHION_MNIST_CLASSES * 2)
    mix = calibration_vqa("easy-vqa:train,fashion-mnist:train", 46, seed=0, balance=True)
    fm = [s for s in mix if s.meta["dataset"] == "fashion-mnist"]
    assert len(mix) == 46 and len(fm) == 23
    assert max(sum(s.answer == c for s in fm) for c in FASHION_MNIST_CLASSES) == 3
    assert [s.id for s in calibration_vqa("easy-vqa:train", 10, seed=0)] == \
        [s.id for s in load_easy_vqa("train", limit=10, seed=0)]  # off: the plain draw of before


def test_unknown_split():
    with pytest.raises(DataError, match="split"):
        load_easy_vqa("validation")
    with pytest.raises(DataError, match="split"):
        load_fashion_mnist("dev")


# --- malformed fixtures -----------------------------------------------------------------------
def _easy_root(tmp_path: Path, records, answers=("yes", "no", "circle", "red")) -> Path:
    root = tmp_path / "easy"
    (root / "train" / "images").mkdir(parents=True)
    (root / "answers.txt").write_text("\n".join(answers) + "\n")
    Image.new("RGB", (64, 64), (255, 0, 0)).save(root / "train" / "images" / "0.png")
    (root / "train" / "questions.json").write_text(records if isinstance(records, str) else json.dumps(records))
    return root


def test_easy_vqa_fixture_ok(tmp_path):
    root = _easy_root(tmp_path, [["is there a circle?", "yes", 0], ["what color is the shape?", "red", 0]])
    samples = load_easy_vqa("train", root=root)
    assert [s.category for s in samples] == ["yes/no", "colour"]
    assert samples[0].choices == ("yes", "no", "circle", "red")


@pytest.mark.parametrize("records, match", [
    ("[[\"is there a circle?\", \"yes\", 0]", "invalid JSON"),
    ({"a": 1}, "JSON list"),
    ([["is there a circle?", "yes", 0], ["is there a circle?", "yes"]], "record 1"),
    ([["is there a circle?", "maybe", 0]], "record 0: answer 'maybe'"),
    ([["what color is the shape?", "circle", 0]], "record 0: answer 'circle' does not fit a colour question"),
    ([["is there a circle?", "yes", 7]], r"7\.png: image file missing"),
])
def test_easy_vqa_malformed(tmp_path, records, match):
    root = _easy_root(tmp_path, records)
    with pytest.raises(DataError, match=match) as info:
        load_easy_vqa("train", root=root)
    assert "\n" not in str(info.value)
    assert "questions.json" in str(info.value) or ".png" in str(info.value)


def test_easy_vqa_bad_image_and_missing_files(tmp_path):
    root = _easy_root(tmp_path, [["is there a circle?", "yes", 0]])
    (root / "train" / "images" / "0.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"0\.png: unreadable image \(questions.json record 0\)"):
        load_easy_vqa("train", root=root)
    (root / "train" / "questions.json").unlink()
    with pytest.raises(DataError, match="questions.json: file missing"):
        load_easy_vqa("train", root=root)
    (root / "answers.txt").unlink()
    with pytest.raises(DataError, match="answers.txt: file missing"):
        load_easy_vqa("train", root=root)


def _idx(path: Path, magic: int, dims, payload: bytes, compress=True):
    raw = struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + payload
    path.write_bytes(gzip.compress(raw) if compress else raw)


def test_fashion_mnist_fixtures(tmp_path):
    _idx(tmp_path / "t10k-images-idx3-ubyte.gz", 2051, (2, 28, 28), bytes(2 * 784))
    _idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 2049, (2,), bytes([7, 1]))
    assert [s.answer for s in load_fashion_mnist("test", root=tmp_path)] == ["Sneaker", "Trouser"]
    _idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 2049, (2,), bytes([7, 12]))
    with pytest.raises(DataError, match="record 1: label 12"):
        load_fashion_mnist("test", root=tmp_path)
    _idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 2049, (3,), bytes([7, 1, 2]))
    with pytest.raises(DataError, match="3 labels for 2 images"):
        load_fashion_mnist("test", root=tmp_path)
    _idx(tmp_path / "t10k-images-idx3-ubyte.gz", 2051, (2, 28, 28), bytes(100))
    with pytest.raises(DataError, match="payload has 100 bytes"):
        load_fashion_mnist("test", root=tmp_path)
    _idx(tmp_path / "t10k-images-idx3-ubyte.gz", 1234, (2, 28, 28), bytes(2 * 784))
    with pytest.raises(DataError, match="not an IDX file"):
        load_fashion_mnist("test", root=tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="unreadable"):
        load_fashion_mnist("test", root=tmp_path)
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: file missing"):
        load_fashion_mnist("train", root=tmp_path)


# --- collate -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def processor():
    from efficientllava.prune_engine.models.smol_llava import build_processor
    from efficientllava.prune_engine.models.embedded import embedded_smollm2_dir

    return build_processor({"image_size": 32, "patch_size": 16}, embedded_smollm2_dir())


def test_collate_labels_cover_only_the_answer(processor):
    samples = load_easy_vqa("test", limit=3, seed=2) + load_fashion_mnist("test", limit=2, seed=2)
    batch = collate_vqa(processor, samples)
    assert set(batch) == {"input_ids", "attention_mask", "pixel_values", "labels"}
    assert batch["pixel_values"].shape == (5, 3, 32, 32)
    tok = processor.tokenizer
    for i, s in enumerate(samples):
        ids, labels, mask = batch["input_ids"][i], batch["labels"][i], batch["attention_mask"][i]
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any()  # right padding
        assert int((ids == processor.image_token_id).sum()) == 4
        answer = labels[labels != -100]
        assert tok.decode(answer) == s.answer + "<|im_end|>"
        assert torch.equal(ids[n - len(answer):n], answer)  # the answer ends the real tokens
        prompt = tok.decode(ids[:n - len(answer)])
        assert prompt.startswith("<|im_start|>user\n<empty_output>") and prompt.endswith(
            s.question + "<|im_end|>\n<|im_start|>assistant\n")


def test_collate_without_answer_and_left_padding(processor):
    samples = load_easy_vqa("test", limit=2, seed=5)
    batch = collate_vqa(processor, samples, with_answer=False, padding_side="left")
    assert (batch["labels"] == -100).all()
    assert batch["attention_mask"][:, -1].all()
    text = collate_vqa(processor, [VQASample(None, "Why?", "Because", context="Some context")])
    assert "pixel_values" not in text
    assert processor.tokenizer.decode(text["input_ids"][0]).startswith("<|im_start|>user\nSome context\nWhy?")
    with pytest.raises(DataError):
        collate_vqa(processor, [])


def test_collate_mixed_image_and_text_only(processor):
    image_sample = load_easy_vqa("test", limit=1, seed=6)[0]
    text_sample = VQASample(None, "Why?", "Because", choices=("Because", "No"), context="Some context")
    batch = collate_vqa(processor, [text_sample, image_sample, text_sample])
    assert batch["pixel_values"].shape[0] == 1
    counts = (batch["input_ids"] == processor.image_token_id).sum(1).tolist()
    assert counts == [0, 4, 0]
