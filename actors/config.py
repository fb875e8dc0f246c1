"""The one configuration of a run: ``RunConfig = search + engine + data + ray``, composed, validated once, saved.

* ``search``: :class:`search.SearchConfig` (policy space, GA, fitness, projector step);
* ``engine``: :class:`prune_engine.config.EngineConfig` (model, pruning mode, fitness loss, screening);
* ``data``: :class:`prune_engine.config.DataConfig` (calibration = proxy data);
* ``ray``: :class:`RayOptions` (cluster address, actors, GPUs/CPUs per actor, restarts).

Built from a preset, then a YAML/TOML file with those sections, then ``--set``, then CLI flags
(actors/options.py derives the flags of every command from this one table of settings), validated
completely before Ray starts (one-line :class:`ConfigError`), and saved with the run: the search
section as the checkpoint's search config, the engine, data and Ray sections as its app slot
(:meth:`RunConfig.app`; ``app.yaml`` and every ``state.json``), so the run directory alone rebuilds
the run (``efficientllava resume RUN_DIR``, :meth:`RunConfig.from_saved`). The Ray section is
runtime-only: a resumed run may use another cluster, actor count or GPU share without changing its
result.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from efficientllava.prune_engine.config import DataConfig, EngineConfig
from efficientllava.search.config import ConfigError, SearchConfig, parse_overrides, read_config_file
from efficientllava.search.policy import levels_of

SECTIONS = ("search", "engine", "data", "ray")
KINDS = {"search": SearchConfig, "engine": EngineConfig, "data": DataConfig}

#: Named starting points for a new run (a config file, --set and flags override them).
#: paper: the paper's search (16 policies x 10 generations, eta 0.5, k = 5), every candidate on the
#:   whole fitness set, in database mode (a level database built once, candidates stitched); as in
#:   the paper, a few proxy samples score the candidates (8 text segments + the image-text samples)
#:   while all calibration data (32 x 256 text tokens + the image-text samples) builds the Hessians.
#: none: the built-in default of every setting (SearchConfig, EngineConfig, DataConfig).
#: default: EvoPress-style economics, measured best held-out quality per wall-clock minute here:
#:   many children screened per generation on a small slice of the proxy data (in bfloat16 where the
#:   hardware is fast at it), survivors on all of it; 250 children a generation give >= 500 candidate
#:   evaluations in the demo's time on 2 cores (benchmarks/search_cost.py). Given a time budget
#:   (--time-budget; the demo sets one), the children per generation are sized to fit it from what a
#:   screened child and a generation cost on the machine at hand (at most 250).
PRESETS: dict[str, dict[str, Any]] = {
    "none": {},
    # Algorithm 1 as the paper writes it (docs/method.md "The paper preset"): 16 policies x 10 generations, top 5
    # kept, eta 0.5 on G as written (no scale s), the task loss (cross-entropy) on the 64 image-text proxy samples,
    # every candidate pruned layer-sequentially, the projector trained on the c_m-weighted loss of the candidates on
    # all 64 samples, no guard, no screening, a random first population
    "paper": {"search.population": 16, "search.generations": 10, "search.elites": 5, "search.eta": 0.5,
              "search.offspring": 0, "search.init": "random", "search.srm_scale": 1.0, "search.mm_weight": 1.0,
              "search.neighbours": 5, "search.projector_mode": "weighted", "search.projector_guard": False,
              "engine.mode": "sequential", "engine.loss": "ce", "engine.fitness_nsamples": 0,
              "engine.monitor_samples": 0, "data.mm_samples": 64},
    "default": {"search.population": 8, "search.generations": 3, "search.elites": 3, "search.eta": 0.5,
                "search.init": "uniform", "search.tolerance": 0.0,
                "search.offspring": 250, "search.offspring_budget": True, "engine.mode": "database",
                "engine.fitness_nsamples": 4, "engine.screen_nsamples": 1,
                "engine.screen_mm_samples": 4},
}


def setting_default(key: str, preset: str | None = None) -> Any:
    """The value a dotted setting takes when nobody sets it: the preset's, else the section's default."""
    if preset and key in PRESETS[preset]:
        return PRESETS[preset][key]
    section, _, leaf = key.partition(".")
    kind = KINDS.get(section, RayOptions)
    field = kind.model_fields[leaf]
    return field.default


def _validation_message(section: str, err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"])
    if e["type"] == "extra_forbidden":
        return f"invalid {section} config: unknown key '{loc}'"
    msg = str(e["msg"]).removeprefix("Value error, ")
    return f"invalid {section} config: {loc + ': ' if loc else ''}{msg}".replace("\n", " ")


class RayOptions(BaseModel):
    """Where and how the evaluator actors run (runtime only: never changes the result)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: Optional[str] = Field(None, description="None: start a local cluster; 'auto', 'host:port' or 'ray://...'")
    actors: Optional[int] = Field(None, ge=1,
                                  description="evaluator actors (default: one per GPU, else per cpus_per_actor CPUs)")
    gpus_per_actor: Optional[float] = Field(None, ge=0,
                                            description="GPUs per actor, at most 1 (default: 1 when the cluster has "
                                            "GPUs, else 0)")
    cpus_per_actor: float = Field(1.0, gt=0)
    memory_per_actor_gb: Optional[float] = Field(None, ge=0,
                                                 description="host memory per actor in GiB, in its bundle (None: "
                                                 "estimated from the checkpoint, actors/memory_request.py; 0: none)")
    gpu_memory_gb: Optional[float] = Field(None, gt=0, description="memory of each GPU in GiB: evaluators that "
                                           "cannot fit it are refused before any starts (actors/cluster_plan.py; "
                                           "default: the driver's GPU 0 when it has one, else unchecked)")
    max_restarts: int = Field(3, ge=-1, description="restarts per actor (-1: unlimited)")
    candidate_retries: int = Field(3, ge=0, description="re-runs of one candidate after its actor died")
    strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    num_cpus: Optional[int] = Field(None, ge=1, description="local cluster only: CPUs to give it")
    dashboard: bool = Field(True, description="local cluster only: start the dashboard")
    namespace: str = "efficientllava"
    name: Optional[str] = Field(None, description="run name in actor names and metric tags (default: run "
                                "directory name + job id of the first start, kept across resumes)")
    metrics_export_port: Optional[int] = Field(None, ge=1, le=65535,
                                               description="local cluster only: fixed Prometheus metrics port")
    ready_timeout_s: float = Field(600.0, gt=0, description="wait this long for the placement group")

    @model_validator(mode="after")
    def _check(self) -> "RayOptions":
        g = self.gpus_per_actor
        if g is not None and g > 1:
            raise ValueError(f"gpus_per_actor is {g:g}, but an evaluator runs its model on one device, so more than "
                             "1 GPU per actor would sit idle: use at most 1 (a fraction such as 0.5 shares a GPU); "
                             "a model too big for one GPU needs the engine's offloading (engine.offload)")
        if self.address is not None and not self.address.strip():
            raise ValueError("address is empty")
        return self


