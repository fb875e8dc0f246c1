"""Calibration (= proxy) batches: text segments, plus image-text samples for LLaVA models."""
from __future__ import annotations


from efficientllava.prune_engine.data.text import DataError, load_text, text_segments
from efficientllava.prune_engine.data.vqa import VQASample


def tokenizer_of(processor):
    return getattr(processor, "tokenizer", processor)


EVALUATION_SPLITS = ("test", "val", "validation", "valid", "dev", "eval", "evaluation", "testdev", "minival",
                     "trainval", "heldout", "holdout")
#: benchmarks that are evaluation sets as a whole (no training split exists)
EVALUATION_ONLY = ("mmvet", "llava-bench")
_DATA_FILES = (".parquet", ".json", ".jsonl")


def is_evaluation_split(split: str) -> bool:
    """Whether a split name holds evaluation data, whatever its spelling: case, slices and mixes
    ("Test", "validation[:50%]", "train+val"), words and years ("test-dev", "val2014")."""
    import re

    return any(word in EVALUATION_SPLITS for word in re.findall(r"[a-z]+", split.lower()))


def _vqa_spec(spec: str) -> tuple[str, str | None, str]:
    """(name, local data file or None, split as written, "" if none) of an image-text spec, read the
    way `load_vqa` reads it: a benchmark name with a .parquet/.json/.jsonl file is FILE[@split]."""
    from pathlib import Path

    from efficientllava.prune_engine.data.hub import BENCHMARKS

    name, _, split = spec.partition(":")
    if name in BENCHMARKS:
        file, _, file_split = split.rpartition("@") if "@" in split else (split, "", "")
        if Path(file).suffix.lower() in _DATA_FILES:
            return name, file, file_split
    return name, None, split


def calibration_split(part: str) -> str:
    """The split that `calibration_vqa` loads for one part of a spec: the one written; for a local file
    without @split, the benchmark loader's default (which names the file's split, e.g. vizwiz's "val");
    else "train" (what the calibration draw asks for when none is written)."""
    from efficientllava.prune_engine.data.hub import BENCHMARKS

    name, file, split = _vqa_spec(part)
    if file is not None:
        return split or BENCHMARKS[name][2]
    return split or "train"


def check_calibration_data(text: str | None, mm: str | None, allow_eval_split: bool = False) -> None:
    """Calibration (= proxy) data must come from training splits: an evaluation split, or a
    benchmark that only exists for evaluation, is refused unless the user forces it."""
    if allow_eval_split:
        return
    from efficientllava.prune_engine.data.text import parse_text_spec

    hint = "; calibrating on evaluation data leaks it into the pruned model (force with --allow-eval-split)"
    if text:
        spec = parse_text_spec(text)
        if spec.kind == "wiki" and spec.part != "calib":
            raise DataError(f"calibration text '{text}' contains the held-out Wikipedia articles: use wiki:calib{hint}")
        if spec.kind == "pydoc":
            raise DataError(f"calibration text '{text}': pydoc is the shifted (other-domain) evaluation text{hint}")
        if spec.kind == "hf" and is_evaluation_split(spec.split):
            raise DataError(f"calibration text '{text}' is an evaluation split ({spec.split}){hint}")
    for part in mm_specs(mm):
        name, file, written = _vqa_spec(part)
        if name in EVALUATION_ONLY:
            raise DataError(f"image-text calibration '{part}': {name} is an evaluation benchmark{hint}")
        split = calibration_split(part)
        if is_evaluation_split(split):
            why = (f"{name}'s default for a file without @split: name its split, e.g. {name}:FILE@train"
                   if file is not None and not written else split)
            raise DataError(f"image-text calibration '{part}' is an evaluation split ({why}){hint}")


def mm_specs(spec: str | None) -> list[str]:
    """'easy-vqa:train,fashion-mnist:train' -> its parts (a mix: the samples are split evenly)."""
    return [p.strip() for p in (spec or "").split(",") if p.strip()]


