"""The one-shot prune job (`efficientllava prune`): one typed job, validated before any model is loaded, saved whole or not at all."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from efficientllava.prune_engine.calibrated import build_pruner
from efficientllava.prune_engine.config import DataConfig, EngineConfig
from efficientllava.prune_engine.data.calibration import describe
from efficientllava.prune_engine.models.adapter import MATRIX_NAMES, ModelError
from efficientllava.prune_engine.models.loading import load_processor, resolve_model_path, text_only_reason
from efficientllava.prune_engine.pipeline import PruneReport, block_ratios
from efficientllava.prune_engine.sparsegpt import Pattern, PruneConfigError, check_sparsity


class PruneJob(BaseModel):
    """The job's options, flat as the CLI gives them and policy.json records them ("job"); the ones that say how
    the model is pruned map onto the engine's settings (`engine`), which build the pruner as for a search."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    out: Path
    sparsity: float = 0.5
    pattern: str | None = None  # "2:4", "4:8"... (None = unstructured)
    policy: Path | None = None  # JSON with per-block ratios (overrides sparsity)
    owl: float | None = None  # OWL baseline: per-block ratios around `sparsity` spanning 2*owl (lambda)
    owl_m: float = 5.0  # OWL outlier threshold: score > owl_m x the block's mean score
    data: DataConfig = DataConfig()  # calibration data
    blocksize: int = 128
    percdamp: float = 0.01
    device: str = "cpu"
    dtype: str = "auto"  # the model's dtype (precision.DTYPES; auto: fp16 on a GPU, fp32 on a CPU)
    offload: bool = False  # decoder blocks in CPU memory, each on the device only while it is pruned
    offload_dir: Path | None = None  # dense weight copies as memory-mapped files here (default: CPU memory)
    overwrite: bool = False
    progress: bool = True

    @field_validator("sparsity")
    @classmethod
    def _sparsity(cls, v):
        return check_sparsity(v)

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, v):
        Pattern.parse(v)
        return v

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v):
        from efficientllava.prune_engine.precision import check_dtype

        return check_dtype(v)

    @field_validator("owl")
    @classmethod
    def _owl(cls, v):
        if v is not None and not 0 <= v < 0.5:
            raise ValueError("OWL lambda must be in [0, 0.5)")
        return v

    @field_validator("blocksize")
    @classmethod
    def _positive(cls, v):
        if v < 1:
            raise ValueError("must be a positive integer")
        return v

    @model_validator(mode="after")
    def _one_source_of_ratios(self) -> "PruneJob":
        """The ratios come from one place: `sparsity`, an N:M `pattern`, a `policy` file, or `owl` around
        `sparsity` (`sparsity` counts as chosen only when it was given, else it is the default 0.5)."""
        if "sparsity" in self.model_fields_set and (self.pattern or self.policy):
            raise ValueError(f"--sparsity conflicts with {'--pattern' if self.pattern else '--policy'}: "
                             f"{'an N:M pattern fixes the sparsity' if self.pattern else 'the policy holds the ratios'}; "
                             "drop --sparsity")
        if Pattern.parse(self.pattern).structured and (self.policy or self.owl is not None):
            raise PruneConfigError("an N:M pattern fixes the sparsity; do not combine it with --policy or --owl")
        if self.policy and self.owl is not None:
            raise PruneConfigError("--owl computes its own per-block policy; do not combine it with --policy")
        return self

    @property
    def engine(self) -> EngineConfig:
        """The engine's settings for this job: one policy, so no prefix reuse; calibration loss cross-entropy.
        The device is the job's, as the prune command checked it (it may be mps, which a search's engine refuses)."""
        engine = EngineConfig(model=self.model, pattern=self.pattern, dtype=self.dtype, offload=self.offload,
                              offload_dir=None if self.offload_dir is None else str(self.offload_dir),
                              loss="ce", prefix_reuse=False)
        return engine.model_copy(update={"device": self.device})


