"""The `efficientllava` command line (nothing imports it): thin commands over actors/ and prune_engine/; run settings come from actors/options.py."""
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

from efficientllava.actors.demo import DEMO_DEFAULTS, DEMO_HELDOUT_VQA, DEMO_TIME_BUDGET_S
from efficientllava.actors.options import (DATA, DTYPE, OFFLOAD, HELDOUT, RAY, RUN, TEXT_HELP, VQA_HELP, ConfigOption, DeviceOption, JsonOption,
                            ModelOption, PresetOption, SetOption, heldout_config, run_config, with_settings)


@app.callback()
def _quiet_loading() -> None:
    """Weight-loading bars of transformers are noise next to our own progress."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # inherited by the Ray actors too
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import warnings

    # a deprecation notice of transformers about an argument name (our calls use the installed name:
    # prune_engine/models/kv_cache.py): not actionable by a user
    warnings.filterwarnings("ignore", message=r".*past_key_values.*deprecated", category=FutureWarning)
    from transformers.utils import logging

    logging.disable_progress_bar()


@contextmanager
def one_line_errors():
    """Known user errors become one line on stderr and exit code 2."""
    from pydantic import ValidationError

    from efficientllava.prune_engine.data.text import DataError
    from efficientllava.prune_engine.models.adapter import ModelError
    from efficientllava.prune_engine.sparsegpt import PruneConfigError
    from efficientllava.search.config import SETTING_ERROR

    try:
        yield
    except ValidationError as exc:
        err = exc.errors()[0]
        where = "" if err["type"] == SETTING_ERROR else ".".join(str(p) for p in err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        typer.echo(f"error: {where + ': ' if where else ''}{message}", err=True)
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
@with_settings(DATA + DTYPE + OFFLOAD, presets=False)
def prune(
    settings: dict,
    model: str = ModelOption,
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
    device: str = DeviceOption,
    overwrite: bool = typer.Option(False, help="Replace a non-empty output directory."),
):
    """Prune a model's language model with layer-sequential SparseGPT (uniform ratio, N:M, or a policy)."""
    with one_line_errors():
        from efficientllava.prune_engine.checks import check_device, check_output_dir, check_positive, check_seqlen
        from efficientllava.prune_engine.config import DataConfig
        from efficientllava.prune_engine.models.loading import model_kind
        from efficientllava.prune_engine.prune import PruneJob, run_prune

        check_positive(batch_size=settings["data.batch_size"])
        data = DataConfig(**{k.partition(".")[2]: v for k, v in settings.items()
                             if v is not None and k.startswith("data.")})
        check_device(device)
        if settings["engine.offload_dir"] is not None:
            check_output_dir(Path(settings["engine.offload_dir"]), "--offload-dir")
        model_kind(model)
        check_seqlen(model, data.seqlen)
        chosen = {} if sparsity is None else {"sparsity": sparsity}  # PruneJob knows a given one from its default
        job = PruneJob(model=model, out=out, **chosen, pattern=pattern, policy=policy, owl=owl,
                       owl_m=owl_m, data=data, device=device, overwrite=overwrite,
                       dtype=settings["engine.dtype"] or "auto",
                       offload=bool(settings["engine.offload"]), offload_dir=settings["engine.offload_dir"])
        run_prune(job, log=lambda m: typer.echo(m, err=True))


@eval_app.command("ppl")
def eval_ppl(
    model: str = ModelOption,
    text: str = typer.Option("wiki:eval", help=TEXT_HELP),
    nsamples: Optional[int] = typer.Option(64, help="Evaluation segments (consecutive windows)."),
    seqlen: int = typer.Option(256, help="Tokens per segment (at most the model's context)."),
    batch_size: int = typer.Option(8, help="Segments per forward pass."),
    device: str = DeviceOption,
    json_out: Optional[Path] = JsonOption,
):
    """Perplexity on held-out text."""
    with one_line_errors():
        from efficientllava.prune_engine.checks import (check_device, check_forward_memory, check_output_file, check_positive, check_seqlen)
        from efficientllava.prune_engine.models.loading import model_kind

        check_positive(nsamples=nsamples, seqlen=seqlen, batch_size=batch_size)
        check_device(device)
        model_kind(model)
        check_seqlen(model, seqlen)
        check_forward_memory(model, min(batch_size, nsamples or batch_size), seqlen, device)
        if json_out:
            check_output_file(json_out, "--json")
        from efficientllava.prune_engine.data.calibration import tokenizer_of
        from efficientllava.prune_engine.data.text import eval_segments, load_text
        from efficientllava.prune_engine.evaluation.perplexity import perplexity
        from efficientllava.prune_engine.models.loading import load_model

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
    from efficientllava.search.checkpoint import CheckpointError

    with one_line_errors():
        try:
            yield
        except CheckpointError as exc:
            typer.echo(f"error: {str(exc).splitlines()[0]}", err=True)
            raise typer.Exit(2) from None


