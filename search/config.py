"""The search configuration: one typed, frozen object (docs/method.md §2-§4).

Loaded from a YAML/TOML file, a dict, or CLI-style ``key=value`` overrides; any
unknown key or invalid value is a one-line :class:`ConfigError`.

Room for other settings: ``extra`` is a free-form mapping (model, data, mode,
actors, ...) that search code never reads; a subclass may also add typed fields
(the class methods below build ``cls``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError


class ConfigError(ValueError):
    """An invalid or infeasible search setting (always a one-line message)."""


#: the error type of a validator whose message names its setting itself (see `setting_error`)
SETTING_ERROR = "setting"


def setting_error(message: str, section: str | None = None) -> PydanticCustomError:
    """What a validator raises when its message is a whole sentence that names the setting ("mode must be
    'sequential' or 'database', got 'fast'"): reported as ``invalid <section> config: <message>``, without
    the field's name in front; `section` names the section for a rule across sections (default: the one
    being validated)."""
    return PydanticCustomError(SETTING_ERROR, message, {"section": section} if section else None)


def one_line(section: str, errors: list[dict[str, Any]], model_loc: str = "", count_more: bool = False) -> str:
    """The first of a section's validation errors (``ValidationError.errors()``) as one line: ``invalid <section>
    config: <setting>: <problem>`` (an unknown key, and a `setting_error`, read their own way). `model_loc`
    stands for the location of a rule over the whole section; `count_more` adds how many errors follow."""
    e = errors[0]
    loc = ".".join(str(p) for p in e["loc"])
    if e["type"] == "extra_forbidden":
        return f"invalid {section} config: unknown key '{loc}'"
    msg = str(e["msg"]).removeprefix("Value error, ")
    if e["type"] == SETTING_ERROR:
        section, loc = (e.get("ctx") or {}).get("section") or section, ""
    else:
        loc = loc or model_loc
    more = f" (+{len(errors) - 1} more)" if count_more and len(errors) > 1 else ""
    return f"invalid {section} config: {loc + ': ' if loc else ''}{msg}{more}".replace("\n", " ")


#: how the search section words its errors (`one_line`)
SEARCH_ERRORS = {"model_loc": "config", "count_more": True}


class SearchConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # policy space (§2)
    target: float = Field(0.5, gt=0.0, lt=1.0, description="target mean sparsity p0")
    span: float = Field(0.10, ge=0.0, description="levels reach p0 - span .. p0 + span")
    step: float = Field(0.05, gt=0.0, description="distance between adjacent levels")
    tolerance: float = Field(0.01, ge=0.0, description="|weighted mean sparsity - p0| bound")
    granularity: Literal["block", "matrix"] = "block"
    # genetic algorithm (§4)
    population: int = Field(16, ge=2)
    init: Literal["random", "uniform"] = Field("random", description="first population: uniform + random feasible "
                                               "policies (paper), or uniform + its level-switch mutations")
    elites: int = Field(4, ge=1)
    generations: int = Field(10, ge=1, description="tau")
    time_budget_s: Optional[float] = Field(None, gt=0.0)
    mutation_switches: tuple[int, int] = (1, 3)
    seed: int = Field(0, ge=0)
    # multi-fidelity selection (§4a): children screened on a slice of the proxy data per generation
    offspring: int = Field(0, ge=0, description="children screened per generation (0: no screening, the paper's GA)")
    survivors: int = Field(0, ge=0, description="multi-step selection (EvoPress): the screened children kept for a "
                           "second, larger selection stage (the engine's stage slice of the proxy data), whose best fill "
                           "the population; 0: one screening stage. At least population - elites")
    offspring_budget: bool = Field(False, description="with time_budget_s: after generation 0, measure what a screened "
                                   "child and a generation cost here and draw as many children per generation (at "
                                   "most `offspring`, at least population - elites) as let the search end within "
                                   "the budget; decided once, checkpointed")
    rerank: int = Field(0, ge=0, description="after the last generation, the best `rerank` distinct policies of its "
                        "population and the uniform policy are pruned as the final model is (sequentially from the "
                        "dense model, under the final projector) and scored again on all proxy data; the best of "
                        "them is the result (0: off, the search's own best)")
    # fitness (§3)
    eta: float = Field(0.5, ge=0.0, description="SRM weight; 0 = 'Auto w/o Gen'")
    mm_weight: float = Field(0.5, ge=0.0, le=1.0,
                             description="w: L = (1 - w) L_text + w L_mm when image-text proxy samples exist")
    srm_scale: Optional[float] = Field(None, gt=0.0,
                                       description="factor putting G on L's scale (None: sd(L)/sd(G), measured once)")
    srm_rescale: bool = Field(False, description="measure s again on every generation's population (its F, and the "
                              "screening of the next generation's children, use that generation's s), so eta s G "
                              "keeps eta times L's spread as the population leaves uniform; off: s is fixed once")
    srm_sample: int = Field(0, ge=0, description="random feasible policies scored once on all proxy data to measure "
                            "sd(L)/sd(G) (0: generation 0's candidates; a start around uniform has too little spread)")
    # neighbour weights and search-space evolution (§4 steps 4-5)
    neighbours: int = Field(5, ge=1)
    temperature: float = Field(1.0, gt=0.0, description="softmax temperature, in units of median(d_m) - min(d_m)")
    projector_mode: Literal["weighted", "uniform", "off"] = "weighted"
    projector_steps: int = Field(4, ge=1, description="projector mini-batch steps per generation")
    projector_candidates: int = Field(2, ge=1, description="candidates drawn (by neighbour weight) per projector step")
    projector_lr: float = Field(1e-3, gt=0.0)
    projector_guard: bool = Field(True, description="keep a generation's projector update only if it lowers the drawn "
                                  "candidates' answer loss on held-aside image-text samples; else halve it "
                                  "(projector_backtrack times) and, if none helps, drop it")
    projector_backtrack: int = Field(2, ge=0, description="halvings of a rejected projector update tried before "
                                     "it is dropped")
    projector_max_change: Optional[float] = Field(None, gt=0.0, description="trust region: a generation's projector "
                                                  "update is scaled down to at most this relative change "
                                                  "||W_p,new - W_p,old|| / ||W_p,old|| before the guard sees it (None: "
                                                  "unbounded, the paper)")
    # settings owned by other components; never read by search/
    extra: dict[str, Any] = Field(default_factory=dict)

    #: fields a resumed run may change without changing the result so far
    resume_mutable: ClassVar[frozenset[str]] = frozenset({"generations", "time_budget_s"})

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise ConfigError(one_line("search", e.errors(), **SEARCH_ERRORS)) from None

    @field_validator("projector_mode", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        return "off" if v is False else v  # YAML 1.1 reads a bare `off` as false

    @model_validator(mode="after")
    def _check(self) -> "SearchConfig":
        n = self.span / self.step
        if abs(n - round(n)) > 1e-6:
            raise ValueError(f"span {self.span} is not a multiple of step {self.step}")
        low, high = self.target - self.span, self.target + self.span
        if low < -1e-12:
            raise ValueError(f"lowest level p0 - span = {low:.4g} is below 0")
        if high >= 1.0 - 1e-12:
            raise ValueError(f"highest level p0 + span = {high:.4g} is not below 1")
        if self.elites >= self.population:
            raise ValueError(f"elites ({self.elites}) must be fewer than population ({self.population})")
        if self.survivors and not self.offspring:
            raise ValueError("survivors (multi-step selection) needs offspring > 0: it keeps the best screened children")
        if self.survivors and self.survivors < self.population - self.elites:
            raise ValueError(f"survivors ({self.survivors}) must be at least population - elites "
                             f"({self.population - self.elites}): the stage fills the population")
        if self.srm_rescale and self.srm_scale is not None:
            raise ValueError("srm_rescale measures s on every generation: it cannot be combined with a fixed srm_scale")
        if self.srm_rescale and self.srm_sample:
            raise ValueError("srm_rescale measures s on every generation's population: srm_sample is not used with it")
        lo, hi = self.mutation_switches
        if not 0 <= lo <= hi:
            raise ValueError(f"mutation_switches must be (lo, hi) with 0 <= lo <= hi, got {self.mutation_switches}")
        return self

    # ---- construction -------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SearchConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"invalid search config: expected a mapping, got {type(data).__name__}")
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | Path) -> "SearchConfig":
        return cls.from_dict(read_config_file(path, "search config"))

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: dict | list[str] | None = None) -> "SearchConfig":
        """File (optional) first, then CLI overrides on top."""
        base = cls.from_file(path) if path is not None else cls()
        return base.merge(overrides or {})

    def merge(self, overrides: dict[str, Any] | list[str]) -> "SearchConfig":
        """A new config with ``overrides`` applied: a dict (None values are ignored, as
        for unset CLI flags) or ``["key=value", "extra.model=..."]`` strings (values
        parsed as YAML scalars). Dotted keys reach into ``extra``."""
        if isinstance(overrides, (list, tuple)):
            overrides = parse_overrides(overrides)
        data = self.model_dump()
        for key, value in overrides.items():
            if value is None:
                continue
            *parents, leaf = key.replace("-", "_").split(".")
            node = data
            for p in parents:
                if not isinstance(node.get(p, {}), dict):
                    raise ConfigError(f"invalid search config: '{key}': '{p}' is not a section")
                node = node.setdefault(p, {})
            node[leaf] = value
        return type(self).from_dict(data)

    # ---- serialisation ------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def differences(self, other: dict[str, Any]) -> list[str]:
        """Result-affecting keys whose value differs from ``other`` (a saved config). A setting the saved
        config lacks (added since it was saved) counts as its default: what the search did before it existed."""
        mine = self.to_dict()
        defaults = type(self).model_construct().model_dump(mode="json")  # as a saved config writes them

        def saved(key: str) -> Any:
            return other[key] if key in other or key not in defaults else defaults[key]

        keys = (set(mine) | set(other)) - self.resume_mutable
        return sorted(k for k in keys if mine.get(k) != saved(k))

    @property
    def n_levels(self) -> int:
        return 2 * round(self.span / self.step) + 1


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["population=8", "eta=0"]`` -> ``{"population": 8, "eta": 0}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"invalid override '{item}': expected key=value")
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"invalid override '{item}': cannot parse the value") from None
        if isinstance(parsed, bool) and value.strip().lower() not in ("true", "false"):
            parsed = value.strip()  # YAML 1.1 reads on/off/yes/no as booleans; keep the word
        out[key.strip()] = parsed
    return out


def read_config_file(path: str | Path, what: str) -> object:
    """Parse a YAML (default) or TOML file; unreadable or malformed files are one-line ConfigErrors."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from None
    try:
        if path.suffix.lower() == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            return tomllib.loads(text)
        return yaml.safe_load(text) or {}
    except Exception as e:  # parse errors of either format
        raise ConfigError(f"cannot parse {what} {path}: {str(e).splitlines()[0]}") from None
