"""The engine's settings: the calibration data (`DataConfig`), how candidates are pruned and scored (`EngineConfig`), held-out evaluation (`HeldoutConfig`).

Each setting is declared once, here; the search's run config (actors/config.py), the demo, `tune` and the
benchmarks compose these classes instead of re-declaring their fields. The one-shot `prune` job composes
`DataConfig`; its model options stay flat (as the CLI gives them and its policy.json records them) and map
onto an `EngineConfig` (`PruneJob.engine`), from which the pruner is built as for a search.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def _positive(v: int | None, what: str = "must be a positive integer") -> int | None:
    if v is not None and v < 1:
        raise ValueError(what)
    return v


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
    seed: int = Field(0, description="seed of the draw")
    batch_size: int | None = Field(None, description="calibration batch size (None: all at once)")
    allow_eval_split: bool = Field(False, description="calibrate on an evaluation split anyway (leaks it into "
                                   "the model)")

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
        return self


class EngineConfig(BaseModel):
    """The model and how an evaluator prunes and scores candidates (with a `DataConfig`, all it needs to
    rebuild the same model and proxy data anywhere)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = "smollm2"
    pattern: str | None = None
    mode: str = "sequential"  # or "database"
    granularity: str = "block"  # or "matrix"
    prefix_reuse: bool = True
    device: str = "auto"  # where evaluators compute: auto (the GPU Ray gives an actor, else the CPU), cpu, cuda
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # the model's dtype (auto: fp16 on a GPU,
    # fp32 on a CPU); Hessians, OBS updates, the projector's master weights and gradient stay in fp32
    threads: int | None = None  # torch threads in this evaluator (None: torch's default)
    loss: Literal["ce", "kl"] = "kl"  # token loss of the fitness: cross-entropy to labels, or KL to the dense model
    # what the projector trains on (and the guard judges it by): "fitness", the fitness's own image-text term (one
    # objective: KL to the dense model's answers when loss is kl), or "ce", answer cross-entropy whatever the fitness
    projector_objective: Literal["fitness", "ce"] = "fitness"
    fitness_nsamples: int = 0  # text segments the fitness is measured on (0: all); the rest only calibrate
    screen_nsamples: int = 0  # text segments of the screening slice (0: screening uses all proxy data)
    screen_mm_samples: int = 0  # image-text samples of the screening slice
    screen_precision: Literal["auto", "fp32", "bf16"] = "auto"  # screening forward: bf16 where the hardware is
    # fast at it (auto: a GPU with bf16, a CPU with AMX/AVX512-BF16), else fp32; full scores stay in the model's dtype
    projector_batch: int = 4  # image-text samples per projector mini-batch step
    monitor_samples: int = Field(16, ge=0)  # image-text samples held aside from projector training (at most half; 0: none):
    # sum c_m L_m is measured on them before/after an update, and the guard keeps an update only if it drops
    # memory (never changes which policy wins; see docs/cluster.md "Memory")
    offload: bool = False  # decoder blocks in CPU memory, each on the device only while it runs
    offload_dir: str | None = None  # local directory: dense weights and level database as memory-mapped files
    prefix_cache_gb: float | None = Field(4.0, ge=0)  # block outputs kept for prefix reuse, off the device (None: no bound)
    projector_microbatch: int = Field(0, ge=0)  # image-text samples per backward pass of a projector step (0: all)
    activation_checkpointing: bool = False  # projector gradient: recompute each block in the backward pass


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
