"""Benchmark loaders (ScienceQA, VizWiz, MM-Vet, LLaVA-Bench) producing :class:`VQASample`.

All loaders go through :func:`datasets.load_dataset`.  ``source`` is either a hub id
(what cluster users run; needs hub access) or a local ``.parquet`` / ``.json`` /
``.jsonl`` file in the same schema (loaded with ``datasets.load_dataset(<format>,
data_files={split: [path]})``; this is how the loaders are tested offline).

Column names follow the public Hugging Face versions of the benchmarks (dataset cards /
``dataset_info`` of the repositories named in the defaults):

============  ==================================  ============================================
benchmark     default source (split)              columns used
============  ==================================  ============================================
ScienceQA     ``derek-thomas/ScienceQA`` (test)   image (may be None), question, choices,
                                                  answer (int index), hint, subject, grade,
                                                  topic, category, skill, task, lecture,
                                                  solution (same in ``lmms-lab/ScienceQA``)
VizWiz        ``lmms-lab/VizWiz-VQA`` (val)       question_id, image, question, answers
                                                  (list of str; the original annotations'
                                                  list of {answer, answer_confidence} also
                                                  works), category (or answer_type),
                                                  answerable
MM-Vet        ``lmms-lab/MMVet`` (test)           question_id, image, question, answer,
                                                  capability ("rec,ocr" or a list),
                                                  image_source
LLaVA-Bench   ``lmms-lab/llava-bench-in-the-wild``  question_id, image, question, gpt_answer
              (train)                             (or answer), category (conv / detail /
                                                  complex), caption, image_id
============  ==================================  ============================================

Each loader's mapping is a module constant (``SCIENCEQA_COLUMNS`` ...) from a field to
candidate column names (the first one present is used); ``columns={"field": "col"}``
overrides a field (``None`` marks it absent).  Images may be stored in the HF ``Image``
layout ``{bytes, path}`` (with or without the ``datasets`` feature metadata), as raw
bytes, or as a file path (relative paths resolve against the data file's folder); they
are decoded with PIL and converted to RGB.  Malformed data (missing column, answer
index out of range, undecodable image, ...) raises a one-line :class:`DataError` naming
the file (or dataset) and the record index.
"""
from __future__ import annotations

import io
import re
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from PIL import Image, UnidentifiedImageError

from efficientllava.prune_engine.data.text import DataError
from efficientllava.prune_engine.data.vqa import VQASample

__all__ = [
    "BENCHMARKS",
    "LLAVA_BENCH_COLUMNS",
    "MMVET_COLUMNS",
    "SCIENCEQA_COLUMNS",
    "SCIENCEQA_TAGS",
    "VIZWIZ_COLUMNS",
    "load_benchmark",
    "load_llava_bench",
    "load_mmvet",
    "load_scienceqa",
    "load_vizwiz",
    "open_table",
    "scienceqa_tags",
]

ColumnMap = Mapping[str, "tuple[str, ...]"]

#: ScienceQA field -> candidate columns (``derek-thomas/ScienceQA`` / ``lmms-lab/ScienceQA``).
SCIENCEQA_COLUMNS: dict[str, tuple[str, ...]] = {
    "id": (),  # no id column upstream: ids are "<split>-<row>"
    "image": ("image",),
    "question": ("question",),
    "choices": ("choices",),
    "answer": ("answer",),
    "hint": ("hint",),
    "subject": ("subject",),
    "grade": ("grade",),
    "topic": ("topic",),
    "category": ("category",),
    "skill": ("skill",),
    "task": ("task",),
    "lecture": ("lecture",),
    "solution": ("solution",),
}
#: VizWiz-VQA field -> candidate columns (``lmms-lab/VizWiz-VQA``; original annotations).
VIZWIZ_COLUMNS: dict[str, tuple[str, ...]] = {
    "id": ("question_id",),
    "image": ("image",),
    "question": ("question",),
    "answers": ("answers",),
    "category": ("category", "answer_type"),
    "answerable": ("answerable",),
}
#: MM-Vet field -> candidate columns (``lmms-lab/MMVet``).
MMVET_COLUMNS: dict[str, tuple[str, ...]] = {
    "id": ("question_id",),
    "image": ("image",),
    "question": ("question",),
    "answer": ("answer",),
    "capability": ("capability",),
    "image_source": ("image_source",),
}
#: LLaVA-Bench (in-the-wild) field -> candidate columns (``lmms-lab/llava-bench-in-the-wild``).
LLAVA_BENCH_COLUMNS: dict[str, tuple[str, ...]] = {
    "id": ("question_id",),
    "image": ("image",),
    "question": ("question",),
    "answer": ("gpt_answer", "answer"),
    "category": ("category",),
    "caption": ("caption",),
    "image_id": ("image_id",),
}

