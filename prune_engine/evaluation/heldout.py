"""Held-out metrics of one model, as the demo, the Tune sweep and the benchmarks compare models: perplexity, VQA accuracy, sparsity."""
from __future__ import annotations

from efficientllava.prune_engine.config import HeldoutConfig

#: the test data earlier defaults were chosen on, before the validation split existed (sessions up to
#: commit 8108785 looked at it for the 64 image-text samples, the guard, the screening budget and eta):
#: the first USED_TEXT_TOKENS tokens of wiki:eval, and the seeded draw of USED_VQA questions (seed
#: USED_VQA_SEED) of each VQA test set. A report on test data leaves them out (HeldoutConfig.exclude_used).
USED_TEXT_TOKENS = 64 * 256
USED_VQA, USED_VQA_SEED = 1000, 0


def heldout_text(tokenizer, spec: str, heldout: HeldoutConfig):
    """The `segments` x `seqlen` evaluation windows of a text set (after the used tokens of wiki:eval)."""
    from efficientllava.prune_engine.data.text import eval_segments, load_text

    skip = -(-USED_TEXT_TOKENS // heldout.seqlen) if heldout.exclude_used and spec == "wiki:eval" else 0
    return eval_segments(tokenizer, load_text(spec), skip + heldout.segments, heldout.seqlen)[skip:]


def heldout_questions(spec: str, heldout: HeldoutConfig) -> list:
    """`heldout.vqa` seeded questions of a VQA set; of a test set, drawn from those not in the used draw."""
    from efficientllava.prune_engine.data.calibration import load_vqa
    from efficientllava.prune_engine.data.vqa import seeded_subset

    if not (heldout.exclude_used and heldout.split == "test" and spec.endswith(":test")):
        return load_vqa(spec, limit=heldout.vqa, seed=heldout.seed)
    used = {s.id for s in load_vqa(spec, limit=USED_VQA, seed=USED_VQA_SEED)}
    fresh = [s for s in load_vqa(spec) if s.id not in used]
    return [fresh[i] for i in seeded_subset(len(fresh), heldout.vqa, heldout.seed)]


def heldout_metrics(model: str, heldout: HeldoutConfig = HeldoutConfig(), vqa: dict[str, str] | None = None,
                    device: str = "auto", dtype: str = "auto") -> dict:
    """The numbers the demo, the Tune sweep and the benchmarks compare models on, with the model on
    `device` (auto: the GPU when one is visible, else the CPU) in `dtype` (precision.DTYPES; auto:
    float16 on a GPU, float32 on a CPU), as a run's engine.device and engine.dtype say.

    Perplexity on each text set of `heldout.text_sets()` (`segments` x `seqlen` tokens), accuracy
    (constrained choice) on `heldout.vqa` seeded questions of each VQA set of `vqa` ({column: spec};
    default `heldout.vqa_sets()`; skipped — NaN — for text-only models) and the achieved mean
    sparsity of the decoder's pruned matrices."""
    from efficientllava.prune_engine.data.calibration import tokenizer_of
    from efficientllava.prune_engine.evaluation.perplexity import perplexity
    from efficientllava.prune_engine.evaluation.vqa import vqa_accuracy
    from efficientllava.prune_engine.models.loading import load_model

    vqa = heldout.vqa_sets() if vqa is None else vqa
    from efficientllava.prune_engine.precision import resolve_device

    adapter, processor = load_model(model, dtype, resolve_device(device))
    row = {}
    for name, spec in heldout.text_sets().items():
        ids = heldout_text(tokenizer_of(processor), spec, heldout)
        row[name] = perplexity(adapter, ids, progress=False)["perplexity"]
    for name, spec in vqa.items():
        if not adapter.is_llava:
            row[name] = float("nan")
            continue
        samples = heldout_questions(spec, heldout)
        row[name] = vqa_accuracy(adapter.model, processor, samples, progress=False)["accuracy"]
    weights = [m.weight for i in range(adapter.num_blocks) for m in adapter.linears(i).values()]
    row["sparsity"] = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    return row
