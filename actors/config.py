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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator

from efficientllava.prune_engine.config import DataConfig, EngineConfig
from efficientllava.search.config import (SEARCH_ERRORS, ConfigError, SearchConfig, one_line, parse_overrides,
                                          read_config_file, setting_error)
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
#: quality: the default's search without the SRM term, for 8 generations (11-14 min of search on a 2-core Xeon with
#:   AMX, about an hour on a 2-core AVX2-only EPYC). For high sparsity: chosen at 0.7; on test at 0.5 it traded
#:   easy-vqa for perplexity (benchmarks/results/quality.md).
#:   Chosen on the validation split (benchmarks/results/budget_val_07_eta.md, docs/method.md "Budget under the SRM
#:   term"): with the SRM term's scale fixed at generation 0, a longer search minimises G and gives back perplexity;
#:   without it, the same budget lowered held-out perplexity below the default's and kept VQA above uniform's.
PRESETS["quality"] = {**PRESETS["default"], "search.eta": 0.0, "search.generations": 8}


def preset_layers(preset: str | None, file: dict[str, Any], file_keys: set[str],
                  chosen: dict[str, Any]) -> list[tuple[str, Any]]:
    """The dotted settings laid beneath a run's chosen ones (a config `file`'s sections, whose dotted keys are
    `file_keys`, and the `chosen` --set and flag values): the preset's, less what the file sets, under two rules
    that keep a preset from overruling a choice it does not know about:

    * engine.mode sequential chosen: the preset's screening (search.offspring, a database-mode feature) and
      its engine.mode step aside;
    * a population of at most 4 chosen without elites: population - 1 elites (at least one child per
      generation), whatever the preset's (with or without a preset)."""
    layers = [(k, v) for k, v in (PRESETS[preset].items() if preset else []) if k not in file_keys]
    mode = chosen.get("engine.mode", (file.get("engine") or {}).get("mode"))
    if str(mode) == "sequential":
        layers = [(k, v) for k, v in layers if k not in ("search.offspring", "engine.mode")]
    population = chosen.get("search.population", (file.get("search") or {}).get("population"))
    if isinstance(population, int) and population <= 4 and "search.elites" not in file_keys | set(chosen):
        layers = [(k, v) for k, v in layers if k != "search.elites"] + [("search.elites", max(1, population - 1))]
    return layers


def setting_default(key: str, preset: str | None = None) -> Any:
    """The value a dotted setting takes when nobody sets it: the preset's, else the section's default."""
    if preset and key in PRESETS[preset]:
        return PRESETS[preset][key]
    section, _, leaf = key.partition(".")
    kind = KINDS.get(section, RayOptions)
    field = kind.model_fields[leaf]
    return field.default


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
    ready_timeout_s: float = Field(600.0, gt=0, description="wait this long for the placement group, and for each "
                                   "evaluator actor to load the model and its proxy data (the level database is "
                                   "built after, without a limit; raise it on a busy node)")

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


#: settings of the data section that older run directories kept in the engine section
_LEGACY_ENGINE_DATA = tuple(DataConfig.model_fields)


def _one_line(err: ValidationError) -> str:
    """A run config's first validation error, worded by its section (search.config.one_line)."""
    errors = err.errors()
    where = errors[0]["loc"]
    section = str(where[0]) if where else "run"
    mine = [dict(e, loc=e["loc"][1:]) for e in errors if e["loc"][:1] == where[:1]] if where else errors
    return one_line(section, mine, **(SEARCH_ERRORS if section == "search" else {}))


