"""The host memory an evaluator actor asks Ray for (its bundle's ``memory``): the setting, or an estimate from the checkpoint."""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path

GiB = 1 << 30
#: an allowance for the Python / torch / transformers / Ray worker runtime of one actor (measured:
#: 0.6 GiB resident for an actor on a tiny model), its proxy batches, the KL teacher's
#: log-probabilities, the Hessians and the activations of a block pass
RUNTIME_BYTES = int(1.5 * GiB)


def estimate_actor_memory(parameters: int | None, mode: str, levels: int, gpu: bool, offload: bool = False,
                          on_disk: bool = False, width: int | None = None) -> int | None:
    """Bytes of host memory one evaluator actor needs (None when the parameter count is unknown).

    The actors hold the model in engine.dtype, `width` bytes per parameter (default: the automatic
    dtype, fp32 on CPU and fp16 on a GPU; actors/evaluator_pool.py loads the weights so):
    with W = parameters x that width,

    * CPU actor: the model: W;
    * GPU actor: host memory keeps one copy of the weights (the shared dense weights it is built
      from): W; with `offload` the decoder blocks live in host memory too: + W;
    * the pruner's dense copy of the linears (approximated as the whole model), kept off the
      device: + W, unless `on_disk` (engine.offload_dir: memory-mapped files);
    * database mode adds the level database, kept off the device: one pruned copy of the
      language model's linears per level, approximated as ``levels`` x W (an overestimate: the
      embeddings and the vision tower are not in it, and several actors on one node share their
      parts through the object store; a restarted actor builds all of it itself), unless `on_disk`;
    * plus RUNTIME_BYTES.
    """
    if parameters is None:
        return None
    weights = parameters * (width or (2 if gpu else 4))
    copies = 1 + (1 if gpu and offload else 0) + (0 if on_disk else 1 + (levels if mode == "database" else 0))
    return RUNTIME_BYTES + copies * weights


def _dtype_width(path: Path) -> int:
    """Bytes per parameter in a .bin checkpoint, from config.json (fp16 when it does not say: conservative)."""
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return 2
    text = cfg.get("text_config") or {}
    dtype = cfg.get("dtype") or cfg.get("torch_dtype") or text.get("dtype") or text.get("torch_dtype")
    return 4 if dtype == "float32" else 2


def _safetensors_parameters(file: Path) -> int:
    """Parameters in a .safetensors file, from its header alone."""
    with open(file, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    return sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")


def checkpoint_parameters(path: str | Path) -> int | None:
    """Parameters of the checkpoint in a model directory: the headers of its *.safetensors files, else
    the sizes of its *.bin files over their dtype's width; None when it has neither."""
    path = Path(path)
    if not path.is_dir():
        return None
    safetensors = sorted(path.glob("*.safetensors"))
    if safetensors:
        try:
            return sum(_safetensors_parameters(f) for f in safetensors)
        except (OSError, ValueError, KeyError, struct.error):
            return None
    bins = sorted(path.glob("*.bin"))
    if bins:
        return sum(f.stat().st_size for f in bins) // _dtype_width(path)
    return None


def model_parameters(model: str) -> int | None:
    """Parameters of an engine.model value, read on this machine: a local directory, or an embedded
    model ('smollm2', 'smol-llava'; its directory is assembled on first use, as loading does);
    None for a hub id or anything unreadable (then nothing is requested)."""
    from efficientllava.prune_engine.models.loading import EMBEDDED_MODELS, model_kind, resolve_model_path

    try:
        if model not in EMBEDDED_MODELS and model_kind(model) != "dir":
            return None
        return checkpoint_parameters(resolve_model_path(model))
    except Exception:  # noqa: BLE001  (never break a run: a model error is reported by the actors, in one line)
        return None


def actor_memory(setting_gb: float | None, model: str, mode: str, levels: int, gpu: bool, offload: bool = False,
                 on_disk: bool = False, width: int | None = None) -> tuple[int, str]:
    """(bytes to request per evaluator actor, how: 'set' | 'estimated' | 'none'); 0 bytes: request none.

    `setting_gb`: ray.memory_per_actor_gb (GiB; 0: none; None: the estimate)."""
    if setting_gb is not None:
        return int(setting_gb * GiB), ("set" if setting_gb > 0 else "none")
    estimate = estimate_actor_memory(model_parameters(model), mode, levels, gpu, offload, on_disk, width)
    return (estimate, "estimated") if estimate else (0, "none")
