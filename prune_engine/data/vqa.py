"""Image-text samples (image, question, answer) for LLaVA calibration, projector steps and evaluation.

Offline sources (read by path; their Python modules are never imported):

* easy-VQA (PyPI ``easy-vqa``, MIT): 64x64 RGB images of one coloured shape, 38,575 / 9,673
  train / test question-answer pairs over 13 answers (yes/no, 3 shapes, 8 colours).
* Fashion-MNIST (Debian ``dataset-fashion-mnist``): 28x28 grey photos of 10 clothing classes,
  asked as "What is shown?".

Splits: ``test`` is the files' test split (it only reports); ``val`` is a fixed tenth of the files'
*training* split held aside for every choice (easy-VQA by image, so a validation image never has a
question in ``train``; Fashion-MNIST by photo); ``train`` is the rest of the training file, where
calibration (proxy) samples come from. Sample ids name the file and its record index
(``easy-vqa/train/17``), so the parts can be checked disjoint by id.

``collate_vqa`` turns samples into a LLaVA batch with the processor's chat template; the
prompt/answer token layout it builds is the one ``prune_engine.evaluation.vqa`` scores, so
training, calibration and evaluation agree token for token.
"""
from __future__ import annotations

import gzip
import importlib.util
import json
import random
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

try:  # one DataError for the whole data package when the text loaders define it
    from efficientllava.prune_engine.data.text import DataError  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on which modules exist in the tree

    class DataError(ValueError):
        """Malformed or missing data (one-line message naming the file and record)."""


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


# --- easy-VQA ----------------------------------------------------------------------------
EASY_VQA_SHAPES = ("circle", "rectangle", "triangle")
EASY_VQA_COLOURS = ("red", "green", "blue", "yellow", "black", "gray", "teal", "brown")
EASY_VQA_CATEGORIES = ("yes/no", "shape", "colour")

# --- Fashion-MNIST -----------------------------------------------------------------------
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FASHION_MNIST_QUESTION = "What is shown?"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

_SPLITS = ("train", "val", "test")
#: share of the training file held aside as the validation split, and the fixed seed that picks it
#: (constants: the split must not move with a run's seed)
VAL_FRACTION = 0.1
VAL_SPLIT_SEED = 0