def read_policy(path: Path) -> list:
    """A policy file: {"ratios": [r_0, ..., r_{K-1}]} (one per block) or per-matrix dicts, or a bare list."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise PruneConfigError(f"policy file {path} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PruneConfigError(f"policy file {path} is not valid JSON: {exc}") from None
    ratios = data.get("ratios") if isinstance(data, dict) else data
    if not isinstance(ratios, list) or not ratios:
        raise PruneConfigError(f"policy file {path}: expected a list of ratios under 'ratios'")
    short = {n.split(".")[-1]: n for n in MATRIX_NAMES}
    out = []
    for i, entry in enumerate(ratios):
        if isinstance(entry, (int, float)):
            out.append(check_sparsity(entry))
        elif isinstance(entry, dict):
            unknown = set(entry) - set(short) - set(MATRIX_NAMES)
            if unknown:
                raise PruneConfigError(f"policy file {path}, block {i}: unknown matrices {sorted(unknown)}")
            out.append({short.get(k, k): check_sparsity(v) for k, v in entry.items()})
        else:
            raise PruneConfigError(f"policy file {path}, block {i}: expected a number or an object")
    return out


def _check_against_config(job: PruneJob, policy, pattern: Pattern) -> None:
    """Policy length and N:M divisibility from config.json alone, before calibration."""
    from efficientllava.prune_engine.models.loading import model_facts

    facts = model_facts(job.model) or {}
    blocks = facts.get("layers")
    if blocks and isinstance(policy, list) and len(policy) != blocks:
        raise PruneConfigError(f"policy has {len(policy)} entries, the model has {blocks} decoder blocks")
    if pattern.structured:
        for key in ("hidden", "intermediate"):
            cols = facts.get(key)
            if cols and cols % pattern.m:
                raise PruneConfigError(f"{pattern} needs the input size ({cols}) to be a multiple of {pattern.m}")


def check_out_dir(out: Path, overwrite: bool) -> None:
    from efficientllava.prune_engine.checks import check_output_dir

    check_output_dir(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise PruneConfigError(f"output directory {out} exists and is not empty (use --overwrite)")


def save_model_dir(adapter, processor, out: Path, extra_files: dict[str, dict], overwrite: bool) -> None:
    """Write with save_pretrained into a temporary sibling, then move into place (nothing half-written)."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    adapter.model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    if adapter.is_multimodal and not hasattr(processor, "image_processor"):
        _copy_processor_files(adapter.name, tmp)
    for name, content in extra_files.items():
        (tmp / name).write_text(json.dumps(content, indent=2))
    if out.exists():
        if not overwrite and any(out.iterdir()):
            shutil.rmtree(tmp)
            raise PruneConfigError(f"output directory {out} appeared while pruning")
        shutil.rmtree(out)
    tmp.rename(out)


def save_pruned_model(adapter, processor, out: Path, report: PruneReport, policy: dict, overwrite: bool) -> None:
    """A pruned model's directory: the model (save_model_dir), `policy` as policy.json and what `report` says the
    pruning achieved as sparsity.json (the prune job's and the search's final model alike)."""
    sparsity = {"mean": report.mean_sparsity, "blocks": report.sparsity, "log_norm_ratio": report.log_norm_ratio}
    save_model_dir(adapter, processor, out, {"policy.json": policy, "sparsity.json": sparsity}, overwrite)


#: processor files besides the tokenizer's (kept when the engine only used the tokenizer)
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "video_preprocessor_config.json",
                   "chat_template.json", "chat_template.jinja")


def _copy_processor_files(spec: str, dest: Path) -> None:
    """The source directory's processor files that the tokenizer alone did not write."""
    source = Path(resolve_model_path(spec)) if spec else None
    if source is None or not source.is_dir():
        return
    for name in PROCESSOR_FILES:
        if (source / name).is_file() and not (dest / name).exists():
            shutil.copyfile(source / name, dest / name)


def run_prune(job: PruneJob, log=print) -> dict:
    pattern = Pattern.parse(job.pattern)
    policy = read_policy(job.policy) if job.policy else job.sparsity
    check_out_dir(job.out, job.overwrite)
    _check_against_config(job, policy, pattern)
    processor = load_processor(job.model)  # data problems surface before the weights are loaded
    if job.data.mm_calib:
        reason = text_only_reason(job.model, processor)
        if reason:
            raise ModelError(f"--mm-calib needs a LLaVA model (image-text) with its image processor: {reason}")
    built = build_pruner(job.engine, job.data, processor=processor, progress=job.progress, blocksize=job.blocksize,
                         percdamp=job.percdamp)
    adapter, batches = built.adapter, built.proxy.batches
    log(f"calibration: {describe(batches)}")
    if job.owl is not None:
        from efficientllava.prune_engine.owl import outlier_ratios, owl_policy

        outliers = outlier_ratios(adapter, batches, job.owl_m)
        policy = owl_policy(outliers, job.sparsity, job.owl, [sum(c.values()) for c in adapter.param_counts()])
        log(f"OWL ratios (lambda {job.owl}, M {job.owl_m}): " + " ".join(f"{r:.3f}" for r in policy))
    ratios = block_ratios(policy, adapter)  # validates the policy length against the model
    report = built.pruner.prune([r if not pattern.structured else {n: pattern.sparsity for n in r} for r in ratios])
    log(f"pruned {adapter.num_blocks} blocks in {report.seconds:.1f} s: mean sparsity {report.mean_sparsity:.4f}, "
        f"calibration loss {report.loss:.4f}")
    summary = {"model": job.model, "pattern": str(pattern), "mean_sparsity": report.mean_sparsity,
               "calibration_loss": report.loss, "seconds": report.seconds,
               "ratios": [r if not pattern.structured else pattern.sparsity for r in
                          (policy if isinstance(policy, list) else [policy] * adapter.num_blocks)],
               "job": json.loads(job.model_dump_json())}
    save_pruned_model(adapter, built.processor, job.out, report, summary, job.overwrite)
    log(f"saved to {job.out}")
    return summary