def calibration_vqa(spec: str, limit: int, seed: int = 0, balance: bool = False,
                    rephrase_share: float = 0.0) -> list[VQASample]:
    """Image-text calibration samples: a seeded draw of `limit` samples from the training split of
    each part of `spec` (a comma-separated mix gets an even share per part), interleaved; `balance`
    draws each part evenly over its answers; `rephrase_share` of them (a seeded choice, rounded) are asked
    in a wording of the train templates instead of the generator's (`rephrase.rephrase(s, "train")`:
    the same image, answer and choices)."""
    parts = mm_specs(spec)
    shares = [limit // len(parts) + (1 if i < limit % len(parts) else 0) for i in range(len(parts))]
    drawn = []
    for part, n in zip(parts, shares):
        name, file, _ = _vqa_spec(part)
        source = part if file is not None else f"{name}:{calibration_split(part)}"  # the split the check judged
        drawn.append(load_vqa(source, limit=n, seed=seed, balance=balance))
    mixed = [s for group in zip(*drawn) for s in group] if len(drawn) > 1 else drawn[0]
    if len(drawn) > 1:  # the longer groups' tails
        shortest = min(len(g) for g in drawn)
        mixed += [s for g in drawn for s in g[shortest:]]
    if rephrase_share:
        import numpy as np

        from efficientllava.prune_engine.data.rephrase import rephrase

        n = round(rephrase_share * len(mixed))
        chosen = set(np.random.default_rng([seed, 0x4EF4]).choice(len(mixed), size=n, replace=False).tolist())
        mixed = [rephrase(s, "train") if i in chosen else s for i, s in enumerate(mixed)]
    return mixed


def load_vqa(spec: str, limit: int | None = None, seed: int = 0, balance: bool = False) -> list[VQASample]:
    """Image-text samples from a spec: easy-vqa[:split], fashion-mnist[:split] (split train, val or test),
    easy-vqa-rephrased[:split], fashion-mnist-rephrased[:split] (the split's images asked in the split's
    own wordings, `prune_engine.data.rephrase`), a benchmark name[:split]
    (from the hub) or a benchmark name with a local file in the hub schema: scienceqa:FILE[@split]
    (FILE a .parquet, .json or .jsonl; split names the file's split, default the benchmark's).
    `limit` draws a seeded subset; `balance` draws it evenly over the answers."""
    from pathlib import Path

    from efficientllava.prune_engine.data.hub import BENCHMARKS, load_benchmark
    from efficientllava.prune_engine.data.rephrase import REPHRASED, rephrase
    from efficientllava.prune_engine.data.vqa import load_easy_vqa, load_fashion_mnist

    name, file, split = _vqa_spec(spec)
    if file is not None:
        if not Path(file).is_file():
            raise DataError(f"{name}: data file not found: {file}")
        samples = load_benchmark(name, source=file, split=split or None, limit=None if balance else limit)
        return _balanced(samples, limit, seed) if balance else samples
    if name in REPHRASED:  # the images of a split, asked with that split's own templates
        return [rephrase(s, split or "train") for s in load_vqa(f"{REPHRASED[name]}:{split or 'train'}", limit, seed,
                                                                 balance)]
    if name == "easy-vqa":
        return load_easy_vqa(split or "train", limit=limit, seed=seed, balance=balance)
    if name == "fashion-mnist":
        return load_fashion_mnist(split or "train", limit=limit, seed=seed, balance=balance)
    if name in BENCHMARKS:
        samples = load_benchmark(name, split=split or None)
        if balance:
            return _balanced(samples, limit, seed)
        if limit is not None and limit < len(samples):  # a seeded draw, not the first rows
            import numpy as np

            keep = np.sort(np.random.default_rng(seed).choice(len(samples), size=limit, replace=False))
            samples = [samples[i] for i in keep]
        return samples
    raise DataError(f"unknown image-text data '{spec}': use easy-vqa[:split], fashion-mnist[:split], "
                    f"{', '.join(f'{n}[:split]' for n in REPHRASED)} or one of {', '.join(sorted(BENCHMARKS))}")


def _balanced(samples: list[VQASample], limit: int | None, seed: int) -> list[VQASample]:
    """A seeded draw of `limit` samples, evenly over their answers."""
    from efficientllava.prune_engine.data.vqa import seeded_subset

    return [samples[i] for i in seeded_subset(len(samples), limit, seed, [s.answer for s in samples])]


def text_batches(processor, spec: str, n: int, seqlen: int, seed: int = 0,
                 batch_size: int | None = None) -> list[dict]:
    """n segments x seqlen tokens of text, every token a loss target; one batch unless batch_size is set."""
    segments = text_segments(tokenizer_of(processor), load_text(spec), n, seqlen, seed)
    size = batch_size or n
    return [{"input_ids": segments[i:i + size], "labels": segments[i:i + size].clone()}
            for i in range(0, n, size)]


def vqa_batches(processor, samples: list[VQASample], batch_size: int | None = None) -> list[dict]:
    """Image-text batches (prompt + answer); only the answer tokens are loss targets."""
    from efficientllava.prune_engine.data.vqa import collate_vqa

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