class RunConfig(BaseModel):
    """The four sections of a run. Each setting has one owner and its constraint on its field (the section
    classes); what is left here are the rules across sections (model validators) and the settings one section
    copies from another (`_follow_owners`). Build it with `from_sections` / `load` / `from_saved`: they pass
    the validation context (``{"local": ...}``, see prune_engine/config.py) and turn errors into one line."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    search: SearchConfig
    engine: EngineConfig
    data: DataConfig = DataConfig()
    ray: RayOptions = RayOptions()

    # ---- construction ----------------------------------------------------------------
    @classmethod
    def from_sections(cls, sections: dict[str, Any], local: bool | None = None) -> "RunConfig":
        """From ``{"search": {...}, "engine": {...}, "data": {...}, "ray": {...}}``, validated within and across
        sections. `local`: the paths are this machine's (default: without ray.address, a local cluster)."""
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
            parts[name] = section
        parts["search"] = SearchConfig(**parts["search"])  # first, in its own words (a one-line ConfigError)
        local = local if local is not None else parts["ray"].get("address") is None
        try:
            return cls.model_validate(parts, context={"local": local})
        except ValidationError as exc:
            raise ConfigError(_one_line(exc)) from None

    @model_validator(mode="before")
    @classmethod
    def _follow_owners(cls, sections: Any, info: ValidationInfo) -> Any:
        """Settings one section owns and another follows unless set there: engine.granularity is the search's,
        data.seed the search's (one --seed: the search's and the draw's), engine.threads is fixed per run from
        ray.cpus_per_actor (results must not depend on the cluster a run resumes on); a local model directory is
        saved absolute (the run resumes from any folder)."""
        if not isinstance(sections, dict) or not all(isinstance(sections.get(n, {}), dict) for n in SECTIONS[1:]):
            return sections
        search = sections.get("search", {})
        if isinstance(search, dict):
            search = SearchConfig(**search)
        ray_section = sections.get("ray", {})
        engine, data = dict(sections.get("engine", {})), dict(sections.get("data", {}))
        engine.setdefault("granularity", search.granularity)
        data.setdefault("seed", search.seed)
        if engine.get("threads") is None:
            try:
                engine["threads"] = max(1, int(float(ray_section.get("cpus_per_actor",
                                                                    RayOptions.model_fields["cpus_per_actor"].default))))
            except (TypeError, ValueError):
                pass  # the ray section's own error says what is wrong
        if (info.context or {}).get("local") and isinstance(engine.get("model"), str):
            from efficientllava.prune_engine.models.adapter import ModelError
            from efficientllava.prune_engine.models.loading import absolute_model

            try:
                engine["model"] = absolute_model(engine["model"])
            except ModelError:
                pass  # the engine's model field says what is wrong
        return {**sections, "search": search, "engine": engine, "data": data}

    @model_validator(mode="after")
    def _one_search_space(self) -> "RunConfig":
        """The engine prunes what the search searches: one granularity, unstructured patterns, and screening
        (search.offspring) only where candidates are stitched from a level database."""
        engine, search = self.engine, self.search
        if engine.granularity != search.granularity:
            raise setting_error(f"granularity '{engine.granularity}' differs from the search's "
                                f"'{search.granularity}' (set it once, in the search section)", "engine")
        if search.offspring and engine.mode != "database":
            raise setting_error("search.offspring (screening children on a slice of the proxy data) needs "
                                "engine.mode database; sequential mode prunes every candidate on all the data", "run")
        from efficientllava.prune_engine.sparsegpt import Pattern

        if Pattern.parse(engine.pattern).structured:
            raise setting_error(f"an N:M pattern ({engine.pattern}) fixes the sparsity of every matrix; the search "
                                "needs unstructured pruning", "engine")
        if engine.fitness_held_aside and engine.fitness_nsamples >= self.data.nsamples:
            raise setting_error(f"engine.fitness_held_aside: fitness_nsamples ({engine.fitness_nsamples}) leaves none "
                                f"of the {self.data.nsamples} text segments (data.nsamples) to calibrate on", "run")
        return self

    @model_validator(mode="after")
    def _data_fits_the_model(self) -> "RunConfig":
        """Image-text data the search calibrates on is one it knows, and the model can take the data: its
        context holds data.seqlen tokens, and image-text data needs a LLaVA model with its image processor
        (from the model's files; a model that exists on the cluster only is not checked here)."""
        data, model = self.data, self.engine.model
        if data.mm_calib is not None:
            from efficientllava.prune_engine.data.calibration import mm_specs
            from efficientllava.prune_engine.data.hub import BENCHMARKS

            for part in mm_specs(data.mm_calib) or [data.mm_calib]:
                if part.partition(":")[0] not in ("easy-vqa", "fashion-mnist", *BENCHMARKS):
                    raise setting_error(f"mm_calib: unknown image-text data '{part}' (use easy-vqa[:split], "
                                        f"fashion-mnist[:split] or one of {', '.join(sorted(BENCHMARKS))}; "
                                        "a comma-separated mix is allowed)", "data")
        from efficientllava.prune_engine.models.adapter import ModelError
        from efficientllava.prune_engine.models.loading import model_facts

        try:
            facts = model_facts(model) or {}
        except ModelError:  # a model on the cluster only (the engine's model field refuses a local one)
            facts = {}
        limit = facts.get("max_positions")
        if limit and data.seqlen > limit:
            raise setting_error(f"seqlen {data.seqlen} is beyond the model's context ({limit} positions)", "data")
        if data.mm_calib and facts.get("llava") is False:
            raise setting_error(f"mm_calib needs a LLaVA model; {model} is a text-only model", "data")
        if data.mm_calib and facts.get("image_processor"):
            raise setting_error(f"mm_calib needs the model's image processor: {facts['image_processor']}", "data")
        return self

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: dict[str, Any] | None = None,
             sets: list[str] | None = None, preset: str | None = None) -> "RunConfig":
        """A preset's settings (PRESETS, as `preset_layers` adapts them to what was chosen) first, then the
        file's sections, then ``sets`` (``["search.elites=2", "data.nsamples=8"]``), then ``overrides``
        (dotted keys, None values ignored, as for unset CLI flags)."""
        if preset is not None and preset not in PRESETS:
            raise ConfigError(f"unknown preset '{preset}' (choose one of {', '.join(PRESETS)})")
        sections: dict[str, Any] = read_sections(Path(path)) if path is not None else {}
        file_keys = {f"{sec}.{k}" for sec, body in sections.items() if isinstance(body, dict) for k in body}
        chosen = [(k.replace("-", "_"), v) for k, v in list(parse_overrides(sets or []).items())
                  + list((overrides or {}).items()) if v is not None]
        for key, value in preset_layers(preset, sections, file_keys, dict(chosen)) + chosen:
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