def _log(message: str) -> None:
    typer.echo(message, err=True)


@app.command()
@with_settings(RUN)
def search(
    settings: dict,
    out: str = typer.Option(..., help="Run directory (local path or a pyarrow.fs URI such as s3://bucket/run): "
                            "checkpoints, then model/, policy.json, history.parquet."),
    config: Optional[Path] = ConfigOption,
    set_: Optional[list[str]] = SetOption,
    preset: str = PresetOption,
    progress: bool = typer.Option(True, help="Progress bars on stderr."),
):
    """Search per-block sparsity ratios (genetic search, SRM fitness, projector evolution) on Ray,
    then prune the model with the best policy."""
    from efficientllava.actors.storage import absolute

    with resumable(f"continue with `efficientllava resume {absolute(out)}`"), search_errors():
        from efficientllava.actors.run import check_new_run_dir, run_search

        run = run_config(settings, config, set_, preset)
        out = absolute(out)
        check_new_run_dir(out)
        run_search(run, out, progress=progress, log=_log)


@app.command()
@with_settings(RAY, presets=False)
def resume(
    settings: dict,
    run_dir: str = typer.Argument(..., help="Run directory of a stopped (or finished) `search`."),
    generations: Optional[int] = typer.Option(None, help="Run to this many generations instead of the saved number."),
    progress: bool = typer.Option(True, help="Progress bars on stderr."),
):
    """Continue a search from its last checkpoint (same result as an uninterrupted run), then
    prune the model with the best policy. The Ray settings default to the saved ones and do not
    change the result."""
    from efficientllava.actors.storage import absolute

    with resumable(f"continue with `efficientllava resume {absolute(run_dir)}`"), search_errors():
        from efficientllava.actors.run import resume_search

        if generations is not None and generations < 1:
            raise ValueError("--generations must be at least 1")
        overrides = {k.partition(".")[2]: v for k, v in settings.items()}
        resume_search(absolute(run_dir), overrides, generations, progress=progress, log=_log)


