"""Held-out metrics of one model, as the demo, the Tune sweep and the benchmarks compare models: perplexity, VQA accuracy, sparsity."""
from __future__ import annotations

from efficientllava.prune_engine.config import HeldoutConfig


def heldout_metrics(model: str, heldout: HeldoutConfig = HeldoutConfig(), vqa: dict[str, str] | None = None) -> dict:
    """The numbers the demo, the Tune sweep and the benchmarks compare models on.

    Perplexity on each text set of `heldout.text_sets()` (`segments` x `seqlen` tokens), accuracy
    (constrained choice) on `heldout.vqa` seeded questions of each VQA set of `vqa` ({column: spec};
    default `heldout.vqa_sets()`; skipped — NaN — for text-only models) and the achieved mean
    sparsity of the decoder's pruned matrices."""
    from efficientllava.prune_engine.data.calibration import load_vqa, tokenizer_of
    from efficientllava.prune_engine.data.text import eval_segments, load_text
    from efficientllava.prune_engine.evaluation.perplexity import perplexity
    from efficientllava.prune_engine.evaluation.vqa import vqa_accuracy
    from efficientllava.prune_engine.models.loading import load_model

    vqa = heldout.vqa_sets() if vqa is None else vqa
    adapter, processor = load_model(model)
    row = {}
    for name, spec in heldout.text_sets().items():
        ids = eval_segments(tokenizer_of(processor), load_text(spec), heldout.segments, heldout.seqlen)
        row[name] = perplexity(adapter, ids, progress=False)["perplexity"]
    for name, spec in vqa.items():
        if not adapter.is_llava:
            row[name] = float("nan")
            continue
        samples = load_vqa(spec, limit=heldout.vqa, seed=heldout.seed)
        row[name] = vqa_accuracy(adapter.model, processor, samples, progress=False)["accuracy"]
    weights = [m.weight for i in range(adapter.num_blocks) for m in adapter.linears(i).values()]
    row["sparsity"] = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    return row
