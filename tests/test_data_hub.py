"""Tests for prune_engine.data.hub: benchmark loaders on local fixtures in the HF schemas.

Fixtures live in tests/fixtures/data and are made by make_fixtures.py (checked here to
be in sync).  The hub code path is exercised with a fake ``datasets.load_dataset``.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from efficientllava.prune_engine.data.hub import (
    SCIENCEQA_TAGS,
    load_benchmark,
    load_llava_bench,
    load_mmvet,
    load_scienceqa,
    load_vizwiz,
    scienceqa_tags,
)
from efficientllava.prune_engine.data.text import DataError
from efficientllava.prune_engine.data.vqa import VQASample

FIXTURES = Path(__file__).parent / "fixtures" / "data"
RED, GREEN, BLUE, YELLOW = (220, 30, 30), (30, 200, 60), (40, 60, 220), (230, 220, 40)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private datasets cache so tests never write to ~/.cache."""
    return str(tmp_path_factory.mktemp("hf_cache"))


def one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg
    return msg


def png_file(path: Path, color) -> None:
    Image.new("RGB", (4, 4), color).save(path)


# ---------------------------------------------------------------- ScienceQA


def test_scienceqa_records_and_table3_tags(cache):
    samples = load_scienceqa(FIXTURES / "scienceqa.parquet", "test", cache_dir=cache)
    assert all(isinstance(s, VQASample) for s in samples)
    assert [s.id for s in samples] == [f"test-{i}" for i in range(5)]
    assert [s.category for s in samples] == [
        "NAT,IMG,TXT,G1-6",
        "SOC,TXT,G7-12",
        "LAN,NO,G7-12",
        "NAT,IMG,G7-12",
        "SOC,IMG,G1-6",
    ]
    assert [s.answer for s in samples] == ["red", "Maine", "avocado", "square", "Europe"]
    assert samples[0].choices == ("green", "red", "blue")
    assert samples[0].meta["answer_index"] == 1 and samples[4].meta["answer_index"] == 2
    assert samples[0].context == "Look at the picture." and samples[2].context == ""
    assert samples[1].image is None and samples[2].image is None
    img = samples[3].image
    assert img.mode == "RGB" and img.size == (8, 8) and img.getpixel((4, 4)) == BLUE
    assert samples[0].meta["lecture"] == "A lecture." and samples[0].meta["source_category"] == "Colours"
    assert {t for s in samples for t in scienceqa_tags(s)} == set(SCIENCEQA_TAGS)


def test_scienceqa_limit_and_image_filter(cache):
    src = FIXTURES / "scienceqa.parquet"
    full = load_scienceqa(src, cache_dir=cache)
    assert load_scienceqa(src, limit=2, cache_dir=cache) == full[:2]
    assert load_scienceqa(src, limit=0, cache_dir=cache) == []
    assert [s.id for s in load_scienceqa(src, require_image=True, cache_dir=cache)] == ["test-0", "test-3", "test-4"]
    assert [s.id for s in load_scienceqa(src, limit=2, require_image=True, cache_dir=cache)] == ["test-0", "test-3"]


def test_scienceqa_answer_index_out_of_range(cache):
    with pytest.raises(DataError) as info:
        load_scienceqa(FIXTURES / "scienceqa_bad_answer.parquet", cache_dir=cache)
    msg = one_line(info.value)
    assert "scienceqa_bad_answer.parquet: record 2" in msg and "answer index 4 out of range for 4 choices" in msg


def test_scienceqa_missing_column(cache):
    with pytest.raises(DataError) as info:
        load_scienceqa(FIXTURES / "scienceqa_no_choices.parquet", cache_dir=cache)
    msg = one_line(info.value)
    assert "scienceqa_no_choices.parquet" in msg and "missing column for 'choices'" in msg


