"""What an evaluator needs to rebuild the same model and proxy data anywhere: the engine's settings."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class EngineConfig(BaseModel):
    """Everything an evaluator needs to rebuild the same model and proxy data anywhere."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = "smollm2"
    calib: str = "wiki:calib"
    nsamples: int = 32
    seqlen: int = 256
    mm_calib: str | None = None  # image-text proxy data from training splits; a comma-separated mix is allowed
    mm_samples: int = 32
    seed: int = 0
    pattern: str | None = None
    mode: str = "sequential"  # or "database"
    granularity: str = "block"  # or "matrix"
    batch_size: int | None = None
    prefix_reuse: bool = True
    device: str = "cpu"
    threads: int | None = None  # torch threads in this evaluator (None: torch's default)
    loss: Literal["ce", "kl"] = "kl"  # token loss of the fitness: cross-entropy to labels, or KL to the dense model
    fitness_nsamples: int = 0  # text segments the fitness is measured on (0: all); the rest only calibrate
    screen_nsamples: int = 0  # text segments of the screening slice (0: screening uses all proxy data)
    screen_mm_samples: int = 0  # image-text samples of the screening slice
    projector_batch: int = 4  # image-text samples per projector mini-batch step
    monitor_samples: int = 8  # image-text samples on which sum c_m L_m is recorded before/after an update
    allow_eval_split: bool = False  # calibrate on an evaluation split anyway (leaks it into the model)
