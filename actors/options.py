"""The command-line options of the run settings, declared once: every command that takes a setting gets its flag from here.

A setting is a dotted key of the composed configuration (``search.population``, ``data.calib``,
``ray.actors``, ``heldout.vqa``...): `SETTINGS` gives each one its flag and help, the default
shown in the help comes from the config classes and presets themselves (actors/config.py,
prune_engine/config.py), and :func:`with_settings` adds the chosen settings as options to a typer
command, which receives them as one ``settings`` dict (dotted key -> value, None when not given).
So `search`, `tune`, `demo`, `resume` and `prune` list the same option, with the same help, for
the same setting.
"""
from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import typer

MODEL_HELP = "Model: a local directory, a hub id (org/name, needs network), 'smollm2' or 'smol-llava' (embedded)."
# help texts are rich markup: a literal '[' must be written '\\[' or rich takes it for a style tag
TEXT_HELP = ("Text: 'wiki:calib' / 'wiki:eval' (embedded Wikipedia, disjoint articles), a .txt, .json or .jsonl "
             "file, or hf:DATASET with optional :CONFIG, @SPLIT and #COLUMN.")
VQA_HELP = ("easy-vqa\\[:split], fashion-mnist\\[:split], or scienceqa / vizwiz / mmvet / llava-bench "
            "\\[:split] from the hub, or :FILE (a local .parquet/.json/.jsonl in the hub schema), "
            "e.g. scienceqa:sqa.parquet; a comma-separated mix is allowed.")


@dataclass(frozen=True)
class Setting:
    key: str  # dotted: section.leaf
    type: type
    help: str
    flag: Optional[str] = None  # default: --leaf with dashes
    metavar: Optional[str] = None

    @property
    def section(self) -> str:
        return self.key.partition(".")[0]

    @property
    def leaf(self) -> str:
        return self.key.partition(".")[2]

    @property
    def param(self) -> str:  # the Python parameter: section_leaf, unique across sections
        return self.key.replace(".", "_")

    @property
    def flags(self) -> list[str]:
        return [self.flag or "--" + self.leaf.replace("_", "-")]


