"""Loading a model by its --model value (directory, hub id or embedded name): facts from config.json, processor, weights, identity."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from prune_engine.models.adapter import ModelAdapter, ModelError
from prune_engine.models.embedded import EMBEDDED_SMOLLM2, embedded_smollm2_dir

EMBEDDED_MODELS = (EMBEDDED_SMOLLM2, "smol-llava")
# facts of the embedded models needed by the checks (their directories are assembled on first use)
_EMBEDDED_FACTS = {EMBEDDED_SMOLLM2: {"llava": False, "max_positions": 8192},
                   "smol-llava": {"llava": True, "max_positions": 8192}}



def model_kind(spec: str) -> str:
    """'embedded', 'dir' or 'hub' for a --model value; a path-like value that does not exist is an error.

    A value is path-like when it starts with '.', '/' or '~', has more than one '/', or its first
    component is an existing local directory (`models/tiny-lama` next to a `models/` folder)."""
    if spec in EMBEDDED_MODELS:
        return "embedded"
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{spec}: not a model directory (no config.json)")
        return "dir"
    if path.exists():
        raise ModelError(f"{spec}: a file, not a model directory")
    first = spec.split("/", 1)[0]
    path_like = spec.startswith((".", "/", "~")) or spec.count("/") > 1 or ("/" in spec and Path(first).is_dir())
    if path_like:
        raise ModelError(f"no such directory: {spec} (check the path; hub ids look like org/name)")
    if spec.count("/") == 1 and all(spec.split("/")):
        return "hub"
    raise ModelError(f"unknown model '{spec}': not a directory, a hub id (org/name), "
                     f"or one of {', '.join(EMBEDDED_MODELS)}")


def absolute_model(spec: str) -> str:
    """A local model directory as an absolute path (a run must resume from any folder); others unchanged."""
    return str(Path(spec).expanduser().resolve()) if model_kind(spec) == "dir" else spec


def model_facts(spec: str) -> dict | None:
    """{'llava': bool, 'max_positions': int | None, ...} from config.json alone; None for hub ids."""
    kind = model_kind(spec)
    if kind == "embedded":
        return dict(_EMBEDDED_FACTS[spec])
    if kind == "hub":
        return None
    cfg_file = Path(spec).expanduser() / "config.json"
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, json.JSONDecodeError):
        raise ModelError(f"cannot read {cfg_file}") from None
    text = cfg.get("text_config") or cfg if cfg.get("model_type") == "llava" else cfg
    return {"llava": cfg.get("model_type") == "llava", "max_positions": text.get("max_position_embeddings"),
            "vocab": text.get("vocab_size"), "hidden": text.get("hidden_size"),
            "heads": text.get("num_attention_heads"), "layers": text.get("num_hidden_layers"),
            "intermediate": text.get("intermediate_size")}


def resolve_model_path(spec: str) -> str:
    """Map the CLI's --model value to something `from_pretrained` accepts."""
    if spec == EMBEDDED_SMOLLM2:
        return str(embedded_smollm2_dir())
    if spec == "smol-llava":
        from prune_engine.models.smol_llava import demo_model_dir  # built by the demo-model module

        return str(demo_model_dir())
    from prune_engine.models.loading import model_kind

    if model_kind(spec) == "dir":
        return str(Path(spec).expanduser())
    return spec  # a hub id: loading it needs network access (a cluster)


def _config(spec: str):
    from transformers import AutoConfig

    path = resolve_model_path(spec)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the config of '{spec}': {str(exc).splitlines()[0]}") from None
    if config.model_type != "llava" and "ForCausalLM" not in "".join(config.architectures or []):
        raise ModelError(f"'{spec}' is a {config.model_type} model ({', '.join(config.architectures or ['?'])}); "
                         "supported: LLaVA (LlavaForConditionalGeneration) and LLaMA-family causal LMs")
    return path, config


def load_processor(spec: str):
    """The tokenizer (causal LMs) or processor (LLaVA) of a model, without loading its weights."""
    from transformers import AutoProcessor, AutoTokenizer

    path, config = _config(spec)
    return AutoProcessor.from_pretrained(path) if config.model_type == "llava" else AutoTokenizer.from_pretrained(path)


def load_model(spec: str, dtype: torch.dtype | str = "auto", device: str | None = None,
               processor=None, state_dict: dict | None = None) -> tuple[ModelAdapter, object]:
    """Load a model (directory, hub id, 'smollm2' or 'smol-llava') and its tokenizer/processor.

    With `state_dict` (e.g. weights shared through the Ray object store) the weights are not read
    from disk: the model is built from its config without initialisation and the tensors are copied in.
    """
    from transformers import AutoModelForCausalLM, LlavaForConditionalGeneration

    path, config = _config(spec)
    if dtype == "auto":
        dtype = torch.float32 if (device or "cpu") == "cpu" else torch.float16
    cls = LlavaForConditionalGeneration if config.model_type == "llava" else AutoModelForCausalLM
    if state_dict is None:
        model = cls.from_pretrained(path, dtype=dtype)
    else:
        from transformers.initialization import no_init_weights

        with no_init_weights():
            model = cls._from_config(config, dtype=dtype) if cls is LlavaForConditionalGeneration \
                else cls.from_config(config, dtype=dtype)
        model.tie_weights()
        model.load_state_dict(state_dict, strict=True)
    model.eval().requires_grad_(False)
    if device:
        model.to(device)
    return ModelAdapter(model, name=spec), processor or load_processor(spec)


def model_identity(adapter: ModelAdapter, spec: str) -> dict:
    """A JSON-able identity for checkpoints: name, architecture, sizes and a weight fingerprint."""
    h = hashlib.sha256()
    # every tensor of the model (language model, vision tower, projector): name, shape, the first
    # 1024 values and 1024 values strided over the whole tensor; a swapped part changes it
    for name, p in sorted(adapter.model.state_dict().items()):
        flat = p.detach().reshape(-1)
        stride = max(1, flat.numel() // 1024)
        h.update(f"{name}:{tuple(p.shape)}".encode())
        h.update(flat[:1024].float().cpu().numpy().tobytes())
        h.update(flat[::stride][:1024].float().cpu().numpy().tobytes())
    return {"model": spec, "architecture": type(adapter.model).__name__, "blocks": adapter.num_blocks,
            "params": sum(sum(c.values()) for c in adapter.param_counts()), "fingerprint": h.hexdigest()[:16]}
