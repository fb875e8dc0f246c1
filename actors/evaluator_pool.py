"""`EvaluatorPool`: the search's evaluation protocol (search/protocol.py) on a pool of Ray evaluator actors.

Driver side. It never holds a model: the dense weights are loaded once by a task into the object
store, the evaluator actors are built from them inside a placement group (one bundle per actor:
``num_gpus`` when the cluster has GPUs, CPUs otherwise, and the host ``memory`` the actor needs,
actors/memory_request.py), and the learner actor owns the projector.

* ``evaluate``: duplicates are evaluated once; candidates are sorted lexicographically and cut into
  contiguous chunks per actor (prefix reuse), idle actors steal; a candidate whose actor died is
  re-run on another actor (a restarted actor first installs the current projector). Each result is
  the actor's `Evaluation`, as it came (also to the ``on_candidate`` subscriber, as it arrives).
* ``projector_step``: several mini-batch steps; for each, the drawn candidates' gradients are
  computed on the actors (same pool, same fault handling), the learner combines them in draw
  order and steps, and its new projector state is one object that every actor installs
  (``set_projector``: only the image-text block inputs are redone) before the next step. The
  drawn candidates' answer-token loss is measured before and after the update.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np
import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

from efficientllava.actors.config import ConfigError, RunConfig
from efficientllava.actors.dense_loader import load_dense
from efficientllava.actors.evaluator_actor import EvaluatorActor, actor_device
from efficientllava.actors.learner_actor import LearnerActor
from efficientllava.actors.memory_request import GiB, actor_memory
from efficientllava.actors.object_holder import ObjectHolder
from efficientllava.actors.schedule import Schedule
from efficientllava.prune_engine.precision import model_dtype
from efficientllava.search.protocol import Evaluation, ProjectorUpdate

log = logging.getLogger(__name__)

ACTOR_FAILURES = (ray.exceptions.RayActorError,)  # ActorDiedError, ActorUnavailableError


def user_error(exc: BaseException) -> BaseException:
    """The original exception inside a Ray task error (so the CLI prints one line), else `exc`."""
    while isinstance(exc, ray.exceptions.RayTaskError) and isinstance(getattr(exc, "cause", None), Exception):
        exc = exc.cause  # an actor re-raising a task's error wraps it twice
    return exc


def _key(ratios: np.ndarray) -> bytes:
    return np.asarray(ratios, dtype=np.float64).tobytes()


class EvaluatorPool:
    """The evaluator actors (and the learner actor) of one run, as the search's `EvaluationProtocol`; needs
    `ray.init()` done."""

    def __init__(self, run: RunConfig, run_name: str, on_candidate: Callable[[Evaluation], None] | None = None,
                 log_fn: Callable[[str], None] | None = None):
        if not ray.is_initialized():
            raise RuntimeError("ray.init() first")
        self.run, self.opts, self.run_name = run, run.ray, run_name
        self.on_candidate = on_candidate
        self.log = log_fn or (lambda m: log.info(m))
        self.levels = run.levels
        self.projector_version = 0
        self.stats = {"candidates": 0, "screened": 0, "deduplicated": 0, "actor_failures": 0, "reruns": 0,
                      "restart_seconds": 0.0,
                      "blocks_run": 0, "gradients": 0, "learner_restores": 0}
        self._projector_ref: ray.ObjectRef | None = None  # None: the dense model's projector (version 0)
        self._pending_sync: list[ray.ObjectRef] = []
        self._saved: tuple[bytes, int] | None = None  # last projector state the driver holds
        self._replay: list[Callable] = []  # learner calls (steps, rescales) since `_saved`
        self._last_update: tuple | None = None  # what the last projector step measured (for a rescale)
        self.learner = None
        self.holder = None
        self.actors: list = []
        self._probing: dict = {}  # probe ref -> actor index, for actors being restarted
        self.pg = None
        try:
            self._start()
        except BaseException:
            self.shutdown()
            raise

    # ---- start-up ----------------------------------------------------------------------------
    def _resources(self) -> tuple[int, float, float, int]:
        """(actors, CPUs, GPUs, bytes of memory) per actor; a one-line ConfigError when the cluster lacks them."""
        total = ray.cluster_resources()
        cpus_total, gpus_total = float(total.get("CPU", 0)), float(total.get("GPU", 0))
        cpus = self.opts.cpus_per_actor
        gpus = self.opts.gpus_per_actor if self.opts.gpus_per_actor is not None else (1.0 if gpus_total >= 1 else 0.0)
        if gpus > 0:
            n = self.opts.actors or max(1, int(gpus_total // gpus + 1e-9))
        else:
            n = self.opts.actors or max(1, int(cpus_total // cpus + 1e-9))
        need_cpu, need_gpu = n * cpus, n * gpus
        if need_cpu > cpus_total + 1e-9 or need_gpu > gpus_total + 1e-9:
            raise ConfigError(f"the cluster has {cpus_total:g} CPUs and {gpus_total:g} GPUs; {n} evaluator actors "
                              f"need {need_cpu:g} CPUs and {need_gpu:g} GPUs (set --actors, --cpus-per-actor "
                              "or --gpus-per-actor)")
        engine = self.run.engine
        on_gpu = self._device(gpus) != "cpu"
        memory, self.memory_how = actor_memory(self.opts.memory_per_actor_gb, engine.model, engine.mode,
                                               len(self.levels), gpu=on_gpu, offload=engine.offload,
                                               on_disk=engine.offload_dir is not None,
                                               width=model_dtype(engine.dtype, self._device(gpus)).itemsize)
        self._check_plan(gpus, on_gpu)
        memory_total = float(total.get("memory", 0))
        if n * memory > memory_total:
            raise ConfigError(f"the cluster has {memory_total / GiB:.1f} GiB of memory for tasks and actors; {n} "
                              f"evaluator actors need {n * memory / GiB:.1f} GiB ({memory / GiB:.2f} GiB each, {self.memory_how}) "
                              "(set --actors, or --set ray.memory_per_actor_gb=GIB per actor, 0 to request none)")
        return n, cpus, gpus, memory

    def _check_plan(self, gpus: float, on_gpu: bool) -> None:
        """Refuse, in one line saying what to change, evaluators whose GPU share or dense weights cannot fit
        (the plan of actors/cluster_plan.py), before any actor starts."""
        from efficientllava.actors.cluster_plan import actors_per_gpu, check_fits
        from efficientllava.actors.memory_request import model_parameters
        from efficientllava.prune_engine.models.adapter import ModelError
        from efficientllava.prune_engine.models.loading import model_facts

        engine = self.run.engine
        try:
            facts = model_facts(engine.model)
        except ModelError:
            facts = None
        gpu_gb = self.opts.gpu_memory_gb
        if gpu_gb is None and on_gpu:
            import torch

            if torch.cuda.is_available():
                gpu_gb = torch.cuda.get_device_properties(0).total_memory / GiB
        stores = [float(n["Resources"].get("object_store_memory", 0)) for n in ray.nodes() if n.get("Alive")]
        try:
            check_fits(model_parameters(engine.model), facts, engine.mode, len(self.levels),
                       model_dtype(engine.dtype, self._device(gpus)).itemsize, engine.offload,
                       engine.offload_dir is not None, actors_per_gpu(gpus) if on_gpu else 0,
                       gpu_gb if on_gpu else None, max(stores) if stores else None)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def _device(self, gpus: float) -> str:
        """Where the evaluators compute (as each actor decides it: evaluator_actor.actor_device)."""
        return actor_device(self.run.engine.device, [0] if gpus > 0 else [])

    def _start(self) -> None:
        n, cpus, gpus, memory = self._resources()
        self.n_actors, self.cpus, self.gpus, self.memory = n, cpus, gpus, memory
        bundle = {"CPU": cpus, **({"GPU": gpus} if gpus else {}), **({"memory": memory} if memory else {})}
        self.pg = placement_group([dict(bundle) for _ in range(n)], strategy=self.opts.strategy,
                                  name=f"{self.run_name}.evaluators")
        ready, _ = ray.wait([self.pg.ready()], timeout=self.opts.ready_timeout_s)
        if not ready:
            raise RuntimeError(f"the placement group for {n} evaluator actors ({bundle} each) was not ready after "
                               f"{self.opts.ready_timeout_s:g} s")
        engine = self.run.engine.model_dump(mode="json")
        dtype = str(model_dtype(self.run.engine.dtype, self._device(gpus))).removeprefix("torch.")
        t0 = time.perf_counter()
        # num_cpus=0: the bundle's CPUs belong to the actors, which wait for these weights
        self.weights_ref, self.projector0_ref = load_dense.options(
            num_returns=2, num_cpus=0, name=f"{self.run_name}.load_dense",
            scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=0),
        ).remote(engine, dtype)
        # the holder needs no resources and never restarts: it is pinned to the driver's node (Ray's default
        # scheduling may put a zero-CPU actor on any node), which a worker node's loss leaves alone; the learner
        # restarts, in bundle 0 of the evaluators' placement group (it moves with that bundle when its node is
        # lost, and never lands on a head node that runs no actors)
        in_bundle_0 = PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=0)
        on_driver_node = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.holder = ObjectHolder.options(name=f"{self.run_name}.weights", namespace=self.opts.namespace,
                                           num_cpus=0, scheduling_strategy=on_driver_node,
                                           ).remote([self.weights_ref, self.projector0_ref])
        # database mode with several actors: each builds a share of the level database, all read all of it
        self.shared_database = self.run.engine.mode == "database" and n > 1
        self.actors = [self._make_actor(i, engine) for i in range(n)]
        self.live = list(range(n))
        facts = []
        deadline = time.monotonic() + self.opts.ready_timeout_s
        self.log(f"starting {n} evaluator actor(s): each loads the model and its proxy data"
                 + (" and builds its level database" if self.run.engine.mode == "database" else ""))
        for i, a in enumerate(self.actors):
            ref = a.facts.remote()
            while not ray.wait([ref], timeout=min(20.0, max(0.1, deadline - time.monotonic())))[0]:
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"evaluator actor {i} was not ready after {self.opts.ready_timeout_s:g} s")
                self.log(f"  ... evaluator actors starting ({time.perf_counter() - t0:.0f} s)")
            try:
                facts.append(ray.get(ref))
            except ray.exceptions.RayTaskError as exc:
                raise user_error(exc) from None
        if self.shared_database:
            self.log(f"  building the level database in {n} parts ({time.perf_counter() - t0:.0f} s)")
            self._database_parts = [a.database_part.remote(i, n) for i, a in enumerate(self.actors)]
            pending = [a.install_database.remote(self._database_parts) for a in self.actors]
            while len(ray.wait(pending, num_returns=len(pending), timeout=20.0)[0]) < len(pending):
                self.log(f"  ... building the level database ({time.perf_counter() - t0:.0f} s)")
            try:
                ray.get(pending)
            except ray.exceptions.RayTaskError as exc:
                raise user_error(exc) from None
        first = facts[0]
        for f in facts[1:]:
            if f["identity"] != first["identity"] or f["param_counts"] != first["param_counts"]:
                raise RuntimeError("evaluator actors disagree on the model (identity or parameter counts)")
        self.facts = facts
        self.nodes = [f["node_id"] for f in facts]  # where each evaluator runs now (a restart may move it)
        self._failed_at: dict[int, float] = {}
        self._failed_nodes: list[str] = []  # the node of every actor that failed, in order
        from ray.util.metrics import Counter

        self._m_failures = Counter("efficientllava_actor_failures", "Evaluator actors lost (cause: node lost, or "
                                   "process died)", ("run", "cause"))
        self.param_counts = np.asarray(first["param_counts"], dtype=np.int64)
        self.identity = first["identity"]
        self.has_projector = bool(first["has_projector"])
        # database mode: the driver may re-score known policies on image-text samples only after a projector step
        self.text_independent_of_projector = bool(first["text_independent_of_projector"])
        self.held_aside = int(first["held_aside"])  # 0: the projector guard has nothing to measure
        self.n_blocks = int(first["blocks"])
        self.use_projector = self.has_projector and self.run.search.projector_mode != "off"
        self.startup_s = time.perf_counter() - t0
        if self.use_projector:
            self.learner = LearnerActor.options(
                name=f"{self.run_name}.learner", namespace=self.opts.namespace, num_cpus=0,
                max_restarts=self.opts.max_restarts, max_task_retries=0, scheduling_strategy=in_bundle_0,
            ).remote((f"{self.run_name}.weights", self.opts.namespace, 1), self.run.search.projector_lr)
            ray.get(self.learner.version.remote())
        nodes = len({f["node_id"] for f in facts})
        memory_text = f" = {memory / GiB:.2f} GiB memory, {self.memory_how}" if memory else ""
        self.log(f"{n} evaluator actor(s) ready in {self.startup_s:.1f} s on {nodes} node(s) "
                 f"({bundle} each{memory_text}, {first['threads']} thread(s), device {first['device']}); "
                 f"{self.n_blocks} blocks, projector {'on' if self.use_projector else 'off'}")

    def _make_actor(self, i: int, engine: dict):
        return EvaluatorActor.options(
            name=f"{self.run_name}.evaluator-{i}", namespace=self.opts.namespace,
            num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=self.opts.max_restarts, max_task_retries=0,
            **({"memory": self.memory} if self.memory else {}),
            scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=i),
        ).remote(engine, self.run.data.model_dump(mode="json"), self.levels,
                 (f"{self.run_name}.weights", self.opts.namespace, 0), i, self.run_name, self.shared_database)

    def actor_names(self) -> list[str]:
        names = [f"{self.run_name}.evaluator-{i}" for i in range(self.n_actors)]
        return names + ([f"{self.run_name}.learner"] if self.learner is not None else [])

    # ---- the pool ----------------------------------------------------------------------------
    def _settle_sync(self) -> None:
        """Wait for the last projector broadcast (a dead actor catches up on its next evaluation)."""
        for ref in self._pending_sync:
            try:
                ray.get(ref)
            except ACTOR_FAILURES:
                pass
        self._pending_sync = []

    def _lost(self, a: int) -> None:
        """Actor `a` failed a call: out of service until a probe says it is back (Ray restarts it,
        up to max_restarts) or dead for good."""
        self.stats["actor_failures"] += 1
        if a not in self._probing.values():
            self._probing[self.actors[a].ping.options(max_task_retries=-1).remote()] = a
            self._failed_at[a] = time.perf_counter()
            self._failed_nodes.append(self.nodes[a])
            self.log(f"evaluator actor {a} (node {self.nodes[a][:12]}) failed; its candidate runs elsewhere while "
                     "Ray restarts it")

    def _probed(self, ref, schedule: Schedule | None) -> None:
        a = self._probing.pop(ref)
        try:
            where = ray.get(ref)
            lost_s = time.perf_counter() - self._failed_at.pop(a, time.perf_counter())
            self.stats["restart_seconds"] += lost_s
            # by now Ray knows whether the old node is gone (node loss, a preempted node) or only the process died
            old, alive = self.nodes[a], {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
            gone = old not in alive
            self._m_failures.inc(1.0, {"run": self.run_name, "cause": "node lost" if gone else "process died"})
            self.nodes[a] = where["node_id"]
            rebuilt = "its model and whole level database" if self.run.engine.mode == "database" else "its model"
            self.log(f"evaluator actor {a} is back on node {where['node_id'][:12]} after {lost_s:.0f} s ("
                     + (f"node {old[:12]} was lost" if gone else "its process had died")
                     + f"; it rebuilt {rebuilt}, the candidate it held was re-run)")
        except ACTOR_FAILURES:  # ActorDiedError after the probe's retries: no restart left
            if a in self.live:
                self.live.remove(a)
            if schedule is not None:
                schedule.retire(a)
            self.log(f"evaluator actor {a} is dead (no restarts left)")
            if not self.live:
                raise RuntimeError("all evaluator actors died") from None

    def _run(self, ratios: list[np.ndarray], call: Callable[[object, int], object], what: str = "candidate") -> list:
        """`call(actor, m)` for every item m over the live actors (items sorted by their ratios, for
        prefix reuse); an item whose actor died is re-run elsewhere. Results in input order."""
        self._settle_sync()
        schedule = Schedule(ratios, list(self.live))
        results: list = [None] * len(ratios)
        done = [False] * len(ratios)
        inflight: dict = {}  # result ref -> (actor, item)
        busy: set[int] = set()
        failures = [0] * len(ratios)

        def fill() -> None:
            probing = set(self._probing.values())
            for a in list(schedule.workers):
                if a in busy or a in probing:
                    continue
                m = schedule.next_for(a)
                if m is None:
                    continue
                inflight[call(self.actors[a], m)] = (a, m)
                busy.add(a)

        fill()
        while inflight or (self._probing and not schedule.empty()):
            (ref,), _ = ray.wait(list(inflight) + list(self._probing), num_returns=1)
            if ref in self._probing:
                self._probed(ref, schedule)
                fill()
                continue
            a, m = inflight.pop(ref)
            busy.discard(a)
            try:
                results[m] = ray.get(ref)
            except ACTOR_FAILURES:
                failures[m] += 1
                self.stats["reruns"] += 1
                if failures[m] > self.opts.candidate_retries:
                    raise RuntimeError(f"{what} {ratios[m].tolist()} was lost {failures[m]} times with its "
                                       "evaluator actor; giving up") from None
                schedule.failed(m, a)
                self._lost(a)
            except ray.exceptions.RayTaskError as exc:
                raise user_error(exc) from None
            else:
                done[m] = True
                if what == "candidate":
                    self.stats["candidates"] += 1
                    self.stats["blocks_run"] += results[m].blocks_run
                    if results[m].fidelity in ("screen", "stage"):  # a screened child or a survivor on the stage slice
                        self.stats["screened"] += 1
                    if self.on_candidate is not None:
                        self.on_candidate(results[m])
            fill()
        if not schedule.empty() or not all(done):
            raise RuntimeError("evaluator pool stopped with work left")
        return results

    # ---- the evaluation protocol --------------------------------------------------------------
    def evaluate(self, ratios: list[np.ndarray], projector_version: int, fidelity: str = "full",
                 modalities: tuple[str, ...] = ("text", "mm")) -> list[Evaluation]:
        if projector_version != self.projector_version:
            raise RuntimeError(f"driver asks for projector version {projector_version}, "
                               f"the evaluators hold {self.projector_version}")
        keys = [_key(r) for r in ratios]
        unique = list(dict.fromkeys(keys))
        self.stats["deduplicated"] += len(keys) - len(unique)
        first = [np.asarray(ratios[keys.index(k)], dtype=np.float64) for k in unique]
        projector = [self._projector_ref]  # nested: resolved by an actor only when it needs it
        done = self._run(first, lambda actor, m: actor.evaluate.remote(first[m], projector_version, projector,
                                                                        fidelity, tuple(modalities)))
        by_key = dict(zip(unique, done))
        return [by_key[k] for k in keys]

    def _answer_losses(self, ratios: list[np.ndarray]) -> list[float]:
        v, projector = self.projector_version, [self._projector_ref]
        return self._run(ratios, lambda actor, m: actor.answer_loss.remote(ratios[m], v, projector), "answer loss")

    def projector_step(self, ratios: list[np.ndarray], draws: list[list[int]], lr: float) -> ProjectorUpdate:
        """One mini-batch step per entry of `draws` (candidate indices into `ratios`, drawn by the
        driver by neighbour weight): the mean of the drawn candidates' gradients on that step's
        mini-batch drives one AdamW step of the learner. Before and after: the drawn candidates'
        answer loss on the held-aside image-text samples, weighted by how often each was drawn."""
        if not self.use_projector:
            raise RuntimeError("this run has no projector step")
        ratios = [np.asarray(r, dtype=np.float64) for r in ratios]
        every = [m for draw in draws for m in draw]
        drawn = sorted(set(every))
        share = np.array([every.count(m) for m in drawn], dtype=np.float64) / len(every)
        monitored = [ratios[m] for m in drawn]
        before = float(share @ np.array(self._answer_losses(monitored)))
        self._learner(lambda: self.learner.mark.remote())
        step_losses = []
        for draw in draws:
            step = self.projector_version  # one version per step: the mini-batch cycle resumes exactly
            v, projector = self.projector_version, [self._projector_ref]
            items = [ratios[m] for m in draw]
            out = self._run(items, lambda actor, j: actor.gradient.remote(items[j], v, projector, step), "gradient")
            self.stats["gradients"] += len(out)
            step_losses.append(float(np.mean([loss for loss, _ in out])))
            grads = [g for _, g in out]
            weights = np.full(len(draw), 1.0 / len(draw))
            call = lambda weights=weights, grads=grads: self.learner.step.remote(weights, 1, lr, *grads)  # noqa: E731
            version, state_ref = self._learner(call)
            self._publish(state_ref, version)
            self._replay.append(call)
        after = float(share @ np.array(self._answer_losses(monitored)))
        self._last_update = (monitored, share, before, step_losses)
        return ProjectorUpdate(self.projector_version, before, after, self._change(), step_losses,
                               held_aside=self.held_aside)

    def rescale_projector_update(self, scale: float) -> ProjectorUpdate:
        """Keep `scale` of the last projector step's update (0: drop it), measured like that step."""
        if self._last_update is None:
            raise RuntimeError("no projector update to rescale")
        monitored, share, before, step_losses = self._last_update
        call = lambda: self.learner.rescale.remote(float(scale))  # noqa: E731
        version, state_ref = self._learner(call)
        self._publish(state_ref, version)
        self._replay.append(call)
        after = before if scale == 0 else float(share @ np.array(self._answer_losses(monitored)))
        return ProjectorUpdate(self.projector_version, before, after, self._change(), step_losses, float(scale),
                               self.held_aside)

    def _change(self) -> float:
        return float(self._learner(lambda: self.learner.change_since_mark.remote()))

    def _learner(self, call: Callable[[], object]):
        """Run a learner call; if the learner died, bring the restarted one back to our state and retry."""
        for attempt in range(self.opts.candidate_retries + 1):
            try:
                result = call()
                return ray.get(result) if not isinstance(result, list) else (ray.get(result[0]), result[1])
            except ACTOR_FAILURES:
                if attempt == self.opts.candidate_retries:
                    raise
                self.stats["learner_restores"] += 1
                self.log("the learner actor died; restoring its projector and optimizer state")
                ray.get(self.learner.version.options(max_task_retries=-1).remote())  # back (or dead for good)
                if self._saved is not None:
                    ray.get(self.learner.load_bytes.remote(*self._saved))
                for replayed in self._replay:
                    ray.get(replayed()[0])
            except ray.exceptions.RayTaskError as exc:
                raise user_error(exc) from None  # an ObjectLostError cause reaches projector_step

    def _publish(self, state_ref, version: int) -> None:
        """One object with the new projector; every live actor installs it now."""
        self._projector_ref = state_ref
        self.projector_version = int(version)
        self._pending_sync = [self.actors[a].set_projector.remote(state_ref, version) for a in self.live]

    def projector_state(self) -> bytes:
        data = self._learner(lambda: self.learner.to_bytes.remote())
        self._saved, self._replay = (data, self.projector_version), []
        return data

    def load_projector_state(self, state: bytes, version: int) -> None:
        if self.learner is None:
            raise RuntimeError("this run has no projector")
        self._saved, self._replay = (state, int(version)), []
        self._learner(lambda: self.learner.version.remote())  # alive
        state_ref = self.learner.load_bytes.remote(state, int(version))
        ray.get(state_ref)
        self._publish(state_ref, int(version))

    # ---- the final model ---------------------------------------------------------------------
    def export(self, ratios: np.ndarray, dest: str, policy: dict) -> dict:
        """Prune the dense model sequentially with `ratios` and the current projector; save it at
        `dest` (a local path on the driver's machine or a pyarrow.fs URI) with `policy` as its policy.json
        (plus what the pruning achieved) and its sparsity.json."""
        from efficientllava.actors.storage import is_uri, write_dir

        self._settle_sync()
        here = ray.get_runtime_context().get_node_id()
        last: BaseException | None = None
        for _ in range(self.opts.candidate_retries + 1):
            for ref in list(self._probing):  # wait for restarting actors
                self._probed(ref, None)
            a = sorted(self.live, key=lambda i: (self.facts[i]["node_id"] != here, i))[0]
            how = "uri" if is_uri(dest) else ("direct" if self.facts[a]["node_id"] == here else "bytes")
            try:
                out = ray.get(self.actors[a].export.remote(np.asarray(ratios, dtype=np.float64), self.projector_version,
                                                          [self._projector_ref], dest, how, policy))
            except ACTOR_FAILURES as exc:
                last = exc
                self._lost(a)
                continue
            except ray.exceptions.RayTaskError as exc:
                raise user_error(exc) from None
            if out["files"] is not None:
                write_dir(out["files"], dest)
            return out["report"]
        raise RuntimeError(f"could not export the final model: {last}")

    # ---- teardown ----------------------------------------------------------------------------
    def run_stats(self) -> dict:
        """The pool's counters, with `nodes_lost`: the nodes of failed actors that are gone (asked of Ray
        now, so an actor still restarting when the search ends is counted too)."""
        failed = getattr(self, "_failed_nodes", [])
        alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")} if failed else set()
        lost = [n for n in dict.fromkeys(failed) if n not in alive]
        return {**self.stats, "nodes_lost": lost}

    def shutdown(self) -> None:
        holder = [self.holder] if getattr(self, "holder", None) is not None else []
        for a in self.actors + ([self.learner] if self.learner is not None else []) + holder:
            try:
                ray.kill(a)
            except Exception:
                pass
        self.actors, self.learner, self.holder = [], None, None
        if self.pg is not None:
            try:
                remove_placement_group(self.pg)
            except Exception:
                pass
            self.pg = None
        self._pending_sync, self._replay, self._probing = [], [], {}