def easy_vqa_dir(root: str | Path | None = None) -> Path:
    """The easy-VQA ``data`` directory (``answers.txt``, ``train/``, ``test/``), found without importing the package."""
    if root is not None:
        return Path(root)
    spec = importlib.util.find_spec("easy_vqa")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("package 'easy-vqa' is not installed (pip install --no-deps easy-vqa)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _check_split(split: str, name: str) -> None:
    if split not in _SPLITS:
        raise DataError(f"{name}: unknown split '{split}' (expected one of {', '.join(_SPLITS)})")


def file_split(split: str) -> str:
    """The data file a split is read from: val is held aside inside the training file."""
    return "test" if split == "test" else "train"


def held_aside(keys: list, split: str) -> list[int]:
    """Indices (in file order) of the records of ``split`` among a training file's records, given one
    key per record (the unit that must not straddle two splits: an image id, a photo index): a fixed
    seeded ``VAL_FRACTION`` of the distinct keys is ``val``, the rest ``train``; ``test`` keeps all."""
    if split == "test":
        return list(range(len(keys)))
    distinct = sorted(set(keys))
    val = set(random.Random(VAL_SPLIT_SEED).sample(distinct, int(round(len(distinct) * VAL_FRACTION))))
    return [i for i, k in enumerate(keys) if (k in val) == (split == "val")]


def seeded_subset(n: int, limit: int | None, seed: int, strata: list | None = None) -> list[int]:
    """Indices of a seeded subset of ``range(n)`` in file order (all of them when limit is None).

    With ``strata`` (one label per index, e.g. the answers) the draw is balanced: an even share of
    each label, taken in turns over the labels in a seeded order (a label with too few indices gives
    its turns to the others), so every answer is represented and none dominates by chance."""
    if limit is None or limit >= n:
        return list(range(n))
    if limit < 0:
        raise DataError(f"limit must be >= 0, got {limit}")
    rng = random.Random(seed)
    if strata is None:
        return sorted(rng.sample(range(n), limit))
    if len(strata) != n:
        raise ValueError(f"{len(strata)} labels for {n} indices")
    groups: dict = {}
    for i, label in enumerate(strata):
        groups.setdefault(label, []).append(i)
    labels = sorted(groups, key=str)
    rng.shuffle(labels)  # which labels get the remainder when limit is not a multiple
    for label in labels:
        rng.shuffle(groups[label])
    picked: list[int] = []
    turn = 0
    while len(picked) < limit:  # ends: limit < n
        picked += [groups[label][turn] for label in labels if turn < len(groups[label])][:limit - len(picked)]
        turn += 1
    return sorted(picked)


def _load_image(path: Path, what: str) -> Image.Image:
    if not path.is_file():
        raise DataError(f"{path}: image file missing ({what})")
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except Exception as exc:  # PIL raises many types (UnidentifiedImageError, OSError, SyntaxError...)
        raise DataError(f"{path}: unreadable image ({what}): {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None


def easy_vqa_category(question: str, answer: str) -> str:
    """Question type, read from the question's wording ('what color...', 'what ... shape', yes/no).

    Raises ValueError when the answer does not fit the question type.
    """
    q = question.strip().lower()
    if q.startswith("what"):
        category = "colour" if ("color" in q or "colour" in q) else "shape"
    else:
        category = "yes/no"
    allowed = {"yes/no": ("yes", "no"), "shape": EASY_VQA_SHAPES, "colour": EASY_VQA_COLOURS}[category]
    if answer not in allowed:
        raise ValueError(f"answer '{answer}' does not fit a {category} question")
    return category


def _read_json(path: Path):
    if not path.is_file():
        raise DataError(f"{path}: file missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: invalid JSON: {str(exc).splitlines()[0]}") from None


def _easy_vqa_answers(root: Path) -> tuple[str, ...]:
    path = root / "answers.txt"
    if not path.is_file():
        raise DataError(f"{path}: file missing")
    answers = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    if not answers:
        raise DataError(f"{path}: no answers")
    return answers


def _easy_vqa_records(root: Path, split: str) -> list[tuple[str, str, int]]:
    """The validated (question, answer, image id) records of a split."""
    path = root / split / "questions.json"
    data = _read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of [question, answer, image_id] records")
    answers = set(_easy_vqa_answers(root))
    records = []
    for i, rec in enumerate(data):
        if (not isinstance(rec, list) or len(rec) != 3 or not isinstance(rec[0], str) or not isinstance(rec[1], str)
                or not isinstance(rec[2], int) or isinstance(rec[2], bool) or rec[2] < 0):
            raise DataError(f"{path}: record {i}: expected [question, answer, image_id], got {json.dumps(rec)[:80]}")
        if rec[1] not in answers:
            raise DataError(f"{path}: record {i}: answer '{rec[1]}' is not in answers.txt")
        records.append((rec[0], rec[1], rec[2]))
    return records


def load_easy_vqa(split: str, limit: int | None = None, seed: int = 0,
                  root: str | Path | None = None, balance: bool = False) -> list[VQASample]:
    """easy-VQA question-answer pairs of ``split`` ('train', 'val' or 'test'; see the module docstring).

    ``limit`` picks a seeded random subset of the QA pairs (kept in file order); ``root`` is
    the data directory (default: the installed ``easy-vqa`` package's ``data``); ``balance`` draws
    the subset evenly over the answers (`seeded_subset`). Choices are
    the 13 answers of ``answers.txt``; category is the question type (yes/no, shape, colour).
    Images are loaded once per image id and shared between its questions.
    """
    _check_split(split, "easy-vqa")
    root = easy_vqa_dir(root)
    choices = _easy_vqa_answers(root)
    source = file_split(split)
    everything = _easy_vqa_records(root, source)
    index = held_aside([image_id for _, _, image_id in everything], split)  # records of this split, file order
    path = root / source / "questions.json"
    images: dict[int, Image.Image] = {}
    samples = []
    strata = [everything[i][1] for i in index] if balance else None
    for j in seeded_subset(len(index), limit, seed, strata):
        i = index[j]
        question, answer, image_id = everything[i]
        try:
            category = easy_vqa_category(question, answer)
        except ValueError as exc:
            raise DataError(f"{path}: record {i}: {exc}") from None
        if image_id not in images:
            images[image_id] = _load_image(root / source / "images" / f"{image_id}.png", f"{path.name} record {i}")
        samples.append(VQASample(image=images[image_id], question=question, answer=answer, choices=choices,
                                 category=category, id=f"easy-vqa/{source}/{i}",
                                 meta={"image_id": image_id, "dataset": "easy-vqa", "split": split}))
    return samples


_WORD = re.compile(r"[a-z]+")


def easy_vqa_image_labels(split: str, root: str | Path | None = None) -> dict[int, dict[str, str]]:
    """Per image id, its ``{"shape": ..., "colour": ...}`` (those known) derived from the split's QA pairs.

    "what ..." questions name the attribute directly; yes/no questions ("is there not a red
    shape?" -> no) confirm or exclude one value, and a value is also accepted when all the
    others are excluded. An attribute the QA pairs do not determine is left out (train: 3,227
    of 4,000 images get both, the rest one; no QA record is ever contradicted).
    """
    _check_split(split, "easy-vqa")
    root = easy_vqa_dir(root)
    vocab = {"shape": EASY_VQA_SHAPES, "colour": EASY_VQA_COLOURS}
    known: dict[int, dict[str, str]] = {}
    excluded: dict[int, dict[str, set]] = {}
    everything = _easy_vqa_records(root, file_split(split))
    for i in held_aside([image_id for _, _, image_id in everything], split):
        question, answer, image_id = everything[i]
        try:
            category = easy_vqa_category(question, answer)
        except ValueError:
            continue
        if category in ("shape", "colour"):
            known.setdefault(image_id, {})[category] = answer
            continue
        words = _WORD.findall(question.lower())
        negated = "not" in words or "no" in words
        truth = (answer == "yes") != negated
        for attr, values in vocab.items():
            for v in values:
                if v in words:
                    if truth:
                        known.setdefault(image_id, {})[attr] = v
                    else:
                        excluded.setdefault(image_id, {}).setdefault(attr, set()).add(v)
    labels = {}
    for image_id in set(known) | set(excluded):
        got = dict(known.get(image_id, {}))
        for attr, values in vocab.items():
            if attr not in got:
                left = set(values) - excluded.get(image_id, {}).get(attr, set())
                if len(left) == 1:
                    got[attr] = left.pop()
        if got:
            labels[image_id] = got
    return labels


# --- Fashion-MNIST -------------------------------------------------------------------------
def _read_idx(path: Path, magic: int) -> tuple[tuple[int, ...], bytes]:
    """An IDX file (optionally gzipped): its dimensions and raw uint8 payload."""
    candidates = [path, path.with_suffix("")] if path.suffix == ".gz" else [path]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise DataError(f"{path}: file missing (apt-get install dataset-fashion-mnist)")
    try:
        raw = gzip.decompress(found.read_bytes()) if found.suffix == ".gz" else found.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataError(f"{found}: unreadable: {str(exc).splitlines()[0]}") from None
    if len(raw) < 8 or struct.unpack(">I", raw[:4])[0] != magic:
        raise DataError(f"{found}: not an IDX file with magic {magic}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{found}: truncated header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    size = 1
    for d in dims:
        size *= d
    if len(raw) - header != size:
        raise DataError(f"{found}: payload has {len(raw) - header} bytes, header says {size}")
    return dims, raw[header:]


def load_fashion_mnist(split: str, limit: int | None = None, seed: int = 0,
                       root: str | Path | None = None, balance: bool = False) -> list[VQASample]:
    """Fashion-MNIST photos of ``split`` ('train' 54k, 'val' 6k held aside from the 60k training photos,
    'test' 10k) as VQA samples.

    Question "What is shown?", answer and category = the class name, choices = the 10
    class names. ``limit`` picks a seeded random subset (kept in file order); ``root`` is
    the directory of the IDX files (default ``/usr/share/datasets/fashion-mnist``). Images
    are 28x28 greyscale (mode "L"). ``balance`` draws the subset evenly over the classes.
    """
    _check_split(split, "fashion-mnist")
    root = Path(root) if root is not None else FASHION_MNIST_DIR
    prefix = "t10k" if split == "test" else "train"
    image_path = root / f"{prefix}-images-idx3-ubyte.gz"
    label_path = root / f"{prefix}-labels-idx1-ubyte.gz"
    (n, h, w), pixels = _read_idx(image_path, 2051)
    (m,), labels = _read_idx(label_path, 2049)
    if n != m:
        raise DataError(f"{label_path}: {m} labels for {n} images in {image_path.name}")
    samples = []
    index = held_aside(list(range(n)), split)
    for j in seeded_subset(len(index), limit, seed, [labels[i] for i in index] if balance else None):
        i = index[j]
        label = labels[i]
        if label >= len(FASHION_MNIST_CLASSES):
            raise DataError(f"{label_path}: record {i}: label {label} out of range 0-9")
        name = FASHION_MNIST_CLASSES[label]
        image = Image.frombytes("L", (w, h), pixels[i * h * w:(i + 1) * h * w])
        samples.append(VQASample(image=image, question=FASHION_MNIST_QUESTION, answer=name,
                                 choices=FASHION_MNIST_CLASSES, category=name,
                                 id=f"fashion-mnist/{file_split(split)}/{i}",
                                 meta={"label": int(label), "dataset": "fashion-mnist", "split": split}))
    return samples


# --- batching -------------------------------------------------------------------------------
def _tokenizer(processor):
    return getattr(processor, "tokenizer", processor)


def end_of_turn(processor) -> str:
    """The text that closes an assistant turn (the tokenizer's EOS, ``<|im_end|>`` for SmolLM2)."""
    return _tokenizer(processor).eos_token or ""


def prompt_text(processor, sample: VQASample) -> str:
    """The chat-formatted prompt of one sample (image placeholder + question), ending where the answer starts,
    beginning as the model's sequences begin (`with_bos`)."""
    text = f"{sample.context}\n{sample.question}" if sample.context else sample.question
    content = ([{"type": "image"}] if sample.image is not None else []) + [{"type": "text", "text": text}]
    return with_bos(processor, processor.apply_chat_template([{"role": "user", "content": content}],
                                                             add_generation_prompt=True, tokenize=False))


def with_bos(processor, prompt: str) -> str:
    """`prompt` with the tokenizer's BOS token in front when the tokenizer begins every sequence with one and the
    chat template did not write it.

    Prompts are tokenised with ``add_special_tokens=False`` (a chat template writes its own special tokens), but
    some templates leave the BOS to the tokenizer: LLaVA-1.5's ``USER: <image>\n... ASSISTANT:`` is documented
    with the processor's default tokenisation, which puts Vicuna's ``<s>`` first (so did the original LLaVA
    training). Templates that write it (Gemma 3, Mistral 3) keep exactly one; tokenizers that add none (Qwen,
    SmolLM2's ChatML) are left alone."""
    tok = _tokenizer(processor)
    bos, bos_id = tok.bos_token, tok.bos_token_id
    if not bos or bos_id is None or prompt.startswith(bos):
        return prompt
    probe = tok("a", add_special_tokens=True)["input_ids"]
    return bos + prompt if probe and probe[0] == bos_id else prompt


#: processor outputs aligned with the tokens (one value per token): padded and extended with zeros
SEQUENCE_INPUTS = ("token_type_ids", "mm_token_type_ids")


def encode_prompts(processor, samples: list[VQASample]) -> tuple[list[list[int]], dict]:
    """Token ids of each sample's prompt (image tokens expanded) and the image inputs of the batch.

    The image inputs are every other tensor the processor returns (``pixel_values``, and per family
    ``image_sizes``, ``image_grid_thw``, ``pixel_attention_mask``...), except the token-aligned ones
    (``SEQUENCE_INPUTS``), which are returned per row like the ids. Empty without images."""
    prompts = [prompt_text(processor, s) for s in samples]
    with_image = [s.image for s in samples if s.image is not None]
    if with_image:  # the images of the samples that have one, in order (LLaVA convention); per sample when all do
        images = [[s.image] for s in samples] if len(with_image) == len(samples) else with_image
        out = processor(text=prompts, images=images, add_special_tokens=False)
        ids = [list(row) for row in out["input_ids"]]
        extra = {}
        for key, value in out.items():
            if key in ("input_ids", "attention_mask"):
                continue
            extra[key] = [list(row) for row in value] if key in SEQUENCE_INPUTS else _as_tensor(value)
        return ids, extra
    tok = _tokenizer(processor)
    return [tok(p, add_special_tokens=False)["input_ids"] for p in prompts], {}


def answer_ids(processor, text: str, end: bool = True) -> list[int]:
    """Token ids of an answer as the model must produce it after the prompt (+ the end-of-turn token)."""
    tok = _tokenizer(processor)
    ids = list(tok(text, add_special_tokens=False)["input_ids"])
    if end and tok.eos_token_id is not None:
        ids.append(tok.eos_token_id)
    return ids


def _as_tensor(x):
    import torch

    if torch.is_tensor(x):
        return x
    import numpy as np

    parts = [np.asarray(a) for a in x]
    longest = max((len(a) for a in parts if a.ndim), default=0)
    if len({a.shape for a in parts}) > 1 and all(a.ndim and a.shape[1:] == parts[0].shape[1:] for a in parts):
        # a different number of tiles per image (any-resolution families): zero tiles after the
        # real ones, as transformers batches them (the model reads the real count from image_sizes)
        parts = [np.concatenate([a, np.zeros((longest - len(a), *a.shape[1:]), a.dtype)]) for a in parts]
    array = np.stack(parts)
    return torch.from_numpy(array).float() if array.dtype.kind == "f" else torch.from_numpy(array)


def collate_vqa(processor, samples: list[VQASample], with_answer: bool = True,
                padding_side: str = "right") -> dict:
    """An image-text batch: ``input_ids, attention_mask, labels``, the image inputs (tensors).

    Each row is the chat-formatted prompt (``<|im_start|>user\\n<image>...\\nquestion<|im_end|>\\n
    <|im_start|>assistant\\n``) followed, when ``with_answer``, by the answer's tokens and the
    end-of-turn token. ``labels`` is -100 everywhere except those answer tokens (all -100
    without answers). Padding uses the tokenizer's pad token, on the right by default (use
    ``padding_side="left"`` for generation). Samples without an image (``image=None``) get
    no image tokens; ``pixel_values`` holds the images of the others in order, and is omitted
    when no sample has one. Every other image input of the family's processor is carried too
    (``image_sizes``, ``image_grid_thw``, ``pixel_attention_mask``...); token-aligned ones
    (``token_type_ids``...) are padded with zeros like the rows.
    """
    import torch

    if not samples:
        raise DataError("collate_vqa: empty batch")
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    prompts, image_inputs = encode_prompts(processor, samples)
    tok = _tokenizer(processor)
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    rows, label_rows = [], []
    for sample, ids in zip(samples, prompts):
        ans = answer_ids(processor, sample.answer) if with_answer else []
        rows.append(ids + ans)
        label_rows.append([-100] * len(ids) + ans)
    length = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), length), pad, dtype=torch.long)
    labels = torch.full((len(rows), length), -100, dtype=torch.long)
    attention = torch.zeros((len(rows), length), dtype=torch.long)
    for i, (r, lab) in enumerate(zip(rows, label_rows)):
        sl = slice(0, len(r)) if padding_side == "right" else slice(length - len(r), length)
        input_ids[i, sl] = torch.tensor(r)
        labels[i, sl] = torch.tensor(lab)
        attention[i, sl] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
    for key, value in image_inputs.items():
        if key in SEQUENCE_INPUTS:  # per token: zeros on the answer and the padding
            aligned = torch.zeros((len(rows), length), dtype=torch.long)
            for i, (r, v) in enumerate(zip(rows, value)):
                sl = slice(0, len(v)) if padding_side == "right" else slice(length - len(r), length - len(r) + len(v))
                aligned[i, sl] = torch.tensor(v)
            batch[key] = aligned
        else:
            batch[key] = value
    return batch
