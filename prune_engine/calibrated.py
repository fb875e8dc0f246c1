"""A calibrated pruner, built one way for the prune job, the candidate scorer and the evaluator actors: the proxy data, the model and its `LayerwisePruner`.

The proxy (= calibration) data (`proxy_data`) is text segments, plus image-text samples for a LLaVA model.
Each kind is cut into a screening slice, the rest of a larger stage slice that holds it, and the rest (multi-fidelity
and multi-step selection, `EngineConfig.screen_*`, `EngineConfig.stage_*`),
and text past the fitness set (`EngineConfig.fitness_nsamples`) only calibrates (with `fitness_held_aside` the fitness's
own text does not calibrate: it only scores); with none of these set
(the prune job) the batches are simply the text then the image-text batches of `DataConfig.batch_size`.
`build_pruner` loads the model onto its device and builds the pruner on these batches.
"""
from __future__ import annotations

from dataclasses import dataclass

from efficientllava.prune_engine.config import DataConfig, EngineConfig
from efficientllava.prune_engine.data.calibration import calibration_vqa, check_token_ids, text_batches, vqa_batches
from efficientllava.prune_engine.models.adapter import ModelAdapter
from efficientllava.prune_engine.models.loading import load_model, load_processor
from efficientllava.prune_engine.pipeline import LayerwisePruner
from efficientllava.prune_engine.precision import resolve_device
from efficientllava.prune_engine.sparsegpt import Pattern
from efficientllava.prune_engine.threads import use_threads


@dataclass
class ProxyData:
    """The proxy batches in order (text, then image-text; each kind as [screening slice | the rest of the stage slice |
    the rest]) and what each is for."""

    batches: list[dict]
    kinds: list[str]  # per batch: "text" or "mm"
    scored: list[int]  # the full-fidelity fitness set (the text batches past it only calibrate: Hessians)
    screen: list[int] | None  # the screening slice (None: screening uses the full set)
    samples: list  # the image-text samples drawn (their batches follow the text batches)
    stage: list[int] | None = None  # the stage slice (multi-step selection; None: the stage uses the full set)
    calibrating: list[int] | None = None  # the batches whose activations build the Hessians (None: all)

    @property
    def mm_indices(self) -> list[int]:
        return [i for i, k in enumerate(self.kinds) if k == "mm"]


def _split_text(batch: dict, first: int, size: int | None) -> tuple[list[dict], list[dict]]:
    """Cut a text batch into segments [0, first) and [first, n), each in batches of `size` segments."""
    n = len(batch["input_ids"])
    out = []
    for lo, hi in ((0, first), (first, n)):
        step = size or max(hi - lo, 1)
        out.append([{k: v[i:min(i + step, hi)] for k, v in batch.items()} for i in range(lo, hi, step)])
    return out[0], out[1]