@app.command()
@with_settings(RUN + HELDOUT, exclude=("search.eta",))
def tune(
    settings: dict,
    eta: str = typer.Option("0,0.1,0.25,0.5,1.0", help="Comma-separated eta values: one trial (one search) each."),
    storage: Path = typer.Option(Path("runs/tune"), help="Tune storage path (the experiment is STORAGE/NAME)."),
    name: str = typer.Option("eta-sweep", help="Experiment name; the same command again restores it (other "
                             "settings under the same name are refused)."),
    metric: str = typer.Option("ppl", help="What picks the best eta, on the validation split: ppl or ppl_pydoc "
                               "(perplexity, min), easy_vqa, easy_vqa_rephrased, fashion_mnist or "
                               "fashion_mnist_rephrased (accuracy, max). Never scored on test data."),
    max_concurrent: int = typer.Option(1, help="Trials at once (each starts its own evaluator actors)."),
    config: Optional[Path] = ConfigOption,
    set_: Optional[list[str]] = SetOption,
    preset: str = PresetOption,
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the trial table as JSON here."),
):
    """Tune eta with Ray Tune: one trial = one search run, scored on held-out data (resumable)."""
    with resumable("run the same command again to continue the experiment"), search_errors():
        from efficientllava.actors.tune import TuneJob, format_rows, run_tune
        from efficientllava.prune_engine.checks import check_output_file
        from efficientllava.prune_engine.models.loading import model_facts

        try:
            etas = tuple(float(e) for e in eta.split(",") if e.strip())
        except ValueError:
            raise ValueError(f"--eta: expected comma-separated numbers, got '{eta}'") from None
        run = run_config(settings, config, set_, preset)
        if not metric.startswith("ppl") and (model_facts(run.engine.model) or {}).get("llava") is False:
            raise ValueError(f"--metric {metric} needs a LLaVA model; {run.engine.model} is text-only (use --metric ppl)")
        if json_out:
            check_output_file(json_out, "--json")
        job = TuneJob(run=run.sections(without=("search.eta",)), etas=etas, storage=str(storage), name=name,
                      metric=metric, max_concurrent=max_concurrent, heldout=heldout_config(settings, run.search.seed, split="val"))
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
    model: str = ModelOption,
    data: str = typer.Option("easy-vqa:test", help=VQA_HELP + " Multiple choice needs a closed answer set."),
    limit: int = typer.Option(500, help="Samples (seeded subset); 0 for all."),
    seed: int = typer.Option(0, help="Seed of the subset."),
    batch_size: int = typer.Option(32, help="Questions per forward pass."),
    device: str = DeviceOption,
    json_out: Optional[Path] = JsonOption,
):
    """VQA accuracy by constrained choice over the answer set, with a per-category breakdown."""
    with one_line_errors():
        from efficientllava.prune_engine.checks import check_device, check_output_file, check_positive
        from efficientllava.prune_engine.models.loading import model_facts

        check_positive(batch_size=batch_size)
        if limit < 0:
            raise ValueError(f"--limit must be 0 (all) or positive, got {limit}")
        check_device(device)
        facts = model_facts(model) or {}
        if facts.get("llava") is False:
            raise ValueError(f"eval vqa needs a LLaVA (image-text) model; {model} is text-only "
                             "(use `efficientllava eval ppl`)")
        if facts.get("image_processor"):
            raise ValueError(f"eval vqa needs the model's image processor: {facts['image_processor']}")
        if json_out:
            check_output_file(json_out, "--json")
        from efficientllava.prune_engine.data.calibration import load_vqa
        from efficientllava.prune_engine.evaluation.vqa import vqa_accuracy
        from efficientllava.prune_engine.models.loading import load_model

        samples = load_vqa(data, limit=limit or None, seed=seed)
        adapter, processor = load_model(model, device=device)
        from efficientllava.prune_engine.models.loading import text_only_reason

        reason = text_only_reason(model, processor)
        if reason:
            raise ValueError(f"eval vqa needs the model's image processor: {reason}")
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
        from efficientllava.prune_engine.checks import check_output_dir
        from efficientllava.actors.report import DEFAULT_BENCHMARKS, run_model, write_report

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
@with_settings(RUN + HELDOUT, exclude=("search.time_budget_s",),
               defaults={**DEMO_DEFAULTS, "heldout.vqa": DEMO_HELDOUT_VQA})
def demo(
    settings: dict,
    out: Path = typer.Option(Path("runs/demo"), help="Run directory of the demo."),
    time_budget: float = typer.Option(DEMO_TIME_BUDGET_S, "--time-budget", metavar="S", min=0,
                                      help="Seconds for the whole demo: the baseline and the held-out evaluation "
                                      "are measured first, the search gets the rest and (default preset) sizes its "
                                      "screening to it. 0: no budget (the preset's fixed screening)."),
    config: Optional[Path] = ConfigOption,
    set_: Optional[list[str]] = SetOption,
    preset: str = PresetOption,
    overwrite: bool = typer.Option(False, help="Replace an existing demo run directory."),
):
    """The demo main job: search smol-llava, then compare dense / uniform / searched on held-out data."""
    with resumable(f"the search continues with `efficientllava resume {out.resolve() / 'search'}` "
                   "(or run the demo again with --overwrite)"), one_line_errors(), search_errors():
        from efficientllava.actors.demo import DemoJob, demo_run_config, run_demo

        run = demo_run_config(settings, config, set_, preset)
        job = DemoJob(out=out, run=run, preset=preset, overwrite=overwrite, time_budget_s=time_budget or None,
                      heldout=heldout_config(settings, run.search.seed, vqa=DEMO_HELDOUT_VQA))
        run_demo(job, log=_log)


def main() -> None:  # pragma: no cover
    app(prog_name="efficientllava")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
