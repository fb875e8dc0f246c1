"""Calibration (= proxy) batches: text segments, plus image-text samples for LLaVA models."""
from __future__ import annotations


from prune_engine.data.text import DataError, load_text, text_segments
from prune_engine.data.vqa import VQASample


def tokenizer_of(processor):
    return getattr(processor, "tokenizer", processor)


def load_vqa(spec: str, limit: int | None = None, seed: int = 0) -> list[VQASample]:
    """Image-text samples from a spec: easy-vqa[:split], fashion-mnist[:split], a benchmark name[:split]
    (from the hub) or a benchmark name with a local file in the hub schema: scienceqa:FILE[@split]
    (FILE a .parquet, .json or .jsonl; split names the file's split, default the benchmark's)."""
    from pathlib import Path

    from prune_engine.data.hub import BENCHMARKS, load_benchmark
    from prune_engine.data.vqa import load_easy_vqa, load_fashion_mnist

    name, _, split = spec.partition(":")
    if name in BENCHMARKS:
        file, _, file_split = split.rpartition("@") if "@" in split else (split, "", "")
        if Path(file).suffix.lower() in (".parquet", ".json", ".jsonl"):
            if not Path(file).is_file():
                raise DataError(f"{name}: data file not found: {file}")
            return load_benchmark(name, source=file, split=file_split or None, limit=limit)
    if name == "easy-vqa":
        return load_easy_vqa(split or "train", limit=limit, seed=seed)
    if name == "fashion-mnist":
        return load_fashion_mnist(split or "train", limit=limit, seed=seed)
    if name in BENCHMARKS:
        return load_benchmark(name, split=split or None, limit=limit)
    raise DataError(f"unknown image-text data '{spec}': use easy-vqa[:split], fashion-mnist[:split] "
                    f"or one of {', '.join(sorted(BENCHMARKS))}")


def text_batches(processor, spec: str, n: int, seqlen: int, seed: int = 0,
                 batch_size: int | None = None) -> list[dict]:
    """n segments x seqlen tokens of text, every token a loss target; one batch unless batch_size is set."""
    segments = text_segments(tokenizer_of(processor), load_text(spec), n, seqlen, seed)
    size = batch_size or n
    return [{"input_ids": segments[i:i + size], "labels": segments[i:i + size].clone()}
            for i in range(0, n, size)]


def vqa_batches(processor, samples: list[VQASample], batch_size: int | None = None) -> list[dict]:
    """Image-text batches (prompt + answer); only the answer tokens are loss targets."""
    from prune_engine.data.vqa import collate_vqa

    if not samples:
        return []
    size = batch_size or len(samples)
    return [collate_vqa(processor, samples[i:i + size], with_answer=True) for i in range(0, len(samples), size)]


def describe(batches: list[dict]) -> str:
    tokens = sum(int((b["labels"] != -100).sum()) for b in batches)
    seqs = sum(len(b["input_ids"]) for b in batches)
    return f"{seqs} sequences, {tokens} target tokens, {len(batches)} batch(es)"


def check_token_ids(batches: list[dict], vocab_size: int) -> None:
    for b in batches:
        if int(b["input_ids"].max()) >= vocab_size:
            raise DataError(f"token id {int(b['input_ids'].max())} is outside the model's vocabulary ({vocab_size})")