def _check_engine(engine: EngineConfig, data: DataConfig, search: SearchConfig, local: bool) -> None:
    """Cheap checks that need no model weights and no data loading."""
    from efficientllava.prune_engine.data.calibration import mm_specs
    from efficientllava.prune_engine.data.text import DataError, parse_text_spec
    from efficientllava.prune_engine.sparsegpt import Pattern

    if engine.mode not in ("sequential", "database"):
        raise ConfigError(f"invalid engine config: mode must be 'sequential' or 'database', got '{engine.mode}'")
    if engine.granularity != search.granularity:
        raise ConfigError(f"invalid engine config: granularity '{engine.granularity}' differs from the search's "
                          f"'{search.granularity}' (set it once, in the search section)")
    for key in ("projector_batch",):
        if getattr(engine, key) < 1:
            raise ConfigError(f"invalid engine config: {key} must be a positive integer")
    for key in ("screen_nsamples", "screen_mm_samples", "fitness_nsamples"):
        if getattr(engine, key) < 0:
            raise ConfigError(f"invalid engine config: {key} must be 0 or a positive integer")
    if search.offspring and engine.mode != "database":
        raise ConfigError("invalid run config: search.offspring (screening children on a slice of the proxy data) "
                          "needs engine.mode database; sequential mode prunes every candidate on all the data")
    if engine.device != "auto":
        try:
            kind = torch_device_type(engine.device)
        except (RuntimeError, ValueError):
            kind = None
        if kind not in ("cpu", "cuda"):
            raise ConfigError(f"invalid engine config: device '{engine.device}' (use auto, cpu, cuda or cuda:N)")
    if engine.threads is not None and engine.threads < 1:
        raise ConfigError("invalid engine config: threads must be a positive integer")
    try:
        pattern = Pattern.parse(engine.pattern)
    except ValueError as exc:
        raise ConfigError(f"invalid engine config: pattern: {exc}") from None
    if pattern.structured:
        raise ConfigError(f"invalid engine config: an N:M pattern ({engine.pattern}) fixes the sparsity of every "
                          "matrix; the search needs unstructured pruning")
    try:
        spec = parse_text_spec(data.calib)
    except DataError as exc:
        raise ConfigError(f"invalid data config: calib: {exc}") from None
    if local and spec.kind in ("txt", "json") and not Path(spec.path).is_file():
        raise ConfigError(f"invalid data config: calib: text file not found: {spec.path}")
    if local and engine.offload_dir is not None:  # on a remote cluster the directory is the nodes'
        from efficientllava.prune_engine.checks import check_output_dir

        try:
            check_output_dir(Path(engine.offload_dir), "offload_dir")
        except ValueError as exc:
            raise ConfigError(f"invalid engine config: {exc}") from None
    if local:
        from efficientllava.prune_engine.checks import check_text_budget

        try:
            check_text_budget(data.calib, data.nsamples, data.seqlen)
        except (ValueError, DataError) as exc:
            raise ConfigError(f"invalid data config: calib: {str(exc).removeprefix('--calib ')}") from None
    if data.mm_calib is not None:
        from efficientllava.prune_engine.data.hub import BENCHMARKS

        for part in mm_specs(data.mm_calib) or [data.mm_calib]:
            name = part.partition(":")[0]
            if name not in ("easy-vqa", "fashion-mnist", *BENCHMARKS):
                raise ConfigError(f"invalid data config: mm_calib: unknown image-text data '{part}' (use "
                                  f"easy-vqa[:split], fashion-mnist[:split] or one of {', '.join(sorted(BENCHMARKS))}; "
                                  "a comma-separated mix is allowed)")
    from efficientllava.prune_engine.models.adapter import ModelError
    from efficientllava.prune_engine.models.loading import model_facts

    model = engine.model
    try:
        facts = model_facts(model)
    except ModelError as exc:
        if local or model.startswith("."):  # else the path may exist on the cluster only
            raise ConfigError(f"invalid engine config: model: {exc}") from None
        facts = None
    is_llava = None if facts is None else facts["llava"]
    limit = (facts or {}).get("max_positions")
    if limit and data.seqlen > limit:
        raise ConfigError(f"invalid data config: seqlen {data.seqlen} is beyond the model's context "
                          f"({limit} positions)")
    if data.mm_calib and is_llava is False:
        raise ConfigError(f"invalid data config: mm_calib needs a LLaVA model; {model} is a text-only model")
    if data.mm_calib and (facts or {}).get("image_processor"):
        raise ConfigError(f"invalid data config: mm_calib needs the model's image processor: {facts['image_processor']}")