#: Breakdown tags of the paper's Table 3 (ScienceQA): subject, context modality, grade.
SCIENCEQA_TAGS = ("NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12")
_SUBJECT_TAGS = {"natural science": "NAT", "social science": "SOC", "language science": "LAN"}
_DATA_SUFFIXES = {".parquet": "parquet", ".json": "json", ".jsonl": "json"}


# ------------------------------------------------------------------ loading


def open_table(
    source: str | Path,
    split: str,
    *,
    config: str | None = None,
    cache_dir: str | None = None,
) -> tuple[Any, str, Path | None]:
    """Open ``source`` with :func:`datasets.load_dataset`; return (dataset, label, base_dir).

    A ``source`` ending in ``.parquet``/``.json``/``.jsonl`` is a local data file (it
    must exist); anything else is a hub id.  ``label`` names the source in error
    messages (the file path, or ``id[:config]@split``); ``base_dir`` is the data file's
    folder (for relative image paths), ``None`` for hub datasets.  Loading failures
    (missing file, no hub access, unknown split) become a one-line :class:`DataError`.
    """
    import datasets  # deferred: importing datasets costs ~1 s

    src = str(source)
    suffix = Path(src).suffix.lower()
    local = suffix in _DATA_SUFFIXES
    if local:
        label = src
        if not Path(src).is_file():
            raise DataError(f"data file not found: {src}")
    else:
        label = src + (f":{config}" if config else "") + f"@{split}"
    try:
        if local:
            ds = datasets.load_dataset(
                _DATA_SUFFIXES[suffix], data_files={split: [src]}, split=split, cache_dir=cache_dir
            )
        else:
            ds = datasets.load_dataset(src, config, split=split, cache_dir=cache_dir)
    except Exception as exc:  # hub / network / format errors: report in one line
        text = str(exc).strip()
        first = text.splitlines()[0] if text else ""
        raise DataError(f"{label}: cannot load ({type(exc).__name__}: {first})") from exc
    return ds, label, (Path(src).resolve().parent if local else None)


