"""The `efficientllava` command line."""
from __future__ import annotations

import json
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="EfficientLLaVA: auto-prune vision-language models (SRM-guided search + SparseGPT) on Ray.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
eval_app = typer.Typer(help="Evaluate a (pruned) model.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")

MODEL_HELP = "Model: a local directory, a hub id (org/name, needs network), 'smollm2' or 'smol-llava' (embedded)."
# help texts are rich markup: a literal '[' must be written '\\[' or rich takes it for a style tag
TEXT_HELP = ("Text: 'wiki:calib' / 'wiki:eval' (embedded Wikipedia, disjoint articles), a .txt, .json or .jsonl "
             "file, or hf:DATASET with optional :CONFIG, @SPLIT and #COLUMN.")
VQA_HELP = ("easy-vqa\\[:split], fashion-mnist\\[:split], or scienceqa / vizwiz / mmvet / llava-bench "
            "\\[:split] from the hub, or :FILE (a local .parquet/.json/.jsonl in the hub schema), "
            "e.g. scienceqa:sqa.parquet.")


@app.callback()
def _quiet_loading() -> None:
    """Weight-loading bars of transformers are noise next to our own progress."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # inherited by the Ray actors too
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import warnings

    # transformers' own deprecation notice about its LLaVA forward: not actionable by a user
    warnings.filterwarnings("ignore", message=r".*past_key_values.*deprecated", category=FutureWarning)
    from transformers.utils import logging

    logging.disable_progress_bar()


@contextmanager
def one_line_errors():
    """Known user errors become one line on stderr and exit code 2."""
    from pydantic import ValidationError

    from prune_engine.data.text import DataError
    from prune_engine.models.adapter import ModelError
    from prune_engine.sparsegpt import PruneConfigError

    try:
        yield
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        typer.echo(f"error: {where}: {err['msg']}", err=True)
        raise typer.Exit(2) from None
    except (DataError, ModelError, PruneConfigError, ValueError, OSError) as exc:
        typer.echo(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", err=True)
        raise typer.Exit(2) from None


def _sigterm_as_interrupt(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt


@contextmanager
def resumable(how_to_continue: str):
    """Ctrl-C and SIGTERM end a search with exit code 130 and one line saying how to continue it."""
    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        yield
    except KeyboardInterrupt:
        typer.echo(f"interrupted; {how_to_continue}", err=True)
        raise typer.Exit(130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


@app.command()
def prune(
    model: str = typer.Option(..., help=MODEL_HELP),
    out: Path = typer.Option(..., help="Output directory (save_pretrained + policy.json + sparsity.json)."),
    sparsity: Optional[float] = typer.Option(None, help="Target sparsity of every pruned matrix, in \\[0, 1) "
                                             "(default: 0.5; not with --pattern or --policy)."),
    pattern: Optional[str] = typer.Option(None, help="N:M semi-structured pattern, e.g. 2:4 (N non-zeros in M)."),
    policy: Optional[Path] = typer.Option(None, help="JSON policy: {\"ratios\": \\[one ratio per block]} "
                                          "(the policy.json of `search`)."),
    owl: Optional[float] = typer.Option(None, metavar="LAMBDA",
                                        help="OWL baseline: per-block ratios from the blocks' outlier ratios, "
                                             "spanning 2*LAMBDA around --sparsity (OWL's default: 0.08)."),
    owl_m: float = typer.Option(5.0, help="OWL outlier threshold M (score > M x the block's mean)."),
    calib: str = typer.Option("wiki:calib", help=TEXT_HELP),
    nsamples: int = typer.Option(32, help="Calibration segments."),
    seqlen: int = typer.Option(256, help="Tokens per calibration segment."),
    mm_calib: Optional[str] = typer.Option(None, help="Image-text calibration for LLaVA: " + VQA_HELP),
    mm_samples: int = typer.Option(32, help="Image-text calibration samples."),
    seed: int = typer.Option(0, help="Seed for the calibration sample."),
    batch_size: Optional[int] = typer.Option(None, help="Calibration batch size (default: all at once)."),
    device: str = typer.Option("cpu", help="Device, e.g. cpu or cuda:0."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty output directory."),
    allow_eval_split: bool = typer.Option(False, "--allow-eval-split", help="Calibrate on an evaluation split "
                                          "anyway (it leaks into the model; refused by default)."),
):
    """Prune a model's language model with layer-sequential SparseGPT (uniform ratio, N:M, or a policy)."""
    with one_line_errors():
        from prune_engine.checks import check_device, check_positive, check_seqlen
        from prune_engine.models.loading import model_kind
        from prune_engine.prune import PruneJob, run_prune

        if sparsity is not None and (pattern or policy):
            raise ValueError(f"--sparsity conflicts with {'--pattern' if pattern else '--policy'}: "
                             f"{'an N:M pattern fixes the sparsity' if pattern else 'the policy holds the ratios'}; "
                             "drop --sparsity")
        sparsity = 0.5 if sparsity is None else sparsity
        check_positive(batch_size=batch_size)
        check_device(device)
        model_kind(model)
        check_seqlen(model, seqlen)
        job = PruneJob(model=model, out=out, sparsity=sparsity, pattern=pattern, policy=policy, owl=owl,
                       owl_m=owl_m, calib=calib, nsamples=nsamples, seqlen=seqlen, mm_calib=mm_calib, mm_samples=mm_samples, seed=seed,
                       batch_size=batch_size, device=device, overwrite=overwrite, allow_eval_split=allow_eval_split)
        run_prune(job, log=lambda m: typer.echo(m, err=True))