def test_scienceqa_column_overrides(cache):
    src = FIXTURES / "scienceqa.parquet"
    no_hint = load_scienceqa(src, columns={"hint": None}, cache_dir=cache)
    assert [s.category for s in no_hint][:2] == ["NAT,IMG,G1-6", "SOC,NO,G7-12"]
    assert all(s.context == "" for s in no_hint)
    as_question = load_scienceqa(src, columns={"hint": "question"}, limit=1, cache_dir=cache)
    assert as_question[0].context == as_question[0].question
    with pytest.raises(DataError, match="missing column for 'answer' \\(tried 'label'"):
        load_scienceqa(src, columns={"answer": "label"}, cache_dir=cache)
    with pytest.raises(DataError, match="unknown column field\\(s\\) anwser"):
        load_scienceqa(src, columns={"anwser": "answer"}, cache_dir=cache)


def test_scienceqa_json_records_name_record(tmp_path, cache):
    rows = [
        {"question": "q0", "choices": ["a", "b"], "answer": 1, "hint": "", "image": None},
        {"question": "q1", "choices": ["a", "b"], "answer": "b", "hint": "", "image": None},
    ]
    p = tmp_path / "sqa.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(DataError) as info:
        load_scienceqa(p, cache_dir=cache)
    msg = one_line(info.value)
    assert "sqa.jsonl: record 1" in msg and "integer index" in msg


# ------------------------------------------------------------------- VizWiz


def test_vizwiz_raw_struct_layout(cache):
    samples = load_vizwiz(FIXTURES / "vizwiz.parquet", "val", cache_dir=cache)
    assert [s.id for s in samples] == ["VizWiz_val_00000000", "VizWiz_val_00000001", "VizWiz_val_00000002"]
    assert [s.answer for s in samples] == ["yellow", "no", "unanswerable"]
    assert [s.category for s in samples] == ["other", "yes/no", "unanswerable"]
    assert all(len(s.meta["answers"]) == 10 for s in samples)
    assert samples[0].meta["answers"][:2] == ("light yellow", "gold")  # raw answers kept
    assert samples[0].meta["answers"][7] == "Yellow"
    assert samples[0].image.getpixel((4, 4)) == YELLOW and samples[0].choices == ()


def test_vizwiz_undecodable_image(cache):
    with pytest.raises(DataError) as info:
        load_vizwiz(FIXTURES / "vizwiz_bad_image.parquet", cache_dir=cache)
    msg = one_line(info.value)
    assert "vizwiz_bad_image.parquet: record 1: undecodable image" in msg


def test_vizwiz_original_annotation_layout(tmp_path, cache):
    """Original VizWiz JSON: answers as {answer, answer_confidence}, answer_type, answerable."""
    png_file(tmp_path / "a.png", RED)
    rec = {
        "image": "a.png",
        "question": "What is this?",
        "answers": [{"answer": "pink", "answer_confidence": "maybe"}] + [{"answer": "red", "answer_confidence": "yes"}] * 2,
        "answer_type": "other",
        "answerable": 1,
    }
    p = tmp_path / "vizwiz.jsonl"
    p.write_text(json.dumps(rec) + "\n")
    (s,) = load_vizwiz(p, "val", cache_dir=cache)
    assert s.answer == "red" and s.category == "other" and s.meta["answerable"] == 1
    assert s.id == "val-0" and s.image.getpixel((1, 1)) == RED


# -------------------------------------------------------------------- MM-Vet


def test_mmvet_capabilities(cache):
    samples = load_mmvet(FIXTURES / "mmvet.parquet", cache_dir=cache)
    assert [s.id for s in samples] == ["v1_0", "v1_1", "v1_2"]
    assert [s.category for s in samples] == ["ocr,math", "rec", "rec,gen"]
    assert samples[0].meta["capabilities"] == ("ocr", "math")
    assert samples[0].answer == "-1<AND>-5" and samples[2].image.getpixel((4, 4)) == GREEN
    assert load_mmvet(FIXTURES / "mmvet.parquet", limit=1, cache_dir=cache) == samples[:1]


