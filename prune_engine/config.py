"""The engine's settings: the calibration data (`DataConfig`), how candidates are pruned and scored (`EngineConfig`), held-out evaluation (`HeldoutConfig`).

Each setting is declared once, here, with its constraint on its field (a `Literal`, a `Field` bound or a
validator); the search's run config (actors/config.py), the demo, `tune` and the benchmarks compose these
classes instead of re-declaring their fields or re-checking them. The one-shot `prune` job composes
`DataConfig`; its model options stay flat (as the CLI gives them and its policy.json records them) and map
onto an `EngineConfig` (`PruneJob.engine`), from which the pruner is built as for a search.

Checks that read this machine's files (does the model directory, the calibration text file, the offload
directory exist?) run only when the validation context says ``{"local": True}`` (the run config passes
it for a run whose actors read the paths on this machine); without a context they are skipped.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from efficientllava.search.config import setting_error


def _positive(v: int | None, what: str = "must be a positive integer") -> int | None:
    if v is not None and v < 1:
        raise ValueError(what)
    return v


def _local(info: ValidationInfo) -> bool:
    """Whether this machine's files are the ones the settings name (see the module's docstring)."""
    return bool((info.context or {}).get("local"))


class DataConfig(BaseModel):
    """Calibration (= proxy) data: text segments, plus image-text samples for LLaVA models, drawn with `seed`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    calib: str = Field("wiki:calib", description="calibration/proxy text (a text spec)")
    nsamples: int = Field(32, description="text segments")
    seqlen: int = Field(256, description="tokens per text segment")
    mm_calib: str | None = Field(None, description="image-text data from training splits; a comma-separated "
                                 "mix is allowed (LLaVA models)")
    mm_samples: int = Field(64, description="image-text samples (with 16, uniform pruning at 0.7 fell to chance on "
                            "easy-vqa: benchmarks/results/calibration_data.md)")
    mm_balance: bool = Field(False, description="draw the image-text samples evenly over their answers "
                             "(default: a plain random draw)")
    mm_rephrase: float = Field(0.0, ge=0.0, le=1.0,
                               description="share of the image-text samples asked in wordings of the train templates "
                               "(prune_engine.data.rephrase), not the generator's: paraphrase augmentation of the "
                               "proxy questions (easy-vqa and fashion-mnist; the same images and answers)")
    seed: int = Field(0, description="seed of the draw")
    batch_size: int | None = Field(None, description="calibration batch size (None: all at once)")
    allow_eval_split: bool = Field(False, description="calibrate on an evaluation split anyway (leaks it into "
                                   "the model)")

    @field_validator("calib")
    @classmethod
    def _text_spec(cls, v: str) -> str:
        from efficientllava.prune_engine.data.text import parse_text_spec

        parse_text_spec(v)  # a DataError (a ValueError) names what is wrong
        return v

    @field_validator("nsamples", "seqlen", "mm_samples", "batch_size")
    @classmethod
    def _sizes(cls, v):
        return _positive(v)

    @model_validator(mode="after")
    def _training_splits(self) -> "DataConfig":
        from efficientllava.prune_engine.data.calibration import check_calibration_data

        check_calibration_data(self.calib, self.mm_calib, self.allow_eval_split)
        if self.mm_balance and not self.mm_calib:
            raise ValueError("mm_balance (--mm-balance) balances the image-text calibration draw: "
                             "it needs mm_calib (--mm-calib)")
        if self.mm_rephrase:
            from efficientllava.prune_engine.data.calibration import mm_specs
            from efficientllava.prune_engine.data.rephrase import REPHRASED

            if not self.mm_calib:
                raise ValueError("mm_rephrase (--mm-rephrase) rewords image-text calibration samples: "
                                 "it needs mm_calib (--mm-calib)")
            if other := [p for p in mm_specs(self.mm_calib) if p.partition(":")[0] not in REPHRASED.values()]:
                raise ValueError(f"mm_rephrase: rephrased questions exist for {' and '.join(REPHRASED.values())} "
                                 f"only, not {', '.join(other)}")
        return self

    @model_validator(mode="after")
    def _local_text(self, info: ValidationInfo) -> "DataConfig":
        """A local text file exists and holds enough text for nsamples x seqlen tokens (cheap: characters)."""
        if not _local(info):
            return self
        from pathlib import Path

        from efficientllava.prune_engine.checks import check_text_budget
        from efficientllava.prune_engine.data.text import DataError, parse_text_spec

        spec = parse_text_spec(self.calib)
        if spec.kind in ("txt", "json") and not Path(spec.path).is_file():
            raise setting_error(f"calib: text file not found: {spec.path}")
        try:
            check_text_budget(self.calib, self.nsamples, self.seqlen)
        except (ValueError, DataError) as exc:
            raise setting_error(f"calib: {str(exc).removeprefix('--calib ')}") from None
        return self