@eval_app.command("ppl")
def eval_ppl(
    model: str = typer.Option(..., help=MODEL_HELP),
    text: str = typer.Option("wiki:eval", help=TEXT_HELP),
    nsamples: Optional[int] = typer.Option(64, help="Evaluation segments (consecutive windows)."),
    seqlen: int = typer.Option(256, help="Tokens per segment (at most the model's context)."),
    batch_size: int = typer.Option(8, help="Segments per forward pass."),
    device: str = typer.Option("cpu", help="Device, e.g. cpu or cuda:0."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the result as JSON here."),
):
    """Perplexity on held-out text."""
    with one_line_errors():
        from prune_engine.checks import (check_device, check_forward_memory, check_output_file, check_positive, check_seqlen)
        from prune_engine.models.loading import model_kind

        check_positive(nsamples=nsamples, seqlen=seqlen, batch_size=batch_size)
        check_device(device)
        model_kind(model)
        check_seqlen(model, seqlen)
        check_forward_memory(model, min(batch_size, nsamples or batch_size), seqlen, device)
        if json_out:
            check_output_file(json_out, "--json")
        from prune_engine.data.calibration import tokenizer_of
        from prune_engine.data.text import eval_segments, load_text
        from prune_engine.evaluation.perplexity import perplexity
        from prune_engine.models.loading import load_model

        adapter, processor = load_model(model, device=device)
        segments = eval_segments(tokenizer_of(processor), load_text(text), nsamples, seqlen)
        result = {"model": model, "text": text, **perplexity(adapter, segments, batch_size)}
        typer.echo(f"perplexity {result['perplexity']:.3f} on {result['segments']} x {seqlen} tokens of {text}")
        if json_out:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(result, indent=2))


# ---- search / resume (Ray) ---------------------------------------------------------------
@contextmanager
def search_errors():
    """one_line_errors, plus checkpoint errors and Ray's wrapping of errors raised in actors."""
    from search.checkpoint import CheckpointError

    with one_line_errors():
        try:
            yield
        except CheckpointError as exc:
            typer.echo(f"error: {str(exc).splitlines()[0]}", err=True)
            raise typer.Exit(2) from None


def _log(message: str) -> None:
    typer.echo(message, err=True)