SETTINGS: dict[str, Setting] = {s.key: s for s in (
    Setting("engine.model", str, MODEL_HELP),
    Setting("search.target", float, "Target mean sparsity p0."),
    Setting("search.population", int, "Policies per generation."),
    Setting("search.generations", int, "Generations tau."),
    Setting("search.elites", int, "Best policies kept unchanged per generation (at most population - 1; a "
            "population of at most 4 chosen without elites keeps population - 1)."),
    Setting("search.offspring", int, "Children per generation screened on a slice of the proxy data "
            "(database mode; 0: none)."),
    Setting("search.survivors", int, "Multi-step selection: the best screened children ranked again on a larger "
            "slice (engine.stage_nsamples text segments, engine.stage_mm_samples image-text samples; unset: all the "
            "fitness data) before the best fill the population (0: one screening stage)."),
    Setting("search.rerank", int, "After the last generation, prune its best N policies and the uniform policy as "
            "the final model is pruned (sequentially, from the dense model) and export the best of them on all proxy "
            "data: the search ranks stitched candidates, the user gets the sequential prune (0: off; N + 1 "
            "sequential prunes, spread over the evaluators)."),
    Setting("search.time_budget_s", float, "Wall-clock seconds of the search, counted once the actors are up: it "
            "stops between generations when they are spent; with search.offspring_budget (the default preset) the "
            "screened children per generation are sized to end within them.", flag="--time-budget", metavar="S"),
    Setting("search.eta", float, "SRM weight eta in F = -L_proxy - eta*s*G; 0 = Auto w/o Gen."),
    Setting("search.seed", int, "Seed of the search and of the proxy-data draw."),
    Setting("search.granularity", str, "block | matrix."),
    Setting("search.projector_mode", str, "Search-space evolution: weighted | uniform | off."),
    Setting("search.projector_steps", int, "Projector mini-batch steps per generation."),
    Setting("search.projector_lr", float, "Projector learning rate."),
    Setting("search.projector_max_change", float, "Trust region of the projector step: a generation's update is "
            "scaled down to at most this relative change ||dW_p|| / ||W_p|| (default: unbounded)."),
    Setting("engine.mode", str, "sequential (prune every candidate) | database (prune every block at every "
            "level once, stitch candidates)."),
    Setting("engine.loss", str, "Token loss of the fitness: kl (to the dense model) | ce (to the labels)."),
    Setting("engine.threads", int, "Torch threads per evaluator (default: int(cpus_per_actor))."),
    Setting("engine.dtype", str, "Model dtype: auto (float16 on a GPU, float32 on a CPU) | float32 | bfloat16 | "
            "float16; Hessians, OBS updates and the projector's weights and gradient stay in float32."),
    Setting("engine.offload", bool, "Keep the decoder blocks in CPU memory and move each to --device only while "
            "it runs (a model larger than the GPU).", flag="--offload"),
    Setting("engine.offload_dir", str, "Local directory for the dense weight copies and the level database as "
            "memory-mapped files (default: CPU memory)."),
    Setting("data.calib", str, "Calibration / proxy text. " + TEXT_HELP),
    Setting("data.nsamples", int, "Calibration / proxy text segments."),
    Setting("data.seqlen", int, "Tokens per text segment."),
    Setting("data.mm_calib", str, "Image-text calibration / proxy data (LLaVA; enables the projector step): "
            + VQA_HELP),
    Setting("data.mm_samples", int, "Image-text calibration / proxy samples."),
    Setting("data.mm_balance", bool, "Draw the image-text samples evenly over their answers."),
    Setting("data.mm_rephrase", float, "Share of the image-text samples asked in other wordings (the train "
            "templates of prune_engine/data/rephrase.py): paraphrase augmentation of the proxy questions."),
    Setting("data.batch_size", int, "Calibration batch size (default: all at once)."),
    Setting("data.allow_eval_split", bool, "Calibrate on an evaluation split anyway (it leaks into the model; "
            "refused by default).", flag="--allow-eval-split"),
    Setting("ray.address", str, "Ray cluster: 'auto', host:port or ray://... (default: start a local cluster)."),
    Setting("ray.actors", int, "Evaluator actors (default: one per GPU, else one per --cpus-per-actor CPUs)."),
    Setting("ray.gpus_per_actor", float, "GPUs per evaluator actor, at most 1: an evaluator runs its model on "
            "one device; a fraction such as 0.5 shares a GPU (default: 1 when the cluster has GPUs, else 0)."),
    Setting("ray.cpus_per_actor", float, "CPUs per evaluator actor."),
    Setting("ray.memory_per_actor_gb", float, "Host memory per evaluator actor in GiB, reserved in its Ray bundle "
            "(default: estimated from the checkpoint's size, the engine mode and the device; 0: reserve none).",
            metavar="GIB"),
    Setting("ray.max_restarts", int, "Restarts per actor after a crash (-1: unlimited)."),
    Setting("ray.num_cpus", int, "CPUs of the local cluster (without --address)."),
    Setting("heldout.segments", int, "Held-out text segments per text set (Wikipedia; Python docs, shifted).", flag="--eval-segments"),
    Setting("heldout.seqlen", int, "Tokens per held-out segment.", flag="--eval-seqlen"),
    Setting("heldout.vqa", int, "Held-out questions per VQA set (LLaVA models).", flag="--eval-vqa"),
)}

PANELS = {"engine": "Model and engine", "search": "Search", "data": "Calibration / proxy data", "ray": "Ray",
          "heldout": "Held-out evaluation"}

#: what a search run takes (search, tune and demo share them; tune sweeps eta itself)
RUN = tuple(k for k in SETTINGS if k.split(".")[0] in ("engine", "search", "data", "ray"))
DATA = tuple(k for k in SETTINGS if k.startswith("data."))
OFFLOAD = ("engine.offload", "engine.offload_dir")
DTYPE = ("engine.dtype",)
RAY = tuple(k for k in SETTINGS if k.startswith("ray."))
HELDOUT = tuple(k for k in SETTINGS if k.startswith("heldout."))


def default_text(key: str, presets: bool, override: Any = None) -> str:
    """' (default: X)' from the config classes, with the paper preset's value where it differs."""
    from efficientllava.actors.config import PRESETS, setting_default

    if override is not None:
        return f" (default: {override})"
    if key.startswith("heldout."):
        from efficientllava.prune_engine.config import HeldoutConfig

        return f" (default: {HeldoutConfig.model_fields[key.partition('.')[2]].default})"
    value = setting_default(key, "default" if presets else None)
    if value is None or isinstance(value, bool):
        return ""
    text = f" (default: {value}"
    if presets and setting_default(key, "paper") != value and key in PRESETS["paper"]:
        text += f"; paper preset: {setting_default(key, 'paper')}"
    return text + ")"