def torch_device_type(device: str) -> str:
    import torch

    return torch.device(device).type


#: settings of the data section that older run directories kept in the engine section
_LEGACY_ENGINE_DATA = tuple(DataConfig.model_fields)


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    search: SearchConfig
    engine: EngineConfig
    data: DataConfig = DataConfig()
    ray: RayOptions = RayOptions()

    # ---- construction ----------------------------------------------------------------
    @classmethod
    def from_sections(cls, sections: dict[str, Any], local: bool | None = None) -> "RunConfig":
        """From ``{"search": {...}, "engine": {...}, "data": {...}, "ray": {...}}``; validates across sections."""
        if not isinstance(sections, dict):
            raise ConfigError(f"invalid run config: expected a mapping, got {type(sections).__name__}")
        unknown = set(sections) - set(SECTIONS)
        if unknown:
            raise ConfigError(f"invalid run config: unknown section '{sorted(unknown)[0]}' "
                              f"(expected {', '.join(SECTIONS)})")
        parts = {}
        for name in SECTIONS:
            section = sections.get(name) or {}
            if not isinstance(section, dict):
                raise ConfigError(f"invalid {name} config: expected a mapping, got {type(section).__name__}")
            if name == "engine" and set(section) & set(_LEGACY_ENGINE_DATA):
                key = sorted(set(section) & set(_LEGACY_ENGINE_DATA))[0]
                raise ConfigError(f"invalid engine config: '{key}' is a data setting: write data.{key}")
            try:
                parts[name] = KINDS.get(name, RayOptions)(**section)
            except ValidationError as exc:
                raise ConfigError(_validation_message(name, exc)) from None
        search, engine, data, ray_options = parts["search"], parts["engine"], parts["data"], parts["ray"]
        if "granularity" not in (sections.get("engine") or {}):
            engine = engine.model_copy(update={"granularity": search.granularity})
        local = local if local is not None else ray_options.address is None
        if local:
            from efficientllava.prune_engine.models.adapter import ModelError
            from efficientllava.prune_engine.models.loading import absolute_model

            try:  # a local directory is saved absolute: the run resumes from any folder
                engine = engine.model_copy(update={"model": absolute_model(engine.model)})
            except ModelError:
                pass  # reported by _check_engine below
        if engine.threads is None:  # fixed per run: results must not depend on the cluster it resumes on
            engine = engine.model_copy(update={"threads": max(1, int(ray_options.cpus_per_actor))})
        if data.seed != search.seed and "seed" not in (sections.get("data") or {}):
            data = data.model_copy(update={"seed": search.seed})  # one --seed: the search's and the draw's
        _check_engine(engine, data, search, local)
        return cls(search=search, engine=engine, data=data, ray=ray_options)

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: dict[str, Any] | None = None,
             sets: list[str] | None = None, preset: str | None = None) -> "RunConfig":
        """A preset's settings (PRESETS) first, then the file's sections, then ``sets``
        (``["search.elites=2", "data.nsamples=8"]``), then ``overrides`` (dotted keys, None values
        ignored, as for unset CLI flags).

        A population chosen at most 4 without a chosen elites count keeps population - 1 elites
        (at least one child per generation), whatever the preset's elites."""
        if preset is not None and preset not in PRESETS:
            raise ConfigError(f"unknown preset '{preset}' (choose one of {', '.join(PRESETS)})")
        sections: dict[str, Any] = read_sections(Path(path)) if path is not None else {}
        file_keys = {f"{sec}.{k}" for sec, body in sections.items() if isinstance(body, dict) for k in body}
        chosen = [(k.replace("-", "_"), v) for k, v in list(parse_overrides(sets or []).items())
                  + list((overrides or {}).items()) if v is not None]
        chosen_keys = file_keys | {k for k, _ in chosen}
        layers = [(k, v) for k, v in (PRESETS[preset].items() if preset else []) if k not in file_keys]
        mode = dict(chosen).get("engine.mode", (sections.get("engine") or {}).get("mode"))
        if str(mode) == "sequential":
            # sequential mode on purpose: the preset's screening (a database-mode feature) steps aside
            layers = [(k, v) for k, v in layers if k not in ("search.offspring", "engine.mode")]
        population = dict(chosen).get("search.population", (sections.get("search") or {}).get("population"))
        if isinstance(population, int) and population <= 4 and "search.elites" not in chosen_keys:
            layers = [(k, v) for k, v in layers if k != "search.elites"] + [("search.elites", max(1, population - 1))]
        for key, value in layers + chosen:
            section, dot, leaf = key.partition(".")
            if not dot or section not in SECTIONS:
                raise ConfigError(f"invalid override '{key}': expected <section>.<key> with section "
                                  f"one of {', '.join(SECTIONS)}")
            node = sections.setdefault(section, {})
            if not isinstance(node, dict):
                raise ConfigError(f"invalid {section} config: expected a mapping")
            *parents, last = leaf.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[last] = value
        return cls.from_sections(sections)

    @classmethod
    def from_saved(cls, saved_search: dict[str, Any], ray_overrides: dict[str, Any] | None = None,
                   app: dict[str, Any] | None = None) -> "RunConfig":
        """Rebuild from a run directory's saved search config and app slot (``search.checkpoint.read_saved``);
        `ray_overrides` (None values ignored) change where it runs, never its result."""
        sections = saved_sections(saved_search, app)
        sections["ray"].update({k: v for k, v in (ray_overrides or {}).items() if v is not None})
        return cls.from_sections(sections, local=False)

    # ---- derived facts ----------------------------------------------------------------
    @property
    def levels(self) -> list[float]:
        return levels_of(self.search)

    def sections(self, without: tuple[str, ...] = ()) -> dict[str, dict]:
        """The JSON-able sections (what a config file holds), less the dotted keys in `without`."""
        sections = {"search": self.search.to_dict(), **self.app()}
        for key in without:
            section, _, leaf = key.partition(".")
            sections[section].pop(leaf, None)
        return sections

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.sections(), sort_keys=False)

    def app(self) -> dict[str, dict]:
        """The checkpoint's app slot: every section but the search's (which the checkpoint keeps as its config)."""
        return {"engine": self.engine.model_dump(mode="json"), "data": self.data.model_dump(mode="json"),
                "ray": self.ray.model_dump(mode="json")}