@app.command()
def search(
    out: str = typer.Option(..., help="Run directory (local path or a pyarrow.fs URI such as s3://bucket/run): "
                            "checkpoints, then model/, policy.json, history.parquet."),
    model: Optional[str] = typer.Option(None, help=MODEL_HELP),
    target: Optional[float] = typer.Option(None, help="Target mean sparsity p0 (default: 0.5)."),
    population: Optional[int] = typer.Option(None, help="Policies per generation (default: 16)."),
    generations: Optional[int] = typer.Option(None, help="Generations tau (default: 10)."),
    elites: Optional[int] = typer.Option(None, help="Best policies kept unchanged per generation "
                                         "(default: 4, at most population - 1)."),
    calib: Optional[str] = typer.Option(None, help="Proxy/calibration text (default: wiki:calib). " + TEXT_HELP),
    mm_calib: Optional[str] = typer.Option(None, help="Image-text proxy data (LLaVA; enables the projector step): "
                                           + VQA_HELP),
    eta: Optional[float] = typer.Option(None, help="SRM weight eta in F = -L_proxy - eta*G (default: 0.5); "
                                        "0 = Auto w/o Gen."),
    config: Optional[Path] = typer.Option(None, help="YAML/TOML with sections search:, engine:, ray: (flags win)."),
    address: Optional[str] = typer.Option(None, help="Ray cluster: 'auto', host:port or ray://...; "
                                          "default: start a local cluster."),
    actors: Optional[int] = typer.Option(None, help="Evaluator actors (default: one per GPU, else one per "
                                         "--cpus-per-actor CPUs)."),
    gpus_per_actor: Optional[float] = typer.Option(None, help="GPUs per evaluator actor, may be a fraction "
                                                   "[1 when the cluster has GPUs, else 0]."),
    cpus_per_actor: Optional[float] = typer.Option(None, help="CPUs per evaluator actor (default: 1)."),
    max_restarts: Optional[int] = typer.Option(None, help="Restarts per actor after a crash (default: 3)."),
    mode: Optional[str] = typer.Option(None, help="sequential | database (prune every block at every level once, "
                                       "stitch candidates) (default: sequential)."),
    nsamples: Optional[int] = typer.Option(None, help="Proxy text segments (default: 32)."),
    seqlen: Optional[int] = typer.Option(None, help="Tokens per segment (default: 256)."),
    mm_samples: Optional[int] = typer.Option(None, help="Image-text proxy samples (default: 32)."),
    seed: Optional[int] = typer.Option(None, help="Seed of the search and of the proxy sample (default: 0)."),
    granularity: Optional[str] = typer.Option(None, help="block | matrix (default: block)."),
    projector_mode: Optional[str] = typer.Option(None, help="weighted | uniform | off (default: weighted)."),
    projector_steps: Optional[int] = typer.Option(None, help="Projector optimizer steps per generation (default: 1)."),
    projector_lr: Optional[float] = typer.Option(None, help="Projector learning rate (default: 1e-4)."),
    threads: Optional[int] = typer.Option(None, help="Torch threads per actor (default: int(cpus_per_actor))."),
    num_cpus: Optional[int] = typer.Option(None, help="CPUs of the local cluster (without --address)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", metavar="KEY=VALUE",
                                             help="Any setting as section.key=value, e.g. search.elites=2 or "
                                             "engine.nsamples=8 (repeatable)."),
    preset: str = typer.Option("default", help="Starting settings: 'default' (many children screened on a slice "
                               "of the proxy data per generation; best held-out quality per minute measured here) or "
                               "'paper' (16 policies x 10 generations, eta 0.5, k 5, every candidate on all data) or 'none' "
                               "(built-in defaults); --config, --set and flags override it."),
    progress: bool = typer.Option(True, help="Progress bars on stderr."),
):
    """Search per-block sparsity ratios (genetic search, SRM fitness, projector evolution) on Ray,
    then prune the model with the best policy."""
    from actors.storage import absolute

    with resumable(f"continue with `efficientllava resume {absolute(out)}`"), search_errors():
        from actors.config import RunConfig
        from actors.run import check_new_run_dir

        flags = {
            "search.target": target, "search.population": population, "search.generations": generations,
            "search.elites": _elites(elites, population, config, set_),
            "search.eta": eta, "search.seed": seed, "search.granularity": granularity,
            "search.projector_mode": projector_mode, "search.projector_steps": projector_steps,
            "search.projector_lr": projector_lr,
            "engine.model": model, "engine.calib": calib, "engine.mm_calib": mm_calib, "engine.mode": mode,
            "engine.nsamples": nsamples, "engine.seqlen": seqlen, "engine.mm_samples": mm_samples,
            "engine.seed": seed, "engine.threads": threads,
            "ray.address": address, "ray.actors": actors, "ray.gpus_per_actor": gpus_per_actor,
            "ray.cpus_per_actor": cpus_per_actor, "ray.max_restarts": max_restarts, "ray.num_cpus": num_cpus,
        }
        run = RunConfig.load(config, flags, set_, preset=preset)
        if model is None and not (config and "model" in _engine_keys(config, set_)):
            raise ValueError("missing --model (or engine.model in --config)")
        out = absolute(out)
        check_new_run_dir(out)
        from actors.run import run_search

        run_search(run, out, progress=progress, log=_log)