def _parameter(setting: Setting, presets: bool, override: Any) -> inspect.Parameter:
    help_text = setting.help
    if "(default:" not in help_text and (setting.key != "engine.model" or override is not None):
        help_text += default_text(setting.key, presets, override)
    if setting.type is bool:
        option = typer.Option(False, *setting.flags, help=help_text, rich_help_panel=PANELS[setting.section])
        annotation: Any = bool
    else:
        option = typer.Option(None, *setting.flags, help=help_text, metavar=setting.metavar,
                              rich_help_panel=PANELS[setting.section])
        annotation = Optional[setting.type]
    return inspect.Parameter(setting.param, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)


def with_settings(keys: Iterable[str], presets: bool = True, defaults: dict[str, Any] | None = None,
                  exclude: Iterable[str] = ()) -> Callable:
    """Add the options of `keys` to a typer command; it receives them as ``settings={key: value or None}``.

    `presets`: the command starts from a preset (help shows the default preset's values); `defaults`:
    this command's own defaults (shown in the help; applied by the command itself)."""
    chosen = [SETTINGS[k] for k in keys if k not in set(exclude)]
    defaults = defaults or {}

    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command)
        own = [p for p in signature.parameters.values() if p.name != "settings"]
        hints = typing.get_type_hints(command)
        added = [_parameter(s, presets, defaults.get(s.key)) for s in chosen]

        @functools.wraps(command)
        def wrapper(**kwargs):
            settings = {}
            for s in chosen:
                value = kwargs.pop(s.param)
                settings[s.key] = (True if value else None) if s.type is bool else value
            return command(settings=settings, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=[p.replace(annotation=hints.get(p.name, p.annotation))
                                                              for p in own] + added)
        wrapper.__annotations__ = {p.name: p.annotation for p in wrapper.__signature__.parameters.values()}
        return wrapper

    return decorate


# ---- the sources of a run's settings, shared by search / tune / demo ----------------------
CONFIG_HELP = "YAML/TOML run config with sections search:, engine:, data:, ray: (--set and flags win)."
SET_HELP = "Any setting as section.key=value, e.g. search.elites=2 or data.nsamples=8 (repeatable)."
PRESET_HELP = ("Starting settings: 'default' (many children screened on a slice of the proxy data per "
               "generation; best held-out quality per minute measured here), 'quality' (the default's search "
               "for 8 generations without the SRM term: 15 min to an hour on 2 CPU cores; for high sparsity "
               "such as 0.7, where it had the lowest perplexity), 'paper' (16 policies x 10 generations, eta "
               "0.5, k 5, every candidate on all data) or 'none' (built-in defaults); --config, --set and flags "
               "override it.")

ConfigOption = typer.Option(None, "--config", help=CONFIG_HELP)
# options of the one-model commands (prune, eval ppl, eval vqa)
ModelOption = typer.Option(..., "--model", help=MODEL_HELP)
DeviceOption = typer.Option("cpu", "--device", help="Device, e.g. cpu or cuda:0.")
JsonOption = typer.Option(None, "--json", help="Also write the result as JSON here.")
SetOption = typer.Option(None, "--set", metavar="KEY=VALUE", help=SET_HELP)
PresetOption = typer.Option("default", "--preset", help=PRESET_HELP)


def run_config(settings: dict[str, Any], config: Path | None, sets: list[str] | None, preset: str,
               require_model: bool = True):
    """The RunConfig of a command's settings (the heldout.* ones are not part of it)."""
    from efficientllava.actors.config import RunConfig, read_sections
    from efficientllava.search.config import parse_overrides

    run_settings = {k: v for k, v in settings.items() if not k.startswith("heldout.")}
    if require_model and run_settings.get("engine.model") is None:
        in_file = config is not None and "model" in (read_sections(config).get("engine") or {})
        if not in_file and "engine.model" not in parse_overrides(sets or []):
            raise ValueError("missing --model (or engine.model in --config)")
    return RunConfig.load(config, run_settings, sets, preset=preset)


def heldout_config(settings: dict[str, Any], seed: int, **defaults):
    from efficientllava.prune_engine.config import HeldoutConfig

    chosen = {k.partition(".")[2]: v for k, v in settings.items() if k.startswith("heldout.") and v is not None}
    return HeldoutConfig(**{**defaults, **chosen, "seed": seed})