def test_mmvet_list_capability_and_missing_image(tmp_path, cache):
    png_file(tmp_path / "x.png", BLUE)
    good = {"question_id": "q", "image": "x.png", "question": "Q?", "answer": "A", "capability": ["rec", "know"]}
    p = tmp_path / "mmvet.jsonl"
    p.write_text(json.dumps(good) + "\n")
    (s,) = load_mmvet(p, cache_dir=cache)
    assert s.category == "rec,know"
    bad = tmp_path / "mmvet_bad.jsonl"
    bad.write_text(json.dumps(good) + "\n" + json.dumps({**good, "image": None}) + "\n")
    with pytest.raises(DataError, match="mmvet_bad.jsonl: record 1: image is missing"):
        load_mmvet(bad, cache_dir=cache)


# --------------------------------------------------------------- LLaVA-Bench


def test_llava_bench_jsonl_with_relative_image_paths(cache):
    samples = load_llava_bench(FIXTURES / "llava_bench.jsonl", cache_dir=cache)
    assert [s.category for s in samples] == ["conv", "detail"]
    assert samples[0].answer == "The picture is dominated by red."
    assert samples[1].meta == {
        "caption": "A small blue square with one black pixel in the corner.",
        "image_id": "002",
    }
    assert all(s.context == "" for s in samples)  # the caption is judge-only
    assert samples[0].image.getpixel((4, 4)) == RED and samples[1].image.getpixel((0, 0)) == (0, 0, 0)


def test_llava_bench_missing_image_file(tmp_path, cache):
    rec = {"question_id": "0", "question": "Q", "image": "nowhere.png", "gpt_answer": "A", "category": "conv"}
    p = tmp_path / "llava.jsonl"
    p.write_text(json.dumps(rec) + "\n")
    with pytest.raises(DataError) as info:
        load_llava_bench(p, cache_dir=cache)
    msg = one_line(info.value)
    assert "llava.jsonl: record 0: undecodable image" in msg and "nowhere.png" in msg


# ------------------------------------------------------------- registry / hub


def test_load_benchmark_dispatch(cache):
    assert load_benchmark("mmvet", FIXTURES / "mmvet.parquet", cache_dir=cache) == load_mmvet(
        FIXTURES / "mmvet.parquet", cache_dir=cache
    )
    assert len(load_benchmark("ScienceQA", FIXTURES / "scienceqa.parquet", limit=3, cache_dir=cache)) == 3
    with pytest.raises(DataError, match="unknown benchmark 'pope'"):
        load_benchmark("pope")


def test_missing_local_file():
    with pytest.raises(DataError, match="data file not found: .*nothing.parquet"):
        load_vizwiz("nothing.parquet")