def _resolve_columns(
    defaults: ColumnMap,
    overrides: Mapping[str, str | None] | None,
    available: list[str],
    label: str,
    required: tuple[str, ...],
) -> dict[str, str | None]:
    """Field -> column actually used (or ``None``); a required field must resolve."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise DataError(f"{label}: unknown column field(s) {', '.join(unknown)} (known: {', '.join(defaults)})")
    resolved: dict[str, str | None] = {}
    for field, candidates in defaults.items():
        if field in overrides:
            candidates = () if overrides[field] is None else (str(overrides[field]),)
        col = next((c for c in candidates if c in available), None)
        if col is None and field in required:
            tried = ", ".join(repr(c) for c in candidates) or "no column"
            raise DataError(
                f"{label}: missing column for {field!r} (tried {tried}; columns: {', '.join(available)})"
            )
        resolved[field] = col
    return resolved


def _raw_images(ds: Any, column: str | None) -> Any:
    """Turn off ``datasets`` image decoding so undecodable images are reported here."""
    if column is None:
        return ds
    import datasets

    feature = ds.features.get(column)
    is_struct = isinstance(feature, dict) and set(feature) == {"bytes", "path"}
    if isinstance(feature, datasets.Image) or is_struct:
        return ds.cast_column(column, datasets.Image(decode=False))
    return ds


def _decode_image(value: Any, where: str, base_dir: Path | None) -> Image.Image | None:
    """PIL RGB image from an HF ``{bytes, path}`` dict, raw bytes or a path; None if empty."""
    if value is None:
        return None
    if isinstance(value, Image.Image):
        return value.convert("RGB")
    data: bytes | None = None
    path: str | None = None
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    elif isinstance(value, str):
        path = value
    else:
        raise DataError(f"{where}: image is {type(value).__name__}, expected {{bytes, path}}, bytes or a path")
    try:
        if data:
            with Image.open(io.BytesIO(data)) as img:
                return img.convert("RGB")
        if path:
            p = Path(path)
            if not p.is_absolute() and base_dir is not None:
                p = base_dir / p
            with Image.open(p) as img:
                return img.convert("RGB")
    except UnidentifiedImageError as exc:
        raise DataError(f"{where}: undecodable image (not a recognised image format)") from exc
    except Exception as exc:
        raise DataError(f"{where}: undecodable image ({type(exc).__name__}: {exc})") from exc
    return None


def _rows(
    source: str | Path,
    split: str,
    limit: int | None,
    defaults: ColumnMap,
    columns: Mapping[str, str | None] | None,
    required: tuple[str, ...],
    config: str | None,
    cache_dir: str | None,
) -> Iterator[tuple[int, str, dict[str, Any], Path | None, str]]:
    """Yield (index, where, field -> value, base_dir, split) for each record.

    Images are left undecoded (``{bytes, path}`` dicts); ``where`` is
    ``"<label>: record <index>"`` for error messages.
    """
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise DataError(f"limit must be a non-negative integer or None, got {limit!r}")
    ds, label, base_dir = open_table(source, split, config=config, cache_dir=cache_dir)
    cols = _resolve_columns(defaults, columns, list(ds.column_names), label, required)
    ds = _raw_images(ds, cols.get("image"))
    for i, row in enumerate(ds):
        fields = {f: (row[c] if c is not None else None) for f, c in cols.items()}
        yield i, f"{label}: record {i}", fields, base_dir, split


def _text(value: Any, where: str, field: str, required: bool = True) -> str:
    if value is None:
        if required:
            raise DataError(f"{where}: {field!r} is missing")
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise DataError(f"{where}: {field!r} is {type(value).__name__}, expected text")


def _sample_id(value: Any, split: str, index: int) -> str:
    return str(value) if value is not None and str(value) != "" else f"{split}-{index}"


# ---------------------------------------------------------------- ScienceQA


def _grade_tag(grade: Any) -> str:
    if grade is None:
        return ""
    m = re.search(r"\d+", str(grade))
    if not m:
        return ""
    g = int(m.group())
    return "G1-6" if 1 <= g <= 6 else ("G7-12" if 7 <= g <= 12 else "")


def scienceqa_tags(sample: VQASample) -> tuple[str, ...]:
    """Table 3 breakdown tags of a ScienceQA sample (its ``category`` split on commas).

    A sample counts in one subject tag (NAT/SOC/LAN), in IMG and/or TXT (image / text
    context; NO when it has neither) and in one grade tag (G1-6/G7-12).
    """
    return tuple(t for t in sample.category.split(",") if t)


def load_scienceqa(
    source: str | Path = "derek-thomas/ScienceQA",
    split: str = "test",
    limit: int | None = None,
    *,
    config: str | None = None,
    columns: Mapping[str, str | None] | None = None,
    require_image: bool = False,
    cache_dir: str | None = None,
) -> list[VQASample]:
    """ScienceQA multiple-choice questions as :class:`VQASample`.

    ``answer`` is the text of the correct choice and ``choices`` all choices (for
    constrained-choice evaluation); ``context`` is the hint.  ``category`` holds the
    paper's Table 3 tags joined by commas, e.g. ``"NAT,IMG,TXT,G1-6"`` (subject
    natural/social/language science -> NAT/SOC/LAN; context modality IMG if there is an
    image, TXT if there is a non-empty hint, NO if neither; grade1-6 -> G1-6,
    grade7-12 -> G7-12); see :func:`scienceqa_tags`.  ``meta`` keeps ``answer_index``,
    ``subject``, ``context_modality``, ``grade``, ``lecture``, ``solution``, ``topic``,
    ``skill``, ``task``, ``source_category`` where present.

    ``require_image`` keeps only questions with an image (the SQA-IMG subset); ``limit``
    caps the number of samples returned (after that filter).
    """
    out: list[VQASample] = []
    if limit == 0:
        return out
    for i, where, f, base_dir, sp in _rows(
        source, split, limit, SCIENCEQA_COLUMNS, columns, ("question", "choices", "answer"), config, cache_dir
    ):
        question = _text(f["question"], where, "question")
        choices = f["choices"]
        if not isinstance(choices, (list, tuple)) or not choices:
            raise DataError(f"{where}: 'choices' must be a non-empty list, got {choices!r}")
        choices = tuple(_text(c, where, "choice") for c in choices)
        answer = f["answer"]
        if isinstance(answer, bool) or not isinstance(answer, int):
            raise DataError(f"{where}: 'answer' must be an integer index, got {answer!r}")
        if not 0 <= answer < len(choices):
            raise DataError(f"{where}: answer index {answer} out of range for {len(choices)} choices")
        if require_image and f["image"] is None:
            continue
        image = _decode_image(f["image"], where, base_dir)
        if require_image and image is None:
            continue
        hint = _text(f["hint"], where, "hint", required=False).strip()
        modality = tuple(t for t, on in (("IMG", image is not None), ("TXT", bool(hint))) if on) or ("NO",)
        subject = _SUBJECT_TAGS.get(str(f["subject"] or "").strip().lower(), "")
        grade = _grade_tag(f["grade"])
        tags = tuple(t for t in (subject, *modality, grade) if t)
        meta = {"answer_index": answer, "subject": subject, "context_modality": modality, "grade": grade}
        for key in ("lecture", "solution", "topic", "skill", "task"):
            if f[key] is not None:
                meta[key] = f[key]
        if f["category"] is not None:
            meta["source_category"] = f["category"]
        out.append(
            VQASample(
                image=image,
                question=question,
                answer=choices[answer],
                choices=choices,
                category=",".join(tags),
                id=_sample_id(f["id"], sp, i),
                context=hint,
                meta=meta,
            )
        )
        if limit is not None and len(out) >= limit:
            break
    return out


# ------------------------------------------------------------------- VizWiz


def _majority(answers: list[str]) -> str:
    """Most frequent answer (case/space-normalised); ties go to the earliest."""
    norm = [" ".join(a.lower().split()) for a in answers]
    norm = [a for a in norm if a]
    if not norm:
        return ""
    counts = Counter(norm)
    best = max(counts.values())
    return next(a for a in norm if counts[a] == best)


def load_vizwiz(
    source: str | Path = "lmms-lab/VizWiz-VQA",
    split: str = "val",
    limit: int | None = None,
    *,
    config: str | None = None,
    columns: Mapping[str, str | None] | None = None,
    cache_dir: str | None = None,
) -> list[VQASample]:
    """VizWiz-VQA open-ended questions as :class:`VQASample`.

    ``answer`` is the most frequent of the (up to 10) human answers, normalised to lower
    case (``""`` when a split has none, e.g. test); all answers are kept in
    ``meta["answers"]`` for the VQA accuracy min(1, #matches / 3).  ``category`` is the
    answer type (``unanswerable``, ``yes/no``, ``number``, ``other``); ``meta`` also
    carries ``answerable`` when the column exists.
    """
    out: list[VQASample] = []
    if limit == 0:
        return out
    for i, where, f, base_dir, sp in _rows(
        source, split, limit, VIZWIZ_COLUMNS, columns, ("image", "question", "answers"), config, cache_dir
    ):
        question = _text(f["question"], where, "question")
        raw = f["answers"]
        if raw is None:
            raw = []
        if not isinstance(raw, (list, tuple)):
            raise DataError(f"{where}: 'answers' must be a list, got {type(raw).__name__}")
        answers = []
        for a in raw:
            if isinstance(a, dict):
                a = a.get("answer")
            answers.append(_text(a, where, "answers"))
        image = _decode_image(f["image"], where, base_dir)
        if image is None:
            raise DataError(f"{where}: image is missing")
        meta: dict[str, Any] = {"answers": tuple(answers)}
        if f["answerable"] is not None:
            try:
                meta["answerable"] = int(f["answerable"])
            except (TypeError, ValueError) as exc:
                raise DataError(f"{where}: 'answerable' is {f['answerable']!r}, expected 0 or 1") from exc
        out.append(
            VQASample(
                image=image,
                question=question,
                answer=_majority(answers),
                category=_text(f["category"], where, "category", required=False),
                id=_sample_id(f["id"], sp, i),
                meta=meta,
            )
        )
        if limit is not None and len(out) >= limit:
            break
    return out


# -------------------------------------------------------------------- MM-Vet


def load_mmvet(
    source: str | Path = "lmms-lab/MMVet",
    split: str = "test",
    limit: int | None = None,
    *,
    config: str | None = None,
    columns: Mapping[str, str | None] | None = None,
    cache_dir: str | None = None,
) -> list[VQASample]:
    """MM-Vet open-ended questions as :class:`VQASample` (scored by an LLM judge).

    ``answer`` is the ground truth (may contain ``<AND>`` / ``<OR>``); ``category`` is the
    capability set as a comma-joined string (``"rec,ocr"``; a list column is joined),
    also split into ``meta["capabilities"]``; ``meta["image_source"]`` where present.
    """
    out: list[VQASample] = []
    if limit == 0:
        return out
    for i, where, f, base_dir, sp in _rows(
        source, split, limit, MMVET_COLUMNS, columns, ("image", "question", "answer"), config, cache_dir
    ):
        cap = f["capability"]
        if isinstance(cap, (list, tuple)):
            caps = tuple(_text(c, where, "capability").strip() for c in cap)
        else:
            caps = tuple(c.strip() for c in _text(cap, where, "capability", required=False).split(","))
        caps = tuple(c for c in caps if c)
        image = _decode_image(f["image"], where, base_dir)
        if image is None:
            raise DataError(f"{where}: image is missing")
        meta: dict[str, Any] = {"capabilities": caps}
        if f["image_source"] is not None:
            meta["image_source"] = f["image_source"]
        out.append(
            VQASample(
                image=image,
                question=_text(f["question"], where, "question"),
                answer=_text(f["answer"], where, "answer"),
                category=",".join(caps),
                id=_sample_id(f["id"], sp, i),
                meta=meta,
            )
        )
        if limit is not None and len(out) >= limit:
            break
    return out


# --------------------------------------------------------------- LLaVA-Bench


def load_llava_bench(
    source: str | Path = "lmms-lab/llava-bench-in-the-wild",
    split: str = "train",
    limit: int | None = None,
    *,
    config: str | None = None,
    columns: Mapping[str, str | None] | None = None,
    cache_dir: str | None = None,
) -> list[VQASample]:
    """LLaVA-Bench (in-the-wild) questions as :class:`VQASample` (scored by an LLM judge).

    ``answer`` is the GPT-4 reference answer; ``category`` is ``conv`` / ``detail`` /
    ``complex``.  The image caption is judge-only context: it goes to
    ``meta["caption"]`` (a list is joined with newlines), not to ``context``, so it never
    reaches the model's prompt.  ``meta["image_id"]`` where present.
    """
    out: list[VQASample] = []
    if limit == 0:
        return out
    for i, where, f, base_dir, sp in _rows(
        source, split, limit, LLAVA_BENCH_COLUMNS, columns, ("image", "question", "answer"), config, cache_dir
    ):
        caption = f["caption"]
        if isinstance(caption, (list, tuple)):
            caption = "\n".join(_text(c, where, "caption") for c in caption)
        image = _decode_image(f["image"], where, base_dir)
        if image is None:
            raise DataError(f"{where}: image is missing")
        meta: dict[str, Any] = {}
        if caption is not None:
            meta["caption"] = _text(caption, where, "caption")
        if f["image_id"] is not None:
            meta["image_id"] = str(f["image_id"])
        out.append(
            VQASample(
                image=image,
                question=_text(f["question"], where, "question"),
                answer=_text(f["answer"], where, "answer"),
                category=_text(f["category"], where, "category", required=False),
                id=_sample_id(f["id"], sp, i),
                meta=meta,
            )
        )
        if limit is not None and len(out) >= limit:
            break
    return out


# ------------------------------------------------------------------ registry

#: name -> (loader, default source, default split)
BENCHMARKS: dict[str, tuple[Callable[..., list[VQASample]], str, str]] = {
    "scienceqa": (load_scienceqa, "derek-thomas/ScienceQA", "test"),
    "vizwiz": (load_vizwiz, "lmms-lab/VizWiz-VQA", "val"),
    "mmvet": (load_mmvet, "lmms-lab/MMVet", "test"),
    "llava-bench": (load_llava_bench, "lmms-lab/llava-bench-in-the-wild", "train"),
}


def load_benchmark(
    name: str,
    source: str | Path | None = None,
    split: str | None = None,
    limit: int | None = None,
    **kwargs: Any,
) -> list[VQASample]:
    """Load a benchmark by name (``scienceqa``, ``vizwiz``, ``mmvet``, ``llava-bench``).

    ``source`` / ``split`` default to the benchmark's hub id and evaluation split;
    other keyword arguments go to the loader (``columns``, ``config``, ``cache_dir``,
    ``require_image`` for ScienceQA).
    """
    key = name.strip().lower().replace("_", "-")
    if key not in BENCHMARKS:
        raise DataError(f"unknown benchmark {name!r} (expected one of {', '.join(BENCHMARKS)})")
    loader, default_source, default_split = BENCHMARKS[key]
    return loader(source or default_source, split or default_split, limit, **kwargs)
