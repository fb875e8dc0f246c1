"""Tuning η (the SRM weight) with Ray Tune: one trial = one whole search run, scored on the validation split.

Fitness values of runs with different η are not comparable (F contains η·G), so every trial
prunes its final model and is scored by perplexity and VQA accuracy on the *validation* split
(wiki:val articles, the easy-VQA / Fashion-MNIST images held aside from the training files, and the
shifted validation sets: Python-docs text, validation wordings) — never on test data, which only
reports; Tune's tables and `best` pick η on those. Layout under STORAGE/NAME (Tune's experiment directory):

    searches/eta=<value>/   the trial's search run directory (checkpoints, model/, policy.json)
    <Tune's own files>      trial results, experiment state (what Tuner.restore reads)

Interrupting and running the same command again restores the experiment with `Tuner.restore`:
finished trials are kept, an unfinished trial resumes its search from its last checkpoint
(so the result is the one an uninterrupted run gives), errored trials are retried. The settings
are saved in STORAGE/NAME/efficientllava-tune.json at the start; a later command with other
settings (another target, eta list, model...) is refused with a line naming the difference.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from efficientllava.prune_engine.config import HeldoutConfig

METRICS = ("ppl", "ppl_pydoc", "easy_vqa", "easy_vqa_rephrased", "fashion_mnist", "fashion_mnist_rephrased")


class TuneJob(BaseModel):
    """Everything one `efficientllava tune` experiment needs (frozen; travels to the trials as JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run: dict  # RunConfig sections (search / engine / data / ray) without eta, validated by RunConfig.from_sections
    etas: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 1.0)
    storage: str = "runs/tune"
    name: str = "eta-sweep"
    metric: str = "ppl"  # perplexities are minimised, accuracies maximised
    max_concurrent: int = Field(1, ge=1)
    heldout: HeldoutConfig = HeldoutConfig(split="val")  # how each trial's model is scored: validation only

    @field_validator("heldout")
    @classmethod
    def _validation_only(cls, v):
        if v.split != "val":
            raise ValueError("tune chooses eta, so it scores on the validation split (heldout.split=val); "
                             "test data only reports")
        return v

    @field_validator("etas")
    @classmethod
    def _etas(cls, v):
        if not v:
            raise ValueError("give at least one eta")
        if any(e < 0 or not math.isfinite(e) for e in v):
            raise ValueError("eta values must be finite and >= 0")
        if len(set(v)) != len(v):
            raise ValueError("eta values must be distinct")
        return tuple(float(e) for e in v)

    @field_validator("metric")
    @classmethod
    def _metric(cls, v):
        if v not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}")
        return v

    @property
    def experiment_dir(self) -> Path:
        return Path(self.storage).resolve() / self.name

    @property
    def mode(self) -> str:
        return "min" if self.metric.startswith("ppl") else "max"


def trial_run_dir(job: TuneJob, eta: float) -> Path:
    return job.experiment_dir / "searches" / f"eta={eta:g}"