def proxy_data(processor, data: DataConfig, engine: EngineConfig) -> ProxyData:
    """The proxy batches of `data`, sliced for the fitness, the screening and the stage as `engine` says."""
    text = text_batches(processor, data.calib, data.nsamples, data.seqlen, data.seed)[0]
    # text segments: [screening slice | the rest of the stage slice | the rest of the fitness set | calibration only]
    fit_text = min(engine.fitness_nsamples or data.nsamples, data.nsamples)
    screen_text = min(engine.screen_nsamples, fit_text) if engine.screen_nsamples else 0
    stage_text = min(engine.stage_nsamples, fit_text) if engine.stage_nsamples else screen_text
    text_screen, _ = _split_text({k: v[:screen_text] for k, v in text.items()}, screen_text, data.batch_size)
    text_stage, fit_rest = _split_text({k: v[screen_text:fit_text] for k, v in text.items()},
                                       stage_text - screen_text, data.batch_size)
    _, text_calib = _split_text(text, fit_text, data.batch_size)
    samples = (calibration_vqa(data.mm_calib, data.mm_samples, data.seed, data.mm_balance, data.mm_rephrase)
               if data.mm_calib else [])
    screen_mm = min(engine.screen_mm_samples, len(samples)) if engine.screen_mm_samples else 0
    stage_mm = min(engine.stage_mm_samples, len(samples)) if engine.stage_mm_samples else screen_mm
    mm_screen = vqa_batches(processor, samples[:screen_mm], data.batch_size)
    mm_stage = vqa_batches(processor, samples[screen_mm:stage_mm], data.batch_size)
    mm_rest = vqa_batches(processor, samples[stage_mm:], data.batch_size)
    batches = text_screen + text_stage + fit_rest + text_calib + mm_screen + mm_stage + mm_rest
    n_text = len(text_screen) + len(text_stage) + len(fit_rest) + len(text_calib)
    kinds = ["text"] * n_text + ["mm"] * (len(mm_screen) + len(mm_stage) + len(mm_rest))
    mm = list(range(n_text, len(batches)))
    n_fit = len(text_screen) + len(text_stage) + len(fit_rest)

    def first(n_text_batches: int, n_mm_batches: int, text_sliced: bool, mm_sliced: bool) -> list[int] | None:
        """A slice: the first batches of each kind; a kind without a slice is scored whole; no slice at all:
        None (that fidelity uses the full set)."""
        if not (text_sliced or mm_sliced):
            return None
        return (list(range(n_text_batches)) if text_sliced else list(range(n_fit))) \
            + (list(range(n_text, n_text + n_mm_batches)) if mm_sliced else mm)

    screen = first(len(text_screen), len(mm_screen), bool(screen_text), bool(screen_mm))
    stage = first(len(text_screen) + len(text_stage), len(mm_screen) + len(mm_stage),
                  bool(engine.stage_nsamples), bool(engine.stage_mm_samples))
    calibrating = None
    if engine.fitness_held_aside:  # the fitness's text only scores; the rest of the text and all image-text calibrate
        if fit_text >= data.nsamples:
            raise ValueError(f"fitness_held_aside: fitness_nsamples ({engine.fitness_nsamples}) leaves none of the "
                             f"{data.nsamples} text segments to calibrate on; set it below data.nsamples")
        calibrating = list(range(n_fit, len(batches)))
    return ProxyData(batches, kinds, list(range(n_fit)) + mm, screen, samples, stage, calibrating)


@dataclass
class CalibratedPruner:
    """A model, its proxy data and the pruner calibrated on them."""

    adapter: ModelAdapter
    processor: object
    proxy: ProxyData
    pruner: LayerwisePruner


def build_pruner(engine: EngineConfig, data: DataConfig, *, processor=None, state_dict: dict | None = None,
                 progress: bool = False, blocksize: int = 128, percdamp: float = 0.01) -> CalibratedPruner:
    """Torch threads (engine.threads), the proxy data (read before the weights: data problems surface first), the
    model on engine.device (its blocks offloaded with engine.offload) and a `LayerwisePruner` on the proxy batches.

    processor: the model's processor when the caller has loaded it already; state_dict: the weights (e.g.
    shared through the Ray object store; nothing is then read from disk)."""
    if engine.threads:
        use_threads(engine.threads)
    processor = processor or load_processor(engine.model)
    proxy = proxy_data(processor, data, engine)
    device = resolve_device(engine.device)
    adapter, processor = load_model(engine.model, engine.dtype, "cpu" if engine.offload else device,
                                    processor=processor, state_dict=state_dict, compute_device=device)
    if engine.offload:
        adapter.offload_blocks(device)
    if proxy.samples and not adapter.is_llava:
        raise ValueError(f"image-text proxy data needs a LLaVA model; {engine.model} is text-only")
    check_token_ids(proxy.batches, adapter.model.get_input_embeddings().num_embeddings)
    pruner = LayerwisePruner(adapter, proxy.batches, Pattern.parse(engine.pattern), blocksize, percdamp,
                             progress=progress, reuse_prefix=engine.prefix_reuse, kinds=proxy.kinds, loss=engine.loss,
                             scored=proxy.scored, calibrating=proxy.calibrating, offload_dir=engine.offload_dir,
                             cache_bytes=None if engine.prefix_cache_gb is None
                             else int(engine.prefix_cache_gb * 2**30))
    return CalibratedPruner(adapter, processor, proxy, pruner)