def _elites(elites: int | None, population: int | None, config: Path | None, sets: list[str] | None) -> int | None:
    """--elites, or for a small --population (<= 4) without an explicit elites setting: population - 1."""
    if elites is not None or population is None or population > 4:
        return elites
    if any(s.replace("-", "_").startswith("search.elites") for s in sets or []):
        return None
    if config is not None:
        from actors.config import read_sections

        if "elites" in (read_sections(config).get("search") or {}):
            return None
    return max(1, population - 1)


def _engine_keys(config: Path, sets: list[str] | None) -> set:
    from actors.config import read_sections

    keys = set((read_sections(config).get("engine") or {}).keys())
    return keys | {s.partition("=")[0].removeprefix("engine.") for s in sets or [] if s.startswith("engine.")}


@app.command()
def resume(
    run_dir: str = typer.Argument(..., help="Run directory of a stopped (or finished) `search`."),
    address: Optional[str] = typer.Option(None, help="Ray cluster (default: the saved one; none = local cluster)."),
    actors: Optional[int] = typer.Option(None, help="Evaluator actors (does not change the result)."),
    gpus_per_actor: Optional[float] = typer.Option(None, help="GPUs per evaluator actor."),
    cpus_per_actor: Optional[float] = typer.Option(None, help="CPUs per evaluator actor."),
    max_restarts: Optional[int] = typer.Option(None, help="Restarts per actor after a crash."),
    num_cpus: Optional[int] = typer.Option(None, help="CPUs of the local cluster (without --address)."),
    generations: Optional[int] = typer.Option(None, help="Run to this many generations instead of the saved number."),
    progress: bool = typer.Option(True, help="Progress bars on stderr."),
):
    """Continue a search from its last checkpoint (same result as an uninterrupted run), then
    prune the model with the best policy."""
    from actors.storage import absolute

    with resumable(f"continue with `efficientllava resume {absolute(run_dir)}`"), search_errors():
        from actors.run import resume_search

        overrides = {"address": address, "actors": actors, "gpus_per_actor": gpus_per_actor,
                     "cpus_per_actor": cpus_per_actor, "max_restarts": max_restarts, "num_cpus": num_cpus}
        if generations is not None and generations < 1:
            raise ValueError("--generations must be at least 1")
        resume_search(absolute(run_dir), overrides, generations, progress=progress, log=_log)