def search_trial(config: dict) -> None:
    """Tune's function trainable: run (or resume, or reuse) one search, evaluate its model, report."""
    from ray import tune

    from efficientllava.actors.config import RunConfig
    from efficientllava.actors.run import resume_search, run_search
    from efficientllava.prune_engine.evaluation.heldout import heldout_metrics
    from efficientllava.prune_engine.threads import cpu_threads
    from efficientllava.search.checkpoint import CONFIG, RunStore

    job = TuneJob.model_validate_json(config["job"])
    eta = float(config["eta"])
    sections = json.loads(json.dumps(job.run))
    sections.setdefault("search", {})["eta"] = eta
    run = RunConfig.from_sections(sections)
    run_dir = trial_run_dir(job, eta)
    quiet = lambda _m: None  # noqa: E731  (Tune's table is the progress; the search logs would interleave)
    if (run_dir / "policy.json").exists() and (run_dir / "model" / "config.json").exists():
        pass  # finished before an interruption: only the evaluation is left
    elif RunStore(str(run_dir)).exists() or (run_dir / CONFIG).exists():
        resume_search(str(run_dir), progress=False, log=quiet)
    else:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        run_search(run, str(run_dir), progress=False, log=quiet)
    doc = json.loads((run_dir / "policy.json").read_text())
    # the trial holds no CPU (its actors did, and they are gone): Ray started it with one torch thread; the
    # evaluation takes the CPUs the search's actors held (all of this node's when their count is not set)
    held = run.ray.actors * run.ray.cpus_per_actor if run.ray.actors and run.ray.cpus_per_actor else None
    with cpu_threads(max(int(held), 1) if held else None):
        row = heldout_metrics(str(run_dir / "model"), job.heldout, device=run.engine.device, dtype=run.engine.dtype)
    tune.report({**{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()},
                 "fitness": doc["fitness"], "l_proxy": doc["l_proxy"], "g": doc["g"],
                 "mean_sparsity": doc.get("achieved_mean_sparsity", doc["mean_sparsity"]),
                 "run_dir": str(run_dir)})


def run_tune(job: TuneJob, log: Callable[[str], None] = print) -> list[dict]:
    """Start the experiment, or restore it when STORAGE/NAME already holds one. Returns one row per trial."""
    from ray import tune

    from efficientllava.actors.config import RunConfig

    from efficientllava.actors.run import ray_session

    run = RunConfig.from_sections(job.run)  # fail fast, before Ray starts; each trial sets its own eta
    check_same_settings(job)
    with ray_session(run.ray, log):
        # a trial only waits on its evaluator actors: it holds no CPU, so they can have them all
        # (Tune refuses an all-zero request, hence a token amount of memory)
        trainable = tune.with_resources(search_trial, {"cpu": 0, "memory": 64 * 1024 ** 2})
        path = str(job.experiment_dir)
        if tune.Tuner.can_restore(path):
            log(f"restoring the Tune experiment in {path} (same settings)")
            tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
        else:
            log(f"new Tune experiment in {path}: eta in {list(job.etas)}, one search run per trial")
            tuner = tune.Tuner(
                trainable,
                param_space={"job": job.model_dump_json(), "eta": tune.grid_search(list(job.etas))},
                tune_config=tune.TuneConfig(metric=job.metric, mode=job.mode,
                                            max_concurrent_trials=job.max_concurrent),
                run_config=tune.RunConfig(name=job.name, storage_path=str(Path(job.storage).resolve()),
                                          verbose=1),
            )
            save_settings(job)
        results = tuner.fit()
    return sorted((trial_row(r) for r in results), key=lambda r: r["eta"])


def finished_rows(job: TuneJob) -> list[dict]:
    """The rows of the experiment in STORAGE/NAME as they stand, nothing run (a trial without a result:
    NOT_FINISHED); the experiment must have been made with `job`'s settings."""
    from ray import tune

    from efficientllava.actors.config import ConfigError

    path = str(job.experiment_dir)
    if not tune.Tuner.can_restore(path):
        raise ConfigError(f"no Tune experiment in {path}")
    check_same_settings(job)
    tuner = tune.Tuner.restore(path, tune.with_resources(search_trial, {"cpu": 0, "memory": 64 * 1024 ** 2}))
    # a restored trial that never reported has no config: it is named from the job's etas
    rows = [trial_row(r) for r in tuner.get_results() if r.config]
    seen = {float(r["eta"]) for r in rows}
    rows += [trial_row(SimpleNamespace(config={"eta": eta}, error=None, metrics=None))
             for eta in job.etas if float(eta) not in seen]
    return sorted(rows, key=lambda r: r["eta"])


#: the error of a trial that reported no result: the experiment stopped (Ctrl-C, a lost driver) before it finished
NOT_FINISHED = "not finished: the experiment was interrupted (run the same command again to resume it)"


