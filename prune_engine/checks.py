"""Cheap checks of command-line input, run before any weights, data or Ray are loaded (one-line errors)."""
from __future__ import annotations

import functools
import os
from pathlib import Path

from efficientllava.prune_engine.models.loading import model_facts


class InputError(ValueError):
    """Bad command-line input found before any expensive work (one-line message)."""


def check_device(device: str) -> None:
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise InputError(f"--device {device}: not a device (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type not in ("cpu", "mps"):
        raise InputError(f"--device {device}: unsupported device type '{dev.type}' (use cpu or cuda)")


def check_positive(**values: int | None) -> None:
    for flag, value in values.items():
        if value is not None and value < 1:
            raise InputError(f"--{flag.replace('_', '-')} must be a positive integer, got {value}")


def check_seqlen(spec: str, seqlen: int) -> None:
    facts = model_facts(spec)
    limit = (facts or {}).get("max_positions")
    if limit and seqlen > limit:
        raise InputError(f"--seqlen {seqlen} is beyond the model's context ({limit} positions, "
                         f"max_position_embeddings); use --seqlen {limit} or less")


def check_text_budget(spec: str, n: int, seqlen: int, flag: str = "--calib") -> None:
    """A necessary condition, cheap: the text has at least one character per token needed (hub text is
    checked where it is loaded)."""
    from efficientllava.prune_engine.data.text import parse_text_spec

    if parse_text_spec(spec).kind == "hf":
        return
    chars = _characters(spec, *_stamp(spec))
    if chars < n * seqlen:
        raise InputError(f"{flag} {spec}: too little text ({chars} characters) for {n} x {seqlen} = {n * seqlen} "
                         "tokens; lower --nsamples or --seqlen")


def _stamp(spec: str) -> tuple:
    """Size and mtime of a text file (so the cache below notices a changed file)."""
    from efficientllava.prune_engine.data.text import parse_text_spec

    path = Path(parse_text_spec(spec).path or "")
    return (path.stat().st_size, path.stat().st_mtime_ns) if path.is_file() else (None, None)


@functools.lru_cache(maxsize=16)
def _characters(spec: str, size, mtime) -> int:  # noqa: ARG001  (cache key)
    from efficientllava.prune_engine.data.text import load_text

    return sum(len(d.text) for d in load_text(spec))


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable), None when unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_forward_memory(spec: str, batch_size: int, seqlen: int, device: str) -> None:
    """Refuse a forward pass whose activations (fp32 logits, attention scores) cannot fit in memory."""
    facts = model_facts(spec)
    if not facts or not facts.get("vocab") or device != "cpu":
        return
    tokens = batch_size * seqlen
    need = tokens * facts["vocab"] * 4 * 3  # logits, their fp32 copy, the log-softmax of the loss
    need += batch_size * (facts.get("heads") or 1) * seqlen * seqlen * 4  # one layer's attention scores
    free = available_memory()
    if free is not None and need > free:
        raise InputError(f"--batch-size {batch_size} x --seqlen {seqlen} needs about {need / 2**30:.1f} GiB for "
                         f"one forward pass; {free / 2**30:.1f} GiB are available: lower --batch-size or --seqlen")


def _check_ancestor(path: Path, flag: str) -> None:
    """The nearest existing ancestor of `path` is a writable directory."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{flag} {path}: {parent} is a file, not a directory")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise InputError(f"{flag} {path}: {parent} is not writable")
            return


def check_output_dir(out: Path, flag: str = "--out") -> None:
    """A directory that can be created: no existing file on the way, a writable existing ancestor."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{flag} {out}: a file is in the way (expected a directory)")
    _check_ancestor(out, flag)


def check_output_file(path: Path, flag: str, overwrite: bool = True) -> None:
    """A file that can be written: its folder exists (or can be made), it is not a directory."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{flag} {path}: a directory, expected a file name")
    if path.exists() and not overwrite:
        raise InputError(f"{flag} {path}: the file exists; choose a new name")
    _check_ancestor(path, flag)
