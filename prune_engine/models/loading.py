"""Loading a model by its --model value (directory, hub id or embedded name): facts from config.json, processor, weights, identity.

Loading cannot go silently wrong: an unsupported family, the original (liuhaotian) LLaVA layout,
and weights that do not fill the architecture exactly (missing or unexpected keys) are one-line
ModelErrors. A model directory without an image processor loads with its tokenizer alone (text
calibration); asking it for image-text data says what is missing."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from efficientllava.prune_engine.models.adapter import ModelAdapter, ModelError
from efficientllava.prune_engine.models.embedded import EMBEDDED_SMOLLM2, embedded_smollm2_dir
from efficientllava.prune_engine.models.families import family_of, supported

EMBEDDED_MODELS = (EMBEDDED_SMOLLM2, "smol-llava")
# facts of the embedded models needed by the checks (their directories are assembled on first use)
_EMBEDDED_FACTS = {EMBEDDED_SMOLLM2: {"llava": False, "max_positions": 8192, "image_processor": None},
                   "smol-llava": {"llava": True, "max_positions": 8192, "image_processor": None}}
#: transformers' script that turns an original (liuhaotian) LLaVA checkpoint into the HF layout
LLAVA_CONVERSION = "transformers/models/llava/convert_llava_weights_to_hf.py"
_ORIGINAL_LLAVA_CLASSES = ("LlavaLlamaForCausalLM", "LlavaMistralForCausalLM", "LlavaMptForCausalLM",
                           "LlavaQwenForCausalLM")



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
    """{'llava': bool (an image-text model), 'family', 'max_positions', ..., 'image_processor': why the
    image processor is missing (None when present)} from the directory's files alone; None for hub ids."""
    kind = model_kind(spec)
    if kind == "embedded":
        return dict(_EMBEDDED_FACTS[spec])
    if kind == "hub":
        return None
    path = Path(spec).expanduser()
    cfg = _config_json(spec, path)
    check_supported(spec, cfg, path)
    family = family_of(cfg.get("model_type"))
    text = (cfg.get("text_config") or cfg) if family else cfg
    return {"llava": family is not None, "family": family.model_type if family else None,
            "max_positions": text.get("max_position_embeddings"),
            "vocab": text.get("vocab_size"), "hidden": text.get("hidden_size"),
            "heads": text.get("num_attention_heads"), "kv_heads": text.get("num_key_value_heads"),
            "layers": text.get("num_hidden_layers"),
            "intermediate": text.get("intermediate_size"),
            "image_processor": _missing_image_processor(spec, path) if family else None}


def _config_json(spec: str, path: Path) -> dict:
    cfg_file = path / "config.json"
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise ModelError(f"cannot read {cfg_file}") from None
    if not isinstance(cfg, dict):
        raise ModelError(f"{cfg_file}: not a JSON object")
    return cfg


def _weight_names(path: Path) -> list[str]:
    """Tensor names of a model directory, from its index file or its single safetensors file (headers only)."""
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (path / index).is_file():
            try:
                return list(json.loads((path / index).read_text()).get("weight_map", {}))
            except (OSError, json.JSONDecodeError):
                return []
    if (path / "model.safetensors").is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(path / "model.safetensors"), framework="pt") as f:
                return list(f.keys())
        except Exception:  # a broken file is reported when the weights are loaded
            return []
    return []


def check_supported(spec: str, cfg: dict, path: Path | None = None) -> None:
    """A one-line ModelError for the original LLaVA layout and for families the engine does not know."""
    model_type = cfg.get("model_type")
    architectures = [str(a) for a in cfg.get("architectures") or []]
    if model_type == "llava" and "text_config" not in cfg:
        original = (any(a in _ORIGINAL_LLAVA_CLASSES for a in architectures)
                    or any(k.startswith("mm_") for k in cfg)
                    or (path is not None and any(n.startswith("model.mm_projector.") for n in _weight_names(path))))
        if original:
            raise ModelError(f"'{spec}' is an original-format LLaVA checkpoint ({', '.join(architectures) or 'llava'}: "
                             "flat LLaMA keys with model.mm_projector); convert it to the transformers layout "
                             f"first with transformers' convert_llava_weights_to_hf.py ({LLAVA_CONVERSION})")
    if family_of(model_type) is None and "ForCausalLM" not in "".join(architectures):
        raise ModelError(f"'{spec}' is a {model_type or 'model of unknown type'} model "
                         f"({', '.join(architectures) or '?'}); supported: {supported()}, and LLaMA-family causal LMs")


def _missing_image_processor(spec: str, path: Path) -> str | None:
    """Why a model directory cannot give image inputs (None: it has an image processor)."""
    if (path / "preprocessor_config.json").is_file():
        return None
    try:
        if "image_processor" in json.loads((path / "processor_config.json").read_text()):
            return None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        pass
    return (f"{spec} has no image processor (no preprocessor_config.json, and no image_processor in "
            "processor_config.json; save the model's processor there with save_pretrained)")