@app.command()
def tune(
    model: Optional[str] = typer.Option(None, help=MODEL_HELP),
    eta: str = typer.Option("0,0.1,0.25,0.5,1.0", help="Comma-separated eta values: one trial (one search) each."),
    storage: Path = typer.Option(Path("runs/tune"), help="Tune storage path (the experiment is STORAGE/NAME)."),
    name: str = typer.Option("eta-sweep", help="Experiment name; the same command again restores it (other "
                             "settings under the same name are refused)."),
    metric: str = typer.Option("ppl", help="What picks the best eta: ppl (held-out, min), easy_vqa or "
                               "fashion_mnist (accuracy, max)."),
    target: Optional[float] = typer.Option(None, help="Target mean sparsity p0 (default: 0.5)."),
    population: Optional[int] = typer.Option(None, help="Policies per generation (default: 16)."),
    generations: Optional[int] = typer.Option(None, help="Generations tau (default: 10)."),
    elites: Optional[int] = typer.Option(None, help="Best policies kept per generation (default: 4, at most "
                                         "population - 1)."),
    mode: Optional[str] = typer.Option(None, help="sequential | database (default: sequential)."),
    calib: Optional[str] = typer.Option(None, help="Proxy/calibration text (default: wiki:calib)."),
    mm_calib: Optional[str] = typer.Option(None, help="Image-text proxy data (LLaVA), e.g. easy-vqa:train."),
    nsamples: Optional[int] = typer.Option(None, help="Proxy text segments (default: 32)."),
    seqlen: Optional[int] = typer.Option(None, help="Tokens per segment (default: 256)."),
    mm_samples: Optional[int] = typer.Option(None, help="Image-text proxy samples (default: 32)."),
    seed: Optional[int] = typer.Option(None, help="Seed of every trial's search (default: 0)."),
    config: Optional[Path] = typer.Option(None, help="YAML/TOML run config (search:, engine:, ray:); flags win."),
    set_: Optional[list[str]] = typer.Option(None, "--set", metavar="KEY=VALUE",
                                             help="Any setting as section.key=value (repeatable)."),
    preset: str = typer.Option("default", help="Starting settings: 'default' (many children screened on a slice "
                               "of the proxy data per generation; best held-out quality per minute measured here) or "
                               "'paper' (16 policies x 10 generations, eta 0.5, k 5, every candidate on all data) or 'none' "
                               "(built-in defaults); --config, --set and flags override it."),
    address: Optional[str] = typer.Option(None, help="Ray cluster address (default: start a local one)."),
    actors: Optional[int] = typer.Option(None, help="Evaluator actors per trial."),
    max_concurrent: int = typer.Option(1, help="Trials at once (each starts its own evaluator actors)."),
    eval_segments: int = typer.Option(16, help="Held-out text segments of wiki:eval per trial."),
    eval_seqlen: int = typer.Option(256, help="Tokens per held-out segment."),
    eval_vqa: int = typer.Option(200, help="Held-out questions per VQA set (LLaVA models)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the trial table as JSON here."),
):
    """Tune eta with Ray Tune: one trial = one search run, scored on held-out data (resumable)."""
    with resumable("run the same command again to continue the experiment"), search_errors():
        import yaml

        from actors.config import RunConfig
        from actors.tune import TuneJob, format_rows, run_tune
        from prune_engine.checks import check_output_file
        from prune_engine.models.loading import model_facts

        try:
            etas = tuple(float(e) for e in eta.split(",") if e.strip())
        except ValueError:
            raise ValueError(f"--eta: expected comma-separated numbers, got '{eta}'") from None
        flags = {"search.target": target, "search.population": population, "search.generations": generations,
                 "search.elites": _elites(elites, population, config, set_), "search.seed": seed, "engine.model": model, "engine.mode": mode, "engine.calib": calib,
                 "engine.mm_calib": mm_calib, "engine.nsamples": nsamples, "engine.seqlen": seqlen,
                 "engine.mm_samples": mm_samples, "engine.seed": seed, "ray.address": address, "ray.actors": actors}
        run = RunConfig.load(config, flags, set_, preset=preset)
        if model is None and not (config and "model" in _engine_keys(config, set_)):
            raise ValueError("missing --model (or engine.model in --config)")
        if metric in ("easy_vqa", "fashion_mnist") and (model_facts(run.engine.model) or {}).get("llava") is False:
            raise ValueError(f"--metric {metric} needs a LLaVA model; {run.engine.model} is text-only (use --metric ppl)")
        if json_out:
            check_output_file(json_out, "--json")
        sections = yaml.safe_load(run.to_yaml())
        sections["search"].pop("eta", None)
        job = TuneJob(run=sections, etas=etas, storage=str(storage), name=name, metric=metric,
                      max_concurrent=max_concurrent, eval_segments=eval_segments, eval_seqlen=eval_seqlen,
                      eval_vqa=eval_vqa)
        rows = run_tune(job, log=_log)
        typer.echo(format_rows(rows, job.metric))
        if json_out:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(rows, indent=2))
        if any(r["error"] for r in rows):
            typer.echo("some trials failed; run the same command again to retry them", err=True)
            raise typer.Exit(1)


