"""The resource plan of a search: per-actor GPU memory, host RAM, object store and local disk, predicted from the model's shape, and the check that refuses a plan that cannot fit.

GPU memory is the evaluator's device peak, fitted on benchmarks/memory.py's rows as
``ALPHA[mode] x M + BETA[mode] x W`` (M: the model's bytes on the device in its dtype; W: one
block's working set at one level, `block_working_set`), with the projector gradient micro-batched
(engine.projector_microbatch=1, engine.activation_checkpointing: its one-pass peak grows with the
image-text samples, not with the model); benchmarks/cluster_plan.py refits the constants from
benchmarks/results/memory.json and checks them on a row the fit did not use. The rows were
measured on a CPU in float32 (the device is the host there): on a GPU in float16 the same model is
an extrapolation that has not been checked against a GPU run. Host RAM is the actor's Ray memory
request (actors/memory_request.py); the object store holds the dense weights once per node and, in
database mode with several actors, every actor's part of the level database; local disk (with
engine.offload_dir) holds each actor's dense linears and its level database as files.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from efficientllava.actors.memory_request import GiB, estimate_actor_memory
from efficientllava.prune_engine.working_set import block_working_set

#: device peak = ALPHA x M + BETA x W per engine mode (W at one level: `block_working_set(text, 1)`): fitted by
#: benchmarks/cluster_plan.py on the 135m and 360m rows of benchmarks/results/memory.json (level database on
#: disk, projector gradient micro-batched with activation checkpointing), checked on the 1b row
ALPHA = {"sequential": 1.3624, "database": 1.3511}
BETA = {"sequential": 2.1590, "database": 2.0181}
#: share of a node's RAM Ray gives its object store by default
OBJECT_STORE_SHARE = 0.3


@dataclass(frozen=True)
class Shape:
    """A LLaVA-style model: a LLaMA-family language model (text config fields) and a vision tower + projector."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    vision_params: int  # vision tower and projector
    tied: bool = False

    @property
    def block_linear_params(self) -> int:
        kv = self.kv_heads * (self.hidden // self.heads)
        return 2 * self.hidden * self.hidden + 2 * self.hidden * kv + 3 * self.hidden * self.intermediate

    @property
    def params(self) -> int:
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return self.layers * (self.block_linear_params + 2 * self.hidden) + embeddings + self.vision_params

    def text(self) -> dict:
        return {"hidden_size": self.hidden, "intermediate_size": self.intermediate, "num_attention_heads": self.heads,
                "num_key_value_heads": self.kv_heads, "vocab_size": self.vocab}


#: the shapes of the plan (vision parameters: CLIP ViT-L/14-336 + the 2-layer MLP projector for LLaVA-1.5;
#: Qwen2.5-VL's ViT and merger, about 0.68B)
SHAPES = {
    "llava-1.5-7b": Shape(4096, 11008, 32, 32, 32, 32064, 324_487_168),
    "llava-1.5-13b": Shape(5120, 13824, 40, 40, 40, 32064, 334_974_976),
    "qwen2.5-vl-7b": Shape(3584, 18944, 28, 28, 4, 152064, 676_550_144),
}


def device_peak(model_bytes: float, working_set: float, mode: str) -> float:
    """Bytes an evaluator's device holds at its peak (the fitted model)."""
    return ALPHA[mode] * model_bytes + BETA[mode] * working_set


@dataclass(frozen=True)
class ActorPlan:
    gpu_bytes: float  # device peak of one evaluator
    host_bytes: float  # its Ray memory request
    object_store_bytes: float  # per node
    disk_bytes: float  # per actor, under engine.offload_dir (0 without it)


def actor_plan(shape: Shape, mode: str, levels: int, width: int = 2, offload: bool = False,
               on_disk: bool = False) -> ActorPlan:
    """The plan of one evaluator of `shape` in `mode`, weights `width` bytes a parameter, on a GPU."""
    block = shape.block_linear_params * width
    model = shape.params * width
    on_device = model - (shape.layers - 1) * block if offload else model  # offloaded: one block on the device
    working = block_working_set(shape.text(), 1)
    linears = shape.layers * block
    host = estimate_actor_memory(shape.params, mode, levels, gpu=True, offload=offload, on_disk=on_disk, width=width)
    database = levels * linears if mode == "database" else 0
    return ActorPlan(gpu_bytes=device_peak(on_device, working, mode), host_bytes=host,
                     object_store_bytes=model + database, disk_bytes=(linears + database) if on_disk else 0)


@dataclass(frozen=True)
class NodePlan:
    """What a user should choose on a node of `gpus` GPUs of `gpu_gb` GiB and `ram_gb` GiB of RAM."""

    fits: bool
    actors_per_gpu: int
    offload: bool
    offload_dir: bool
    actor: ActorPlan
    host_gb_node: float
    object_store_gb_node: float
    disk_gb_node: float
    why: str  # what does not fit (empty when it fits)

    def as_dict(self) -> dict:
        return {**asdict(self), "actor": {k: v / GiB for k, v in asdict(self.actor).items()}}


def node_plan(shape: Shape, mode: str, levels: int, gpus: int, gpu_gb: float, ram_gb: float, width: int = 2,
              max_actors_per_gpu: int = 4) -> NodePlan:
    """The most evaluators per GPU that fit, offloading only when one does not fit on a GPU, and the level
    database / dense copies on local disk (offload_dir) only when host RAM is short."""
    store = OBJECT_STORE_SHARE * ram_gb * GiB
    best = None
    for offload in (False, True):
        for on_disk in (False, True):
            actor = actor_plan(shape, mode, levels, width, offload, on_disk)
            per_gpu = min(max_actors_per_gpu, int(gpu_gb * GiB // actor.gpu_bytes)) if actor.gpu_bytes else 0
            while per_gpu >= 1 and gpus * per_gpu * actor.host_bytes + store > ram_gb * GiB:
                per_gpu -= 1
            n = gpus * per_gpu
            plan = NodePlan(per_gpu >= 1 and actor.object_store_bytes <= store, per_gpu, offload, on_disk, actor,
                            n * actor.host_bytes / GiB, actor.object_store_bytes / GiB,
                            (n * actor.disk_bytes + shape.params * width) / GiB, "")
            if plan.fits and (best is None or plan.actors_per_gpu > best.actors_per_gpu):
                best = plan
        if best is not None:
            return best
    actor = actor_plan(shape, mode, levels, width, True, True)
    why = (f"one evaluator needs {actor.gpu_bytes / GiB:.1f} GiB of GPU memory even offloaded"
           if actor.gpu_bytes > gpu_gb * GiB else
           f"the object store ({OBJECT_STORE_SHARE:.0%} of {ram_gb:g} GiB) cannot hold "
           f"{actor.object_store_bytes / GiB:.1f} GiB of weights" if actor.object_store_bytes > store else
           f"one evaluator per GPU needs {gpus * actor.host_bytes / GiB:.0f} GiB of host RAM")
    return NodePlan(False, 0, True, True, actor, 0.0, actor.object_store_bytes / GiB, 0.0, why)


def check_fits(params: int | None, facts: dict | None, mode: str, levels: int, width: int, offload: bool,
               on_disk: bool, actors_per_gpu: int, gpu_gb: float | None, node_object_store: float | None) -> None:
    """Raise a one-line ValueError, saying what to change, when the evaluators cannot fit: `actors_per_gpu`
    evaluators on a GPU of `gpu_gb` GiB (None: unchecked), or the dense weights in the largest node's object
    store (`node_object_store` bytes; None: unchecked). `facts`: model_facts of the model (shape fields)."""
    if not params or not facts or not facts.get("hidden") or not facts.get("layers"):
        return
    text = {"hidden_size": facts["hidden"], "intermediate_size": facts["intermediate"],
            "num_attention_heads": facts["heads"], "num_key_value_heads": facts.get("kv_heads") or facts["heads"],
            "vocab_size": facts["vocab"]}
    model = params * width
    working = block_working_set(text, 1)
    if gpu_gb is not None and actors_per_gpu >= 1:
        per_actor = device_peak(model, working, mode)
        if actors_per_gpu * per_actor > gpu_gb * GiB:
            fix = (f"use at most {int(gpu_gb * GiB // per_actor)} evaluator(s) per GPU (--gpus-per-actor "
                   f"{1 / max(1, int(gpu_gb * GiB // per_actor)):g})" if per_actor <= gpu_gb * GiB else
                   "set --offload (decoder blocks in host memory, one on the GPU at a time)" if not offload else
                   "use GPUs with more memory")
            raise ValueError(f"{actors_per_gpu} evaluator(s) per GPU need {actors_per_gpu * per_actor / GiB:.2f} GiB "
                             f"of GPU memory ({per_actor / GiB:.2f} GiB each, {mode} mode), the GPUs have "
                             f"{gpu_gb:g} GiB: {fix}")
    if node_object_store is not None and model > node_object_store:
        raise ValueError(f"the dense weights ({model / GiB:.2f} GiB) do not fit the largest node's object store "
                         f"({node_object_store / GiB:.2f} GiB): start Ray with a larger --object-store-memory"
                         + ("" if on_disk else " (or set --offload-dir)"))


def actors_per_gpu(gpus_per_actor: float) -> int:
    """Evaluators sharing one GPU at `gpus_per_actor` each (0: none on a GPU)."""
    return int(math.floor(1 / gpus_per_actor + 1e-9)) if gpus_per_actor > 0 else 0