class EngineConfig(BaseModel):
    """The model and how an evaluator prunes and scores candidates (with a `DataConfig`, all it needs to
    rebuild the same model and proxy data anywhere)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = "smollm2"
    pattern: str | None = None  # "N:M" semi-structured, None: unstructured
    mode: Literal["sequential", "database"] = "sequential"
    # block or matrix: owned by the search (search.granularity); a run config copies it here
    granularity: Literal["block", "matrix"] = "block"
    prefix_reuse: bool = True
    device: str = "auto"  # where evaluators compute: auto (the GPU Ray gives an actor, else the CPU), cpu, cuda[:N]
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # the model's dtype (auto: fp16 on a GPU,
    # fp32 on a CPU); Hessians, OBS updates, the projector's master weights and gradient stay in fp32
    threads: int | None = None  # torch threads in this evaluator, at least 1 (None: torch's default)
    loss: Literal["ce", "kl"] = "kl"  # token loss of the fitness: cross-entropy to labels, or KL to the dense model
    # what the projector trains on (and the guard judges it by): "fitness", the fitness's own image-text term (one
    # objective: KL to the dense model's answers when loss is kl), or "ce", answer cross-entropy whatever the fitness
    projector_objective: Literal["fitness", "ce"] = "fitness"
    fitness_nsamples: int = 0  # text segments the fitness is measured on (0: all); the rest only calibrate
    # the fitness's text segments held aside from calibration (no Hessian): L_text then measures text the pruning never
    # fit, as held-out text is; needs fitness_nsamples below data.nsamples (the rest and every image-text sample calibrate)
    fitness_held_aside: bool = False
    screen_nsamples: int = 0  # text segments of the screening slice (0: screening uses all proxy data)
    screen_mm_samples: int = 0  # image-text samples of the screening slice (these three: 0 or more)
    # multi-step selection (search.survivors): the stage slice the screening's survivors are ranked on, the first
    # stage_nsamples text segments / stage_mm_samples image-text samples of the fitness set (so it holds the
    # screening slice); 0: that kind is scored whole at the stage, as at full fidelity
    stage_nsamples: int = 0
    stage_mm_samples: int = 0
    screen_precision: Literal["auto", "fp32", "bf16"] = "auto"  # screening forward: bf16 where the hardware is
    # fast at it (auto: a GPU with bf16, a CPU with AMX/AVX512-BF16), else fp32; full scores stay in the model's dtype
    projector_batch: int = 4  # image-text samples per projector mini-batch step (at least 1)
    monitor_samples: int = Field(16, ge=0)  # image-text samples held aside from projector training (at most half; 0: none):
    # sum c_m L_m is measured on them before/after an update, and the guard keeps an update only if it drops
    # memory (never changes which policy wins; see docs/cluster.md "Memory")
    offload: bool = False  # decoder blocks in CPU memory, each on the device only while it runs
    offload_dir: str | None = None  # local directory: dense weights and level database as memory-mapped files
    prefix_cache_gb: float | None = Field(4.0, ge=0)  # block outputs kept for prefix reuse, off the device (None: no bound)
    projector_microbatch: int = Field(0, ge=0)  # image-text samples per backward pass of a projector step (0: all)
    activation_checkpointing: bool = False  # projector gradient: recompute each block in the backward pass

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, v):
        if isinstance(v, str) and v not in ("sequential", "database"):
            raise setting_error(f"mode must be 'sequential' or 'database', got '{v}'")
        return v

    @field_validator("projector_batch", "threads")
    @classmethod
    def _at_least_one(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is not None and v < 1:
            raise setting_error(f"{info.field_name} must be a positive integer")
        return v

    @field_validator("screen_nsamples", "screen_mm_samples", "fitness_nsamples", "stage_nsamples", "stage_mm_samples")
    @classmethod
    def _zero_or_more(cls, v: int, info: ValidationInfo) -> int:
        if v < 0:
            raise setting_error(f"{info.field_name} must be 0 or a positive integer")
        return v

    @model_validator(mode="after")
    def _held_aside_fitness_is_a_slice(self) -> "EngineConfig":
        if self.fitness_held_aside and not self.fitness_nsamples:
            raise setting_error("fitness_held_aside needs fitness_nsamples (the text segments held aside from "
                                "calibration to measure the fitness on)")
        return self

    @model_validator(mode="after")
    def _stage_holds_the_screen(self) -> "EngineConfig":
        """The stage slice (multi-step selection) is larger than the screening slice and holds it, per kind."""
        for kind, screen, stage in (("nsamples", self.screen_nsamples, self.stage_nsamples),
                                    ("mm_samples", self.screen_mm_samples, self.stage_mm_samples)):
            if stage and not screen:
                raise setting_error(f"stage_{kind} ({stage}) needs screen_{kind}: without it screening already "
                                    "scores that kind whole, so a stage slice of it would be smaller")
            if stage and stage < screen:
                raise setting_error(f"stage_{kind} ({stage}) must be at least screen_{kind} ({screen}): the stage "
                                    "slice holds the screening slice")
        return self

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v == "auto":
            return v
        import torch

        try:
            kind = torch.device(v).type
        except (RuntimeError, ValueError):
            kind = None
        if kind not in ("cpu", "cuda"):
            raise setting_error(f"device '{v}' (use auto, cpu, cuda or cuda:N)")
        return v

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, v: str | None) -> str | None:
        from efficientllava.prune_engine.sparsegpt import Pattern

        Pattern.parse(v)  # a ValueError says what is malformed
        return v

    @field_validator("model")
    @classmethod
    def _model(cls, v: str, info: ValidationInfo) -> str:
        """Known from its files when it is local (a path starting with '.' always is; others may exist on the
        cluster's nodes only)."""
        if info.context is None:
            return v
        from efficientllava.prune_engine.models.adapter import ModelError
        from efficientllava.prune_engine.models.loading import model_facts

        try:
            model_facts(v)
        except ModelError as exc:
            if _local(info) or v.startswith("."):
                raise ValueError(str(exc)) from None
        return v

    @field_validator("offload_dir")
    @classmethod
    def _offload_dir(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and _local(info):  # on a remote cluster the directory is the nodes'
            from pathlib import Path

            from efficientllava.prune_engine.checks import check_output_dir

            try:
                check_output_dir(Path(v), "offload_dir")
            except ValueError as exc:
                raise setting_error(str(exc)) from None
        return v


class HeldoutConfig(BaseModel):
    """Held-out evaluation of a pruned model: perplexity on text, accuracy on VQA sets, in-distribution and
    shifted (another text domain, questions in wordings the proxy never uses).

    `split` says which data: "val" (held aside from the training files; every choice — eta, a default,
    a preset — is scored here) or "test" (reports only, never chooses)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    split: Literal["val", "test"] = "test"
    text: str | None = None  # in-distribution text; None: the Wikipedia articles of the split (wiki:val / wiki:eval)
    segments: int = Field(16, ge=1)
    seqlen: int = Field(256, ge=2)
    vqa: int = Field(200, ge=1, description="questions per VQA set (LLaVA models)")
    seed: int = 0
    shifted: bool = True  # also: other-domain text (pydoc) and the VQA images asked in other words
    # test only: leave out the test data that earlier defaults were chosen on (before the validation split
    # existed): the first 64x256 tokens of wiki:eval and the seed-0 draw of 1,000 questions per VQA test set
    exclude_used: bool = True

    @property
    def text_spec(self) -> str:
        return self.text or ("wiki:eval" if self.split == "test" else "wiki:val")

    def text_sets(self) -> dict[str, str]:
        """{column: text spec}: `ppl` in-distribution, `ppl_pydoc` another domain (the Python docs)."""
        return {"ppl": self.text_spec, **({"ppl_pydoc": f"pydoc:{self.split}"} if self.shifted else {})}

    def vqa_sets(self) -> dict[str, str]:
        """{column: image-text spec}: the split's questions as generated, and (shifted) rephrased."""
        sets = {"easy_vqa": f"easy-vqa:{self.split}", "fashion_mnist": f"fashion-mnist:{self.split}"}
        if self.shifted:
            sets.update({f"{k}_rephrased": v.replace(":", "-rephrased:") for k, v in list(sets.items())})
        return sets