def trial_row(result) -> dict:
    """One trial's row from its Tune result (`.config`, `.metrics`, `.error`): eta, the error (its first line;
    NOT_FINISHED for a trial without a finished search's result), the held-out metrics and the run's facts."""
    m = result.metrics or {}
    if result.error is not None:
        error = str(result.error).splitlines()[0]
    else:
        error = None if m.get("run_dir") else NOT_FINISHED
    return {"eta": result.config["eta"], "error": error,
            **{k: m.get(k) for k in (*METRICS, "mean_sparsity", "fitness", "l_proxy", "g", "run_dir")}}


SETTINGS = "efficientllava-tune.json"
# may differ when an experiment is restored: they change how it runs, not what it computes
RUNTIME_ONLY = ("max_concurrent", "storage", "name")


def _settings(job: TuneJob) -> dict:
    data = json.loads(job.model_dump_json())
    for key in RUNTIME_ONLY:
        data.pop(key, None)
    data["run"] = {k: v for k, v in data["run"].items() if k != "ray"}  # where it runs: runtime only
    return data


def _differences(saved, mine, prefix: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(mine, dict):
        out = []
        for key in sorted(set(saved) | set(mine)):
            out += _differences(saved.get(key), mine.get(key), f"{prefix}{key}.")
        return out
    return [] if saved == mine else [f"{prefix.rstrip('.')} ({saved!r} then, {mine!r} now)"]


def save_settings(job: TuneJob) -> None:
    job.experiment_dir.mkdir(parents=True, exist_ok=True)
    (job.experiment_dir / SETTINGS).write_text(json.dumps(_settings(job), indent=2, sort_keys=True))


def check_same_settings(job: TuneJob) -> None:
    """An existing experiment is restored only with the settings it was started with (else its results
    would be reported for settings they were not made with): a one-line error naming the difference."""
    from efficientllava.actors.config import ConfigError

    path = job.experiment_dir
    saved_file = path / SETTINGS
    if not path.exists():
        return
    if not saved_file.is_file():
        if any(path.iterdir()):
            raise ConfigError(f"{path} holds an experiment without its settings ({SETTINGS}); "
                              "choose another --name or --storage")
        return
    try:
        saved = json.loads(saved_file.read_text())
    except (OSError, json.JSONDecodeError):
        raise ConfigError(f"{saved_file} is unreadable; choose another --name or --storage") from None
    diff = _differences(saved, _settings(job))
    if diff:
        raise ConfigError(f"the Tune experiment {path} was started with other settings: {'; '.join(diff[:3])}"
                          f"{' ...' if len(diff) > 3 else ''}; rerun with the same settings to restore it, "
                          "or choose a new --name")


def format_rows(rows: list[dict], metric: str) -> str:
    """The trials as a table: validation metrics (in-distribution, then shifted) and the search's own numbers."""
    fmt = lambda v, p=4: "n/a" if v is None else f"{v:.{p}f}"  # noqa: E731
    ok = [r for r in rows if r["error"] is None and r.get(metric) is not None]
    best = (min if metric.startswith("ppl") else max)(ok, key=lambda r: r[metric]) if ok else None
    shown = [m for m in METRICS if any(r.get(m) is not None for r in rows)] or list(METRICS[:1])
    lines = ["| eta | " + " | ".join(f"val {m}" for m in shown) + " | mean sparsity | F | L_proxy | G | |",
             "|---|" + "---|" * (len(shown) + 5)]
    for r in rows:
        mark = "error: " + r["error"] if r["error"] else ("best " + metric if r is best else "")
        lines.append(f"| {r['eta']:g} | " + " | ".join(fmt(r.get(m), 2 if m.startswith("ppl") else 3) for m in shown)
                     + f" | {fmt(r['mean_sparsity'])} | {fmt(r['fitness'])} | {fmt(r['l_proxy'])} | {fmt(r['g'])} "
                     f"| {mark} |")
    return "\n".join(lines)
