"""Held-out metrics of one model, as the demo, the Tune sweep and the benchmarks compare models: perplexity, VQA accuracy, sparsity."""
from __future__ import annotations

from efficientllava.prune_engine.config import HeldoutConfig


def heldout_metrics(model: str, heldout: HeldoutConfig = HeldoutConfig(), vqa: dict[str, str] | None = None,
                    device: str = "auto", dtype: str = "auto") -> dict:
    """The numbers the demo, the Tune sweep and the benchmarks compare models on, with the model on
    `device` (auto: the GPU when one is visible, else the CPU) in `dtype` (precision.DTYPES; auto:
    float16 on a GPU, float32 on a CPU), as a run's engine.device and engine.dtype say.

    Held-out perplexity on `heldout.text`, accuracy (constrained choice) on `heldout.vqa` seeded
    questions of each VQA set of `vqa` ({column: spec}, skipped — NaN — for text-only models) and
    the achieved mean sparsity of the decoder's pruned matrices."""
    from efficientllava.prune_engine.data.calibration import load_vqa, tokenizer_of
    from efficientllava.prune_engine.data.text import eval_segments, load_text
    from efficientllava.prune_engine.evaluation.perplexity import perplexity
    from efficientllava.prune_engine.evaluation.vqa import vqa_accuracy
    from efficientllava.prune_engine.models.loading import load_model

    vqa = {"easy_vqa": "easy-vqa:test", "fashion_mnist": "fashion-mnist:test"} if vqa is None else vqa
    from efficientllava.prune_engine.precision import resolve_device

    adapter, processor = load_model(model, dtype, resolve_device(device))
    ids = eval_segments(tokenizer_of(processor), load_text(heldout.text), heldout.segments, heldout.seqlen)
    row = {"ppl": perplexity(adapter, ids, progress=False)["perplexity"]}
    for name, spec in vqa.items():
        if not adapter.is_llava:
            row[name] = float("nan")
            continue
        samples = load_vqa(spec, limit=heldout.vqa, seed=heldout.seed)
        row[name] = vqa_accuracy(adapter.model, processor, samples, progress=False)["accuracy"]
    weights = [m.weight for i in range(adapter.num_blocks) for m in adapter.linears(i).values()]
    row["sparsity"] = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    return row