@eval_app.command("vqa")
def eval_vqa(
    model: str = typer.Option(..., help=MODEL_HELP),
    data: str = typer.Option("easy-vqa:test", help=VQA_HELP + " Multiple choice needs a closed answer set."),
    limit: int = typer.Option(500, help="Samples (seeded subset); 0 for all."),
    seed: int = typer.Option(0, help="Seed of the subset."),
    batch_size: int = typer.Option(32, help="Questions per forward pass."),
    device: str = typer.Option("cpu", help="Device, e.g. cpu or cuda:0."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the result as JSON here."),
):
    """VQA accuracy by constrained choice over the answer set, with a per-category breakdown."""
    with one_line_errors():
        from prune_engine.checks import check_device, check_output_file, check_positive
        from prune_engine.models.loading import model_facts

        check_positive(batch_size=batch_size)
        if limit < 0:
            raise ValueError(f"--limit must be 0 (all) or positive, got {limit}")
        check_device(device)
        if (model_facts(model) or {}).get("llava") is False:
            raise ValueError(f"eval vqa needs a LLaVA (image-text) model; {model} is text-only "
                             "(use `efficientllava eval ppl`)")
        if json_out:
            check_output_file(json_out, "--json")
        from prune_engine.data.calibration import load_vqa
        from prune_engine.evaluation.vqa import vqa_accuracy
        from prune_engine.models.loading import load_model

        samples = load_vqa(data, limit=limit or None, seed=seed)
        adapter, processor = load_model(model, device=device)
        result = {"model": model, "data": data, **vqa_accuracy(adapter.model, processor, samples, batch_size)}
        typer.echo(f"accuracy {result['accuracy']:.4f} ({result['correct']}/{result['count']}) on {data}")
        for category, r in sorted(result["per_category"].items()):
            typer.echo(f"  {category:<24} {r['accuracy']:.4f} ({r['correct']}/{r['count']})")
        if json_out:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(result, indent=2))


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="A finished search (or demo) run directory."),
    out: Optional[Path] = typer.Option(None, help="Where to write (default RUN_DIR/report)."),
    benchmarks: Optional[Path] = typer.Option(None, help="Append the benchmark tables and plots of this folder "
                                              "(default: this repository's benchmarks/results, and only for a "
                                              "smol-llava run, which they measure)."),
    no_benchmarks: bool = typer.Option(False, "--no-benchmarks", help="Leave the benchmark tables out."),
):
    """Markdown + HTML report of a search run: fitness curve, policy heatmap, neighbour weights, tables."""
    with one_line_errors():
        from prune_engine.checks import check_output_dir
        from actors.report import DEFAULT_BENCHMARKS, run_model, write_report

        if benchmarks is not None and not benchmarks.is_dir():
            raise ValueError(f"--benchmarks {benchmarks}: not a directory")
        if no_benchmarks and benchmarks is not None:
            raise ValueError("--benchmarks conflicts with --no-benchmarks")
        if out is not None:
            check_output_dir(out)
        if no_benchmarks:
            folder = None
        elif benchmarks is not None:
            folder = benchmarks
        else:  # the repository's tables measure smol-llava: no use next to another model's run
            folder = DEFAULT_BENCHMARKS if run_model(run_dir) == "smol-llava" else None
        typer.echo(f"wrote {write_report(run_dir, out, folder) / 'report.md'} and report.html")


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Run directory of the demo."),
    model: str = typer.Option("smol-llava", help=MODEL_HELP),
    target: float = typer.Option(0.5, help="Target average sparsity."),
    preset: str = typer.Option("default", help="Search settings: default | paper (see `search --help`)."),
    population: Optional[int] = typer.Option(None, help="Policies per generation of the search (default: the "
                                             "preset's)."),
    generations: Optional[int] = typer.Option(None, help="Generations of the search (default: the preset's)."),
    mode: Optional[str] = typer.Option(None, help="sequential | database (default: the preset's)."),
    actors: Optional[int] = typer.Option(None, help="Evaluator actors (default: one per CPU / GPU)."),
    address: Optional[str] = typer.Option(None, help="Ray cluster address (default: start a local one)."),
    eval_vqa_samples: int = typer.Option(150, "--eval-vqa", help="Held-out questions per VQA set."),
    overwrite: bool = typer.Option(False, help="Replace an existing demo run directory."),
):
    """The demo main job: search smol-llava, then compare dense / uniform / searched on held-out data."""
    with resumable(f"the search continues with `efficientllava resume {out.resolve() / 'search'}` "
                   "(or run the demo again with --overwrite)"), one_line_errors(), search_errors():
        from actors.demo import DemoConfig, run_demo

        cfg = DemoConfig(out=out, model=model, target=target, preset=preset, population=population,
                         generations=generations,
                         mode=mode, actors=actors, address=address, eval_vqa=eval_vqa_samples, overwrite=overwrite)
        run_demo(cfg, log=_log)


def main() -> None:  # pragma: no cover
    app(prog_name="efficientllava")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
