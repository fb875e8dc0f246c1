"""One typed configuration for a Ray search run: ``RunConfig = search + engine + ray``.

* ``search``: :class:`search.SearchConfig` (policy space, GA, fitness, projector step);
* ``engine``: :class:`prune_engine.candidates.EngineConfig` (model, proxy data, pruning mode);
* ``ray``: :class:`RayOptions` (cluster address, actors, GPUs/CPUs per actor, restarts).

Built from a YAML/TOML file with those three sections and/or CLI flags (flags win), validated
completely before Ray starts (one-line :class:`ConfigError`), and saved with the run: the engine
and Ray sections travel in ``SearchConfig.extra`` (``extra.engine``, ``extra.ray``), so the run
directory's checkpoint alone rebuilds the run (``efficientllava resume RUN_DIR``). The Ray section
is runtime-only: a resumed run may use another cluster, actor count or GPU share without changing
its result.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from prune_engine.config import EngineConfig
from search.config import ConfigError, SearchConfig, parse_overrides, read_config_file

EMBEDDED_MODELS = ("smollm2", "smol-llava")
SECTIONS = ("search", "engine", "ray")

#: Named starting points for a new run (a config file, --set and flags override them).
#: paper: the paper's search (16 policies x 10 generations, eta 0.5, k = 5), every candidate on the
#:   whole fitness set, in database mode (a level database built once, candidates stitched); as in
#:   the paper, a few proxy samples score the candidates (8 text segments + the image-text samples)
#:   while all calibration data (32 x 256 text tokens + the image-text samples) builds the Hessians.
#: none: the built-in default of every setting (SearchConfig, EngineConfig).
#: default: EvoPress-style economics, measured best held-out quality per wall-clock minute here:
#:   many children screened per generation on a small slice of the proxy data, survivors on all of it.
PRESETS: dict[str, dict[str, Any]] = {
    "none": {},
    "paper": {"search.population": 16, "search.generations": 10, "search.elites": 5, "search.eta": 0.5,
              "search.offspring": 0, "engine.mode": "database", "engine.fitness_nsamples": 8},
    "default": {"search.population": 8, "search.generations": 3, "search.elites": 3, "search.eta": 0.5,
                "search.init": "uniform", "search.tolerance": 0.0,
                "search.offspring": 16, "engine.mode": "database", "engine.nsamples": 16, "engine.seqlen": 128,
                "engine.fitness_nsamples": 4, "engine.mm_samples": 16, "engine.screen_nsamples": 1,
                "engine.screen_mm_samples": 4},
}


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
                                            description="GPUs per actor (default: 1 when the cluster has GPUs, else 0)")
    cpus_per_actor: float = Field(1.0, gt=0)
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
        if g is not None and g > 1 and g != int(g):
            raise ValueError(f"gpus_per_actor above 1 must be a whole number, got {g}")
        if self.address is not None and not self.address.strip():
            raise ValueError("address is empty")
        return self


def _check_engine(engine: EngineConfig, search: SearchConfig, local: bool) -> None:
    """Cheap checks that need no model weights and no data loading."""
    from prune_engine.data.text import DataError, parse_text_spec
    from prune_engine.sparsegpt import Pattern

    from prune_engine.data.calibration import check_calibration_data, mm_specs

    if engine.mode not in ("sequential", "database"):
        raise ConfigError(f"invalid engine config: mode must be 'sequential' or 'database', got '{engine.mode}'")
    if engine.granularity != search.granularity:
        raise ConfigError(f"invalid engine config: granularity '{engine.granularity}' differs from the search's "
                          f"'{search.granularity}' (set it once, in the search section)")
    for key in ("nsamples", "seqlen", "mm_samples", "projector_batch"):
        if getattr(engine, key) < 1:
            raise ConfigError(f"invalid engine config: {key} must be a positive integer")
    for key in ("screen_nsamples", "screen_mm_samples", "fitness_nsamples"):
        if getattr(engine, key) < 0:
            raise ConfigError(f"invalid engine config: {key} must be 0 or a positive integer")
    if search.offspring and engine.mode != "database":
        raise ConfigError("invalid run config: search.offspring (screening children on a slice of the proxy data) "
                          "needs engine.mode database; sequential mode prunes every candidate on all the data")
    if engine.batch_size is not None and engine.batch_size < 1:
        raise ConfigError("invalid engine config: batch_size must be a positive integer")
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
        spec = parse_text_spec(engine.calib)
    except DataError as exc:
        raise ConfigError(f"invalid engine config: calib: {exc}") from None
    if local and spec.kind in ("txt", "json") and not Path(spec.path).is_file():
        raise ConfigError(f"invalid engine config: calib: text file not found: {spec.path}")
    if local:
        from prune_engine.checks import check_text_budget

        try:
            check_text_budget(engine.calib, engine.nsamples, engine.seqlen)
        except (ValueError, DataError) as exc:
            raise ConfigError(f"invalid engine config: calib: {str(exc).removeprefix('--calib ')}") from None
    if engine.mm_calib is not None:
        from prune_engine.data.hub import BENCHMARKS

        for part in mm_specs(engine.mm_calib) or [engine.mm_calib]:
            name = part.partition(":")[0]
            if name not in ("easy-vqa", "fashion-mnist", *BENCHMARKS):
                raise ConfigError(f"invalid engine config: mm_calib: unknown image-text data '{part}' (use "
                                  f"easy-vqa[:split], fashion-mnist[:split] or one of {', '.join(sorted(BENCHMARKS))}; "
                                  "a comma-separated mix is allowed)")
    try:
        check_calibration_data(engine.calib, engine.mm_calib, engine.allow_eval_split)
    except ValueError as exc:
        raise ConfigError(f"invalid engine config: {exc}") from None
    from prune_engine.models.loading import model_facts
    from prune_engine.models.adapter import ModelError

    model = engine.model
    try:
        facts = model_facts(model)
    except ModelError as exc:
        if local or model.startswith("."):  # else the path may exist on the cluster only
            raise ConfigError(f"invalid engine config: model: {exc}") from None
        facts = None
    is_llava = None if facts is None else facts["llava"]
    limit = (facts or {}).get("max_positions")
    if limit and engine.seqlen > limit:
        raise ConfigError(f"invalid engine config: seqlen {engine.seqlen} is beyond the model's context "
                          f"({limit} positions)")
    if engine.mm_calib and is_llava is False:
        raise ConfigError(f"invalid engine config: mm_calib needs a LLaVA model; {model} is a text-only model")


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    search: SearchConfig
    engine: EngineConfig
    ray: RayOptions = RayOptions()

    # ---- construction ----------------------------------------------------------------
    @classmethod
    def from_sections(cls, data: dict[str, Any], local: bool | None = None) -> "RunConfig":
        """From ``{"search": {...}, "engine": {...}, "ray": {...}}``; validates across sections."""
        if not isinstance(data, dict):
            raise ConfigError(f"invalid run config: expected a mapping, got {type(data).__name__}")
        unknown = set(data) - set(SECTIONS)
        if unknown:
            raise ConfigError(f"invalid run config: unknown section '{sorted(unknown)[0]}' "
                              f"(expected {', '.join(SECTIONS)})")
        parts = {}
        for name, kind in (("search", SearchConfig), ("engine", EngineConfig), ("ray", RayOptions)):
            section = data.get(name) or {}
            if not isinstance(section, dict):
                raise ConfigError(f"invalid {name} config: expected a mapping, got {type(section).__name__}")
            if name == "search":
                section = {k: v for k, v in section.items()}
                extra = dict(section.get("extra") or {})
                extra.pop("engine", None), extra.pop("ray", None)  # rebuilt from the sections below
                section["extra"] = extra
            try:
                parts[name] = kind(**section)
            except ValidationError as exc:
                raise ConfigError(_validation_message(name, exc)) from None
        search, engine, ray_options = parts["search"], parts["engine"], parts["ray"]
        if "granularity" not in (data.get("engine") or {}):
            engine = engine.model_copy(update={"granularity": search.granularity})
        if local if local is not None else ray_options.address is None:
            from prune_engine.models.loading import absolute_model
            from prune_engine.models.adapter import ModelError

            try:  # a local directory is saved absolute: the run resumes from any folder
                engine = engine.model_copy(update={"model": absolute_model(engine.model)})
            except ModelError:
                pass  # reported by _check_engine below
        if engine.threads is None:  # fixed per run: results must not depend on the cluster it resumes on
            engine = engine.model_copy(update={"threads": max(1, int(ray_options.cpus_per_actor))})
        if engine.seed != search.seed and "seed" not in (data.get("engine") or {}):
            engine = engine.model_copy(update={"seed": search.seed})
        _check_engine(engine, search, local if local is not None else ray_options.address is None)
        extra = dict(search.extra, engine=engine.model_dump(mode="json"), ray=ray_options.model_dump(mode="json"))
        search = search.model_copy(update={"extra": extra})
        return cls(search=search, engine=engine, ray=ray_options)

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: dict[str, Any] | None = None,
             sets: list[str] | None = None, preset: str | None = None) -> "RunConfig":
        """A preset's settings (PRESETS) first, then the file's sections, then ``sets``
        (``["search.elites=2", "engine.nsamples=8"]``), then ``overrides`` (dotted keys, None values
        ignored, as for unset CLI flags)."""
        if preset is not None and preset not in PRESETS:
            raise ConfigError(f"unknown preset '{preset}' (choose one of {', '.join(PRESETS)})")
        data: dict[str, Any] = {}
        if path is not None:
            data = read_sections(Path(path))
        layers = list(PRESETS[preset].items()) if preset else []
        file_keys = {f"{sec}.{k}" for sec, body in data.items() if isinstance(body, dict) for k in body}
        layers = [(k, v) for k, v in layers if k not in file_keys]  # the file wins over the preset
        chosen = {**{k: v for k, v in parse_overrides(sets or []).items()},
                  **{k: v for k, v in (overrides or {}).items() if v is not None}}
        if str(chosen.get("engine.mode", (data.get("engine") or {}).get("mode"))) == "sequential":
            # sequential mode on purpose: the preset's screening (a database-mode feature) steps aside
            layers = [(k, v) for k, v in layers if k not in ("search.offspring", "engine.mode")]
        for key, value in layers + list(parse_overrides(sets or []).items()) + list((overrides or {}).items()):
            if value is None:
                continue
            section, dot, leaf = key.replace("-", "_").partition(".")
            if not dot or section not in SECTIONS:
                raise ConfigError(f"invalid override '{key}': expected <section>.<key> with section "
                                  f"one of {', '.join(SECTIONS)}")
            node = data.setdefault(section, {})
            if not isinstance(node, dict):
                raise ConfigError(f"invalid {section} config: expected a mapping")
            *parents, last = leaf.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[last] = value
        return cls.from_sections(data)

    @classmethod
    def from_saved(cls, saved_search: dict[str, Any], ray_overrides: dict[str, Any] | None = None) -> "RunConfig":
        """Rebuild from a run directory's saved search config (its ``extra`` holds engine and ray)."""
        extra = dict(saved_search.get("extra") or {})
        if "engine" not in extra:
            raise ConfigError("the run directory's config has no engine section (not made by `efficientllava search`)")
        search = {k: v for k, v in saved_search.items() if k in SearchConfig.model_fields}
        ray_section = dict(extra.get("ray") or {})
        ray_section.update({k: v for k, v in (ray_overrides or {}).items() if v is not None})
        return cls.from_sections({"search": search, "engine": extra["engine"], "ray": ray_section}, local=False)

    # ---- derived facts ----------------------------------------------------------------
    @property
    def levels(self) -> list[float]:
        return levels_of(self.search)

    def to_yaml(self) -> str:
        data = {"search": self.search.to_dict(), "engine": self.engine.model_dump(mode="json"),
                "ray": self.ray.model_dump(mode="json")}
        data["search"]["extra"] = {k: v for k, v in data["search"]["extra"].items() if k not in ("engine", "ray")}
        return yaml.safe_dump(data, sort_keys=False)


def levels_of(search: SearchConfig) -> list[float]:
    """The sparsity levels of the policy space, exactly as ``search.policy.PolicySpace`` builds them."""
    m = round(search.span / search.step)
    return [float(x) for x in np.round(search.target + search.step * np.arange(-m, m + 1), 12)]


def read_sections(path: Path) -> dict[str, Any]:
    data = read_config_file(path, "run config")
    if not isinstance(data, dict):
        raise ConfigError(f"invalid run config {path}: expected a mapping with sections {', '.join(SECTIONS)}")
    if data and not set(data) & set(SECTIONS):  # a bare search config is accepted as the search section
        data = {"search": data}
    return data