def resolve_model_path(spec: str) -> str:
    """Map the CLI's --model value to something `from_pretrained` accepts."""
    if spec == EMBEDDED_SMOLLM2:
        return str(embedded_smollm2_dir())
    if spec == "smol-llava":
        from efficientllava.prune_engine.models.smol_llava import demo_model_dir  # built by the demo-model module

        return str(demo_model_dir())
    from efficientllava.prune_engine.models.loading import model_kind

    if model_kind(spec) == "dir":
        return str(Path(spec).expanduser())
    return spec  # a hub id: loading it needs network access (a cluster)


def _config(spec: str):
    from transformers import AutoConfig

    path = resolve_model_path(spec)
    if Path(path).is_dir():
        check_supported(spec, _config_json(spec, Path(path)), Path(path))
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot read the config of '{spec}': {str(exc).splitlines()[0]}") from None
    check_supported(spec, {"model_type": config.model_type, "architectures": config.architectures,
                           "text_config": getattr(config, "text_config", None)})
    return path, config


def text_only_reason(spec: str, processor) -> str | None:
    """Why `processor` (from load_processor) cannot make image-text batches for `spec`; None when it can."""
    if hasattr(processor, "image_processor"):
        return None
    path = resolve_model_path(spec)
    if family_of(_config(spec)[1].model_type) is None:
        return f"{spec} is a text-only model"
    reason = _missing_image_processor(spec, Path(path)) if Path(path).is_dir() else None
    return reason or _PROCESSOR_PROBLEMS.get(spec) or f"{spec}: its processor has no image processor"


_PROCESSOR_PROBLEMS: dict[str, str] = {}  # spec -> why its full processor could not be built


def load_processor(spec: str):
    """The tokenizer (causal LMs) or processor (image-text families) of a model, without loading its weights.

    An image-text model directory without an image processor, or whose processor transformers cannot
    build here (some need torchvision), gives its tokenizer alone: text calibration works, and
    `text_only_reason` says what image-text data would need."""
    from transformers import AutoProcessor, AutoTokenizer

    path, config = _config(spec)
    if family_of(config.model_type) is None:
        return AutoTokenizer.from_pretrained(path)
    if Path(path).is_dir() and _missing_image_processor(spec, Path(path)):
        return AutoTokenizer.from_pretrained(path)
    try:
        return AutoProcessor.from_pretrained(path)
    except Exception as exc:  # transformers raises many types here
        import importlib.util

        if importlib.util.find_spec("torchvision") is None:
            _PROCESSOR_PROBLEMS[spec] = (f"transformers cannot build the processor of '{spec}' without torchvision "
                                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                                         "pip install torchvision")
            return AutoTokenizer.from_pretrained(path)
        raise ModelError(f"cannot load the processor of '{spec}': "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def _model_class(config):
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, LlavaForConditionalGeneration

    if config.model_type == "llava":
        return LlavaForConditionalGeneration
    return AutoModelForImageTextToText if family_of(config.model_type) else AutoModelForCausalLM


def _check_loading_info(spec: str, info: dict) -> None:
    """Missing, unexpected or mismatched weights are an error naming the first few."""
    problems = []
    for key, what in (("missing_keys", "missing"), ("unexpected_keys", "unexpected"),
                      ("mismatched_keys", "of the wrong shape")):
        names = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get(key) or [])
        if names:
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            problems.append(f"{len(names)} {what} ({shown})")
    if problems:
        raise ModelError(f"the weights of '{spec}' do not fit its architecture: " + "; ".join(problems)
                         + " (a different layout, or an incomplete checkpoint)")


def load_model(spec: str, dtype: torch.dtype | str = "auto", device: str | None = None,
               processor=None, state_dict: dict | None = None,
               compute_device: str | None = None) -> tuple[ModelAdapter, object]:
    """Load a model (directory, hub id, 'smollm2' or 'smol-llava') and its tokenizer/processor.

    `dtype`: a torch dtype or one of precision.DTYPES; 'auto' is decided by `compute_device` (where
    the model will run; default `device`): float16 on a GPU, float32 on a CPU.

    With `state_dict` (e.g. weights shared through the Ray object store) the weights are not read
    from disk: the model is built from its config without initialisation and the tensors are copied in.
    """
    from efficientllava.prune_engine.precision import model_dtype

    path, config = _config(spec)
    dtype = model_dtype(dtype, compute_device or device or "cpu")
    cls = _model_class(config)
    if state_dict is None:
        model, info = cls.from_pretrained(path, dtype=dtype, output_loading_info=True)
        _check_loading_info(spec, info)
    else:
        from transformers.initialization import no_init_weights

        with no_init_weights():
            model = cls._from_config(config, dtype=dtype) if hasattr(cls, "_from_config") \
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