def test_hub_path_uses_default_ids_and_splits(monkeypatch, cache):
    """Cluster path: load_dataset(<hub id>, config, split=...), faked with the fixture."""
    import datasets

    real = datasets.load_dataset
    calls = []

    def fake(path, name=None, split=None, cache_dir=None, **kw):
        calls.append((path, name, split))
        return real("parquet", data_files={split: [str(FIXTURES / "scienceqa.parquet")]}, split=split, cache_dir=cache)

    monkeypatch.setattr(datasets, "load_dataset", fake)
    samples = load_scienceqa(limit=2)
    assert calls == [("derek-thomas/ScienceQA", None, "test")]
    assert [s.answer for s in samples] == ["red", "Maine"]
    load_benchmark("scienceqa", "lmms-lab/ScienceQA", "validation", config="ScienceQA-IMG")
    assert calls[-1] == ("lmms-lab/ScienceQA", "ScienceQA-IMG", "validation")

    def offline(*a, **kw):
        raise ConnectionError("no route to host\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as info:
        load_vizwiz()
    assert one_line(info.value) == "lmms-lab/VizWiz-VQA@val: cannot load (ConnectionError: no route to host)"


# ------------------------------------------------------------------ calibration splits

SQA, VIZ = FIXTURES / "scienceqa.parquet", FIXTURES / "vizwiz.parquet"


@pytest.mark.parametrize("mm, named", [
    (f"scienceqa:{SQA}@test", "(test)"),  # the declared split of a local file
    (f"scienceqa:{SQA}@TEST", "(TEST)"),
    (f"scienceqa:{SQA}@validation[:50%]", "(validation[:50%])"),
    (f"scienceqa:{SQA}@train+dev", "(train+dev)"),
    (f"scienceqa:{SQA}", "scienceqa's default for a file without @split"),  # loads as its default split, test
    (f"vizwiz:{VIZ}", "vizwiz's default for a file without @split"),  # ... val
    ("scienceqa:Validation", "(Validation)"),  # a hub split, any spelling
    ("vizwiz:val2014", "(val2014)"),
    ("easy-vqa:test-dev", "(test-dev)"),
    (f"easy-vqa:train,vizwiz:{VIZ}", "vizwiz's default"),  # every part of a mix
])
def test_calibrating_on_an_evaluation_split_is_refused_on_every_path(mm, named):
    from efficientllava.prune_engine.data.calibration import check_calibration_data

    with pytest.raises(DataError) as info:
        check_calibration_data("wiki:calib", mm)
    msg = one_line(info.value)
    assert "is an evaluation split" in msg and named in msg and msg.endswith("(force with --allow-eval-split)")
    check_calibration_data("wiki:calib", mm, allow_eval_split=True)  # forced


@pytest.mark.parametrize("text", ["hf:wikitext:wikitext-2-raw-v1@Test", "hf:ptb_text_only@validation[:10%]#sentence"])
def test_calibration_text_on_an_evaluation_split_is_refused_in_any_spelling(text):
    from efficientllava.prune_engine.data.calibration import check_calibration_data

    with pytest.raises(DataError, match="is an evaluation split"):
        check_calibration_data(text, None)
    check_calibration_data(text, None, allow_eval_split=True)


@pytest.mark.parametrize("mm", [f"scienceqa:{SQA}@train", f"scienceqa:{SQA}@Train[:10]", f"vizwiz:{VIZ}@train",
                                "scienceqa", "scienceqa:train", "easy-vqa", "easy-vqa:train,fashion-mnist:train"])
def test_calibrating_on_a_training_split_is_accepted(mm):
    from efficientllava.prune_engine.data.calibration import check_calibration_data

    check_calibration_data("hf:wikitext:wikitext-2-raw-v1@train", mm)


def test_the_split_checked_is_the_split_loaded():
    """A local file loads under its declared split, else the benchmark's default (the ids name it)."""
    from efficientllava.prune_engine.data.calibration import calibration_split, calibration_vqa, load_vqa

    assert calibration_split(f"scienceqa:{SQA}") == "test" and calibration_split(f"vizwiz:{VIZ}") == "val"
    assert calibration_split(f"scienceqa:{SQA}@train") == "train" and calibration_split("scienceqa") == "train"
    assert {s.id.split("-")[0] for s in load_vqa(f"scienceqa:{SQA}")} == {"test"}
    assert {s.id.split("-")[0] for s in calibration_vqa(f"scienceqa:{SQA}@train", 3)} == {"train"}


# ------------------------------------------------------------------ fixtures


def test_fixtures_small_and_in_sync_with_generator(tmp_path):
    total = sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file())
    assert total < 200_000
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(tmp_path)
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert made, "generator wrote nothing"
    for rel in made:
        committed = FIXTURES / rel
        assert committed.is_file(), f"{rel} is generated but not committed"
        if rel.suffix == ".parquet":
            assert pq.read_table(tmp_path / rel).equals(pq.read_table(committed), check_metadata=True), rel
        else:
            assert (tmp_path / rel).read_bytes() == committed.read_bytes(), rel