#: the sections that run directories older than the checkpoint's app slot (format 4) kept in the search config's extra
_LEGACY_APP_KEYS = ("engine", "data", "ray")


def saved_sections(saved_search: dict[str, Any], app: dict[str, Any] | None) -> dict[str, dict]:
    """The sections of a saved run: the search config as saved, the others from the app slot. Every older layout
    is read here, and only here: without an app slot (checkpoint format 4) the engine, data and Ray sections are
    in the search config's ``extra``; older still, the data settings are in the engine section, and an explicit
    engine device ``cpu`` saved before engine.device was honoured means ``auto``."""
    search = {k: v for k, v in saved_search.items() if k in SearchConfig.model_fields}
    extra = dict(search.get("extra") or {})
    legacy = {k: extra.pop(k) for k in _LEGACY_APP_KEYS if k in extra}
    search["extra"] = extra
    saved = app if app is not None else legacy
    if "engine" not in saved:
        raise ConfigError("the run directory's config has no engine section (not made by `efficientllava search`)")
    engine, data = dict(saved["engine"]), dict(saved.get("data") or {})
    if "dtype" not in engine and engine.get("device") == "cpu":
        engine["device"] = "auto"  # saved before engine.device was honoured: the actors chose by their GPU
    for key in _LEGACY_ENGINE_DATA:  # run directories written before the data section existed
        if key in engine:
            data.setdefault(key, engine.pop(key))
    return {"search": search, "engine": engine, "data": data, "ray": dict(saved.get("ray") or {})}


def read_sections(path: Path) -> dict[str, Any]:
    data = read_config_file(path, "run config")
    if not isinstance(data, dict):
        raise ConfigError(f"invalid run config {path}: expected a mapping with sections {', '.join(SECTIONS)}")
    if data and not set(data) & set(SECTIONS):  # a bare search config is accepted as the search section
        data = {"search": data}
    return data
