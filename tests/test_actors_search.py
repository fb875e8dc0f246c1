"""The search on a local Ray cluster (2 CPUs) with a tiny LLaVA: the acceptance criteria of the Ray
layer. One cluster for the module (dashboard and metrics endpoint on); the 2-actor run is the
reference that the 1-actor, fault-injected and killed-then-resumed runs must reproduce bit for bit.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

ray = pytest.importorskip("ray")

from efficientllava.actors.observe import METRIC_NAMES  # noqa: E402
from efficientllava.actors.run import run_search  # noqa: E402
import faults  # noqa: E402
from ray_helpers import (assert_same_outcome, free_port, language_model_sparsity, metric_value, outcome, probe_dashboard, tiny_run, tiny_sections, zeros_match_policy)
from efficientllava.search.events import GenerationFinished  # noqa: E402

pytestmark = pytest.mark.ray

ACTOR_METRICS = ("efficientllava_actor_candidates", "efficientllava_actor_blocks_pruned")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    fault = tmp_path_factory.mktemp("fault") / "kill-an-evaluator"  # armed in this job's workers (tests/faults.py)
    penalty = fault.parent / "penalise-projector-updates"
    port = free_port()
    ray.init(address="local", num_cpus=2, include_dashboard=True, namespace="efficientllava",  # never another cluster
             _metrics_export_port=port, _system_config={"metrics_report_interval_ms": 1000}, log_to_driver=False,
             runtime_env=faults.runtime_env(fault, penalty))
    try:
        yield {"address": ray.get_runtime_context().gcs_address, "metrics_port": port, "fault": fault,
               "penalty": penalty}
    finally:
        ray.shutdown()


class Recorder:
    """Subscribes to a run: events, per-candidate summaries, the evaluator, and one dashboard probe."""

    def __init__(self, metrics_port=None, probe_at=None):
        self.events, self.candidates, self.evaluator, self.probe = [], [], None, None
        self.metrics_port, self.probe_at = metrics_port, probe_at

    def on_ready(self, evaluator):
        self.evaluator = evaluator
        self.names = evaluator.actor_names()

    def on_candidate(self, summary):
        self.candidates.append(summary)

    def on_event(self, e):
        self.events.append(e)
        if isinstance(e, GenerationFinished) and e.generation == self.probe_at:
            run = self.evaluator.run_name
            try:  # while the run is going on: its actors are up, the driver is between generations
                self.probe = probe_dashboard(
                    self.metrics_port, self.names, METRIC_NAMES + ACTOR_METRICS,
                    ready=lambda f: metric_value(f["efficientllava_generation"], run) == e.generation + 1)
            except Exception as exc:  # reported by the dashboard test, does not break the reference run
                self.probe = {"error": repr(exc)}

    def hooks(self):
        return dict(on_event=self.on_event, on_candidate=self.on_candidate, on_ready=self.on_ready)


@pytest.fixture(scope="module")
def reference(cluster, tiny_llava_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    rec = Recorder(cluster["metrics_port"], probe_at=1)
    summary = run_search(tiny_run(tiny_llava_dir), str(out), progress=False, log=lambda m: None, **rec.hooks())
    return out, summary, rec


def test_two_actors_end_to_end(reference, tiny_llava_dir):
    """(a) the run directory, a model that transformers loads, sparsity within the band, a changed projector."""
    from transformers import LlavaForConditionalGeneration

    out, summary, rec = reference
    assert {"model", "policy.json", "history.parquet", "state.json", "config.yaml"} <= {p.name for p in out.iterdir()}
    doc = json.loads((out / "policy.json").read_text())
    assert len(doc["ratios"]) == 3 and abs(doc["mean_sparsity"] - 0.5) <= 0.01 + 1e-9
    assert doc["achieved_mean_sparsity"] == pytest.approx(doc["mean_sparsity"], abs=1e-3)
    history = outcome(out)["history"]
    assert history.num_rows == 3 * 6
    assert doc["fitness"] == max(history.filter(history["generation"].to_numpy() == 2)["fitness"].to_pylist())
    pruned = LlavaForConditionalGeneration.from_pretrained(out / "model")
    dense = LlavaForConditionalGeneration.from_pretrained(tiny_llava_dir)
    assert abs(language_model_sparsity(pruned) - 0.5) <= 0.01 + 1e-6
    assert zeros_match_policy(pruned, doc["ratios"])
    changed = [(p - q).abs().max().item() for p, q in zip(pruned.model.multi_modal_projector.parameters(),
                                                          dense.model.multi_modal_projector.parameters())]
    assert min(changed) > 0, "every projector tensor was updated"
    for p, q in zip(pruned.model.vision_tower.parameters(), dense.model.vision_tower.parameters()):
        assert __import__("torch").equal(p, q)  # the vision tower is never touched
    # search-space evolution is recorded per generation and moves the projector; one version per mini-batch
    # step and one per rescale of the guard (kept 1: none, 1/2: one, 1/4: two, dropped: three)
    rows = history.to_pylist()
    version, rescales = 0, {1.0: 0, 0.5: 1, 0.25: 2, 0.0: 3}
    for t in range(3):
        gen = [r for r in rows if r["generation"] == t]
        assert {r["projector_version"] for r in gen} == {version}
        version += 4 + rescales[gen[0]["projector_scale"]]
        assert len({r["projector_change"] for r in gen}) == 1
        assert (gen[0]["projector_change"] > 0) == (gen[0]["projector_scale"] > 0)
        assert 1.0 < gen[0]["effective_candidates"] <= 6
        assert 0 < gen[0]["projector_loss_after"] <= gen[0]["projector_loss_before"]  # the guard's promise
        assert all(r["l_mm"] is not None and r["l_text"] is not None for r in gen)
    assert doc["projector_version"] == version
    # both actors worked, each on its sorted chunk; prefix reuse skipped some block passes
    assert {e.actor for e in rec.candidates} == {0, 1}
    assert summary["stats"]["candidates"] == 18 and summary["stats"]["actor_failures"] == 0
    assert summary["stats"]["blocks_run"] < 18 * 3


def test_the_guard_drops_updates_that_raise_the_held_aside_loss(cluster, tiny_llava_dir, tmp_path):
    """An update that provably raises the held-aside loss (tests/faults.py: a penalty on the projector's
    distance from where it started) is halved, halved again, then dropped, in every generation, through the
    learner's rescale: the saved model keeps the dense projector bit for bit."""
    import torch
    from transformers import LlavaForConditionalGeneration

    out = tmp_path / "run"
    cluster["penalty"].write_text("on")
    try:
        run_search(tiny_run(tiny_llava_dir, search={"generations": 2}), str(out), progress=False,
                   log=lambda m: None)
    finally:
        cluster["penalty"].unlink()
    rows = outcome(out)["history"].to_pylist()
    for t in range(2):
        (first,) = {(r["projector_version"], r["projector_scale"], r["projector_change"]) for r in rows
                    if r["generation"] == t}
        assert first == (7 * t, 0.0, 0.0)  # 4 steps + 3 rescales (1/2, 1/4, 0) per generation, nothing kept
        gen = [r for r in rows if r["generation"] == t]
        assert gen[0]["projector_loss_after"] == gen[0]["projector_loss_before"]
    pruned = LlavaForConditionalGeneration.from_pretrained(out / "model")
    dense = LlavaForConditionalGeneration.from_pretrained(tiny_llava_dir)
    for p, q in zip(pruned.model.multi_modal_projector.parameters(), dense.model.multi_modal_projector.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_screened_search_on_ray_in_either_precision(cluster, tiny_llava_dir, tmp_path, precision):
    """The default preset's path (database mode, children screened on a slice) on two actors, with the
    screening precision forced, so that every CPU runs both (bfloat16 works everywhere, only slower)."""
    out = tmp_path / "run"
    run = tiny_run(tiny_llava_dir, search={"generations": 2, "offspring": 10},
                   engine={"mode": "database", "screen_precision": precision, "screen_nsamples": 2,
                           "screen_mm_samples": 2})
    summary = run_search(run, str(out), progress=False, log=lambda m: None)
    history = outcome(out)["history"].to_pylist()
    screened = [r for r in history if r["fidelity"] == "screen"]
    assert len(screened) == 10 and {r["generation"] for r in screened} == {1}
    assert all(r["infeasible"] is None and r["l_mm"] is not None for r in history)
    doc = json.loads((out / "policy.json").read_text())
    assert abs(doc["achieved_mean_sparsity"] - 0.5) <= 0.01 + 1e-9
    kept = [r for r in history if r["generation"] == 1 and r["fidelity"] == "full"]
    best_screened = sorted(screened, key=lambda r: -r["fitness"])[:6 - 2]  # the elites plus the best children
    assert {tuple(r["policy"]) for r in best_screened} <= {tuple(r["policy"]) for r in kept}
    assert summary["stats"]["screened"] == 10
    # the exported model is the documented recipe: the run's policy and final projector, pruned sequentially from
    # the dense model by a fresh scorer in this process, give the actor's weights bit for bit (after a search that
    # built a database, screened, stepped the projector; on smol-llava at 0.7 rounding alone makes a re-prune differ)
    from safetensors.torch import load_file

    from benchmarks.variants import full_outcome, prune_with_projectors

    ratios, evolved = full_outcome(out)
    dense = load_file(str(tiny_llava_dir / "model.safetensors"))
    assert any(not torch.equal(w, dense[f"multi_modal_projector.{k}"].to(w.dtype)) for k, w in evolved.items()), \
        "the projector moved (else the re-prune would not test that the masks come through the evolved one)"
    report = prune_with_projectors(run.engine, run.data, ratios, evolved, "evolved", "evolved", tmp_path / "again")
    assert report.loss == pytest.approx(doc["calibration_loss"], rel=1e-9)
    exported, again = load_file(str(out / "model" / "model.safetensors")), load_file(str(tmp_path / "again" /
                                                                                          "model.safetensors"))
    assert exported.keys() == again.keys()
    assert [k for k in exported if not torch.equal(exported[k], again[k])] == []


def test_rerank_on_ray_exports_the_best_of_the_sequential_prunes(cluster, tiny_llava_dir, tmp_path):
    """search.rerank on two actors: the last generation's best 2 policies and uniform pruned as the final model is
    (fidelity "export", never counted as screened), the exported policy the best of them."""
    out = tmp_path / "run"
    run = tiny_run(tiny_llava_dir, search={"generations": 2, "rerank": 2}, engine={"mode": "database"})
    summary = run_search(run, str(out), progress=False, log=lambda m: None)
    history = outcome(out)["history"].to_pylist()
    export = [r for r in history if r["fidelity"] == "export"]
    last = [r for r in history if r["fidelity"] == "full" and r["generation"] == 1]
    best2 = sorted({tuple(r["policy"]) for r in last}, key=lambda p: -max(r["fitness"] for r in last
                                                                         if tuple(r["policy"]) == p))[:2]
    uniform = (2,) * len(best2[0])
    assert [tuple(r["policy"]) for r in export][:2] == best2
    assert {tuple(r["policy"]) for r in export} == {*best2, uniform}
    assert all(r["generation"] == 1 and r["infeasible"] is None and not r["cached"] for r in export)
    doc = json.loads((out / "policy.json").read_text())
    chosen = max(export, key=lambda r: r["fitness"])
    assert doc["levels"] == chosen["policy"] and doc["fitness"] == chosen["fitness"]
    assert doc["rerank"] == 2 and doc["scored_as"] == "export"
    assert summary["stats"]["screened"] == 0


def test_dashboard_shows_named_actors_and_custom_metrics(reference):
    """(e) during the run: the named actors through the state API, the custom metrics on the
    node's Prometheus endpoint (driver metrics tagged with the run, actor metrics per actor)."""
    _, summary, rec = reference
    probe = rec.probe
    assert probe is not None and "error" not in probe, probe
    run = summary["run_name"]
    assert probe["actors"] == sorted([f"{run}.evaluator-0", f"{run}.evaluator-1", f"{run}.learner"])
    missing = [m for m, lines in probe["metrics"].items() if not lines]
    assert not missing, missing
    assert metric_value(probe["metrics"]["efficientllava_generation"], run) == 2.0  # probed after generation 1
    assert metric_value(probe["metrics"]["efficientllava_candidates_evaluated"], run) == 12.0
    best = [e.best_fitness for e in rec.events if isinstance(e, GenerationFinished) and e.generation == 1]
    assert metric_value(probe["metrics"]["efficientllava_best_fitness"], run) == pytest.approx(best[0])
    assert metric_value(probe["metrics"]["efficientllava_seconds_per_candidate"], run) > 0


def test_one_actor_gives_the_same_result(reference, tiny_llava_dir, tmp_path):
    """(b) same seed, 1 actor instead of 2: bit-identical outcome."""
    out = tmp_path / "run"
    rec = Recorder()
    summary = run_search(tiny_run(tiny_llava_dir, ray={"actors": 1}), str(out), progress=False,
                         log=lambda m: None, **rec.hooks())
    assert summary["actors"] == 1 and {e.actor for e in rec.candidates} == {0}
    assert_same_outcome(outcome(out), outcome(reference[0]))


def test_evaluator_killed_mid_candidate_gives_the_same_result(cluster, reference, tiny_llava_dir, tmp_path):
    """(c) an evaluator dies (SIGKILL) in the middle of a candidate of generation 1: Ray restarts it,
    the candidate is re-run on the other actor, the restarted actor installs the current projector."""
    cluster["fault"].write_text("1")  # die at projector version >= 1
    out = tmp_path / "run"
    rec, logs = Recorder(), []
    summary = run_search(tiny_run(tiny_llava_dir), str(out), progress=False, log=logs.append, **rec.hooks())
    assert not cluster["fault"].exists(), "the fault was injected"
    assert summary["stats"]["actor_failures"] == 1 and summary["stats"]["reruns"] == 1, logs
    assert any("failed; its candidate runs elsewhere" in m for m in logs)
    assert_same_outcome(outcome(out), outcome(reference[0]))


def test_restarted_actor_installs_the_current_projector(cluster, tiny_llava_dir):
    """(c) with one actor: kill it after a projector step; the candidate waits for the restart, and
    the restarted actor (dense projector after its constructor) installs the current version and
    gives the same numbers as before the kill. Then the learner: a learner killed in the middle
    of a generation's mini-batch steps is restored, and the update comes out the same."""
    import numpy as np
    import torch

    from efficientllava.actors.evaluator_pool import EvaluatorPool
    from efficientllava.prune_engine.tensors import deserialise

    ev = EvaluatorPool(tiny_run(tiny_llava_dir, ray={"actors": 1}), "restart-test", log_fn=lambda m: None)
    try:
        # its bundle and its actor reserve the estimated host memory (actors/memory_request.py)
        from ray.util.state import list_actors

        (bundle,) = ray.util.placement_group_table(ev.pg)["bundles"].values()
        assert ev.memory > 1 << 30 and bundle == {"CPU": 1.0, "memory": float(ev.memory)}, bundle
        (actor,) = list_actors(address=cluster["address"], filters=[("name", "=", "restart-test.evaluator-0")],
                               detail=True)
        # inside a placement group Ray names the actor's share of bundle 0 memory_group_0_<group id>
        assert actor.required_resources[f"memory_group_0_{ev.pg.id.hex()}"] == ev.memory, actor.required_resources
        seen = []
        ev.on_candidate = seen.append
        policies = [np.array([0.4, 0.5, 0.6]), np.array([0.6, 0.5, 0.4])]
        ev.evaluate(policies, 0)
        update = ev.projector_step(policies, [[0, 1]], 1e-2)
        assert update.version == 1 and update.change > 0 and update.loss_after != update.loss_before
        (before,) = ev.evaluate(policies[:1], 1)
        ray.kill(ev.actors[0], no_restart=False)
        (after,) = ev.evaluate(policies[:1], 1)
        assert ev.stats["actor_failures"] >= 1 and seen[-1].restarted and seen[-1].projector_version == 1
        assert (after.l_text, after.l_mm) == (before.l_text, before.l_mm)
        assert np.array_equal(after.log_norm_ratio, before.log_norm_ratio)
        assert not seen[-2].restarted

        # the learner: two mini-batch steps undisturbed ...
        saved = ev.projector_state()
        draws = [[0, 0], [1, 0]]
        assert ev.projector_step(policies, draws, 1e-2).version == 3
        undisturbed = deserialise(ev.projector_state())
        # ... and again from the saved state, with the learner killed before the update
        ev.load_projector_state(saved, 1)
        ray.kill(ev.learner, no_restart=False)
        assert ev.projector_step(policies, draws, 1e-2).version == 3
        assert ev.stats["learner_restores"] == 1
        again = deserialise(ev.projector_state())
        for name in undisturbed["names"]:
            assert torch.equal(undisturbed["params"][name], again["params"][name])
        for k, state in undisturbed["optimizer"]["state"].items():
            assert torch.equal(state["exp_avg_sq"], again["optimizer"]["state"][k]["exp_avg_sq"])

        # the guard's rescale: half the update, undisturbed and with the learner killed before the rescale
        # (the restored learner replays the steps, then rescales from the same mark)
        ev.load_projector_state(saved, 1)
        (base,) = ev.evaluate(policies[:1], 1)
        ev.projector_step(policies, draws, 1e-2)
        half = ev.rescale_projector_update(0.5)
        halved = deserialise(ev.projector_state())
        ev.load_projector_state(saved, 1)
        ev.projector_step(policies, draws, 1e-2)
        ray.kill(ev.learner, no_restart=False)
        retried = ev.rescale_projector_update(0.5)
        assert ev.stats["learner_restores"] == 2 and retried.version == half.version == 4 and retried.scale == 0.5
        assert (retried.loss_before, retried.loss_after) == (half.loss_before, half.loss_after)
        assert all(torch.equal(halved["params"][n], deserialise(ev.projector_state())["params"][n])
                   for n in halved["names"])
        # dropped: the projector of the generation's start again, on every evaluator
        dropped = ev.rescale_projector_update(0.0)
        assert dropped.version == 5 and dropped.loss_after == dropped.loss_before and dropped.change == 0.0
        (back,) = ev.evaluate(policies[:1], 5)
        assert (back.l_text, back.l_mm) == (base.l_text, base.l_mm)
    finally:
        ev.shutdown()


def test_memory_beyond_the_cluster_is_one_error_before_any_actor_starts(cluster, tiny_llava_dir):
    from ray.util.state import list_actors

    from efficientllava.actors.evaluator_pool import EvaluatorPool
    from efficientllava.search.config import ConfigError

    with pytest.raises(ConfigError, match=r"the cluster has [\d.]+ GiB of memory .*; 2 evaluator actors need "
                                          r"200000\.0 GiB \(100000\.00 GiB each, set\).*memory_per_actor_gb") as err:
        EvaluatorPool(tiny_run(tiny_llava_dir, ray={"memory_per_actor_gb": 100000}), "memory-test", log_fn=lambda m: None)
    assert "\n" not in str(err.value)
    assert not [pg for pg in ray.util.placement_group_table().values() if pg["name"].startswith("memory-test")]
    assert not [a for a in list_actors(address=cluster["address"]) if (a.name or "").startswith("memory-test")]


def test_driver_killed_then_resume_gives_the_same_result(cluster, reference, tiny_llava_dir, tmp_path):
    """(c) SIGKILL the CLI driver after its first checkpoint, `efficientllava resume` on the same cluster."""
    from typer.testing import CliRunner

    from efficientllava.actors.cli import app
    from efficientllava.search.checkpoint import RunStore

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_sections(tiny_llava_dir)))
    out = tmp_path / "run"
    log = open(tmp_path / "driver.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "efficientllava.actors.cli", "search", "--config", str(config),
                             "--out", str(out), "--address", cluster["address"], "--no-progress", "--preset", "none"],
                            stdout=log, stderr=subprocess.STDOUT)
    store, deadline = RunStore(str(out)), time.monotonic() + 240
    try:
        while not (store.exists() and store.load()[0]["generation"] >= 1):
            assert proc.poll() is None, (tmp_path / "driver.log").read_text()
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    generation = store.load()[0]["generation"]
    assert generation < 3 and not (out / "model").exists()
    result = CliRunner().invoke(app, ["resume", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"resuming {out} at generation {generation}" in result.output
    assert_same_outcome(outcome(out), outcome(reference[0]))


def test_text_only_model_in_database_mode(cluster, tiny_llama_dir, tmp_path):
    """A text-only model skips the projector step cleanly (no learner, projector version 0);
    database mode searches, and the final model is still pruned sequentially."""
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    rec = Recorder()
    run = tiny_run(tiny_llama_dir, engine={"mode": "database"}, data={"mm_calib": None},
                   search={"population": 4, "generations": 2})
    summary = run_search(run, str(out), progress=False, log=lambda m: None, **rec.hooks())
    assert not rec.evaluator.use_projector and all(not n.endswith(".learner") for n in rec.names)
    o = outcome(out)
    assert o["projector"] is None and set(o["history"]["projector_version"].to_pylist()) == {0}
    assert o["doc"]["mode"] == "database" and o["doc"]["projector_version"] == 0
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    assert abs(language_model_sparsity(model) - 0.5) <= 0.01 + 1e-6
    assert zeros_match_policy(model, o["doc"]["ratios"])
    # database mode: one pass per block at every level per actor, then candidates are stitched
    assert summary["stats"]["candidates"] == o["history"].num_rows - sum(o["history"]["cached"].to_pylist())


def test_infeasible_population_is_one_error_and_writes_nothing(cluster, tiny_llava_dir, tmp_path):
    """Feasibility needs the model's parameter counts (from the actors): still nothing is written."""
    from efficientllava.search.config import ConfigError

    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="larger than the feasible space"):
        run_search(tiny_run(tiny_llava_dir, search={"population": 500, "elites": 4}), str(out), progress=False,
                   log=lambda m: None)
    assert not out.exists()
    from ray.util.state import list_actors

    for _ in range(20):  # and its actors are gone (ray.kill is asynchronous); this cluster's, not any other's
        if not [a for a in list_actors(address=cluster["address"], filters=[("state", "=", "ALIVE")])
                if (a.name or "").startswith("run-")]:
            break
        time.sleep(0.5)
    else:
        raise AssertionError("actors of the refused run are still alive")
