"""The `efficientllava` command line."""
from __future__ import annotations

import json
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
TEXT_HELP = ("Text: 'wiki:calib' / 'wiki:eval' (embedded Wikipedia, disjoint articles), a .txt/.json/.jsonl file, "
             "or hf:<dataset>[:<config>][@<split>][#<column>].")


@app.callback()
def _quiet_loading() -> None:
    """Weight-loading bars of transformers are noise next to our own progress."""
    from transformers.utils import logging

    logging.disable_progress_bar()


@contextmanager
def one_line_errors():
    """Known user errors become one line on stderr and exit code 2."""
    from pydantic import ValidationError

    from prune_engine.data.text import DataError
    from prune_engine.models import ModelError
    from prune_engine.sparsegpt import PruneConfigError

    try:
        yield
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        typer.echo(f"error: {where}: {err['msg']}", err=True)
        raise typer.Exit(2) from None
    except (DataError, ModelError, PruneConfigError, ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", err=True)
        raise typer.Exit(2) from None


@app.command()
def prune(
    model: str = typer.Option(..., help=MODEL_HELP),
    out: Path = typer.Option(..., help="Output directory (save_pretrained + policy.json + sparsity.json)."),
    sparsity: float = typer.Option(0.5, help="Target sparsity of every pruned matrix, in [0, 1)."),
    pattern: Optional[str] = typer.Option(None, help="N:M semi-structured pattern, e.g. 2:4 (N non-zeros in M)."),
    policy: Optional[Path] = typer.Option(None, help="JSON policy: {\"ratios\": [one per block]} (from `search`)."),
    calib: str = typer.Option("wiki:calib", help=TEXT_HELP),
    nsamples: int = typer.Option(32, help="Calibration segments."),
    seqlen: int = typer.Option(256, help="Tokens per calibration segment."),
    mm_calib: Optional[str] = typer.Option(None, help="Image-text calibration for LLaVA: easy-vqa[:split], "
                                           "fashion-mnist[:split], scienceqa, vizwiz, mmvet, llava-bench."),
    mm_samples: int = typer.Option(32, help="Image-text calibration samples."),
    seed: int = typer.Option(0, help="Seed for the calibration sample."),
    batch_size: Optional[int] = typer.Option(None, help="Calibration batch size (default: all at once)."),
    device: str = typer.Option("cpu", help="Device, e.g. cpu or cuda:0."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty output directory."),
):
    """Prune a model's language model with layer-sequential SparseGPT (uniform ratio, N:M, or a policy)."""
    with one_line_errors():
        from prune_engine.prune import PruneJob, run_prune

        job = PruneJob(model=model, out=out, sparsity=sparsity, pattern=pattern, policy=policy, calib=calib,
                       nsamples=nsamples, seqlen=seqlen, mm_calib=mm_calib, mm_samples=mm_samples, seed=seed,
                       batch_size=batch_size, device=device, overwrite=overwrite)
        run_prune(job, log=lambda m: typer.echo(m, err=True))


@eval_app.command("ppl")
def eval_ppl(
    model: str = typer.Option(..., help=MODEL_HELP),
    text: str = typer.Option("wiki:eval", help=TEXT_HELP),
    nsamples: Optional[int] = typer.Option(64, help="Evaluation segments (consecutive windows)."),
    seqlen: int = typer.Option(256, help="Tokens per segment."),
    batch_size: int = typer.Option(8),
    device: str = typer.Option("cpu"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the result as JSON here."),
):
    """Perplexity on held-out text."""
    with one_line_errors():
        from prune_engine.calibration import tokenizer_of
        from prune_engine.data.text import eval_segments, load_text
        from prune_engine.evaluate import perplexity
        from prune_engine.models import load_model

        adapter, processor = load_model(model, device=device)
        segments = eval_segments(tokenizer_of(processor), load_text(text), nsamples, seqlen)
        result = {"model": model, "text": text, **perplexity(adapter, segments, batch_size)}
        typer.echo(f"perplexity {result['perplexity']:.3f} on {result['segments']} x {seqlen} tokens of {text}")
        if json_out:
            json_out.write_text(json.dumps(result, indent=2))


def main() -> None:  # pragma: no cover
    app(prog_name="efficientllava")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
