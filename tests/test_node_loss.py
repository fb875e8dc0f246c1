"""Node loss on a Ray cluster of several nodes on one machine (ray.cluster_utils.Cluster): a worker node removed in
the middle of a generation — the node of an evaluator (and of a level-database part), the node of the learner and
the object holder — and a node's processes stopped by SIGTERM as a spot preemption does. The search finishes by
itself with the bit-identical result of an undisturbed run on the same cluster shape."""
import os
import signal

import pytest

ray = pytest.importorskip("ray")

from efficientllava.actors.run import run_search  # noqa: E402
from ray_helpers import assert_same_outcome, outcome, tiny_run  # noqa: E402

pytestmark = pytest.mark.ray

WORKERS = 3  # two evaluator actors and a spare node their bundles can move to


def _search(tiny_llava_dir):
    # database mode with two actors: each builds a part of the level database that both read
    return tiny_run(tiny_llava_dir, search={"population": 4, "elites": 2, "generations": 2},
                    engine={"mode": "database"}, ray={"strategy": "SPREAD"})


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for _ in range(WORKERS):
        cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, namespace="efficientllava", log_to_driver=False)
    cluster.wait_for_nodes()
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def _refill(cluster):
    """Back to WORKERS worker nodes (a test that removed one leaves the next the same shape)."""
    for node in list(cluster.worker_nodes):  # a node whose processes were stopped (SIGTERM) is dropped from the list
        if not node.any_processes_alive():
            try:
                cluster.remove_node(node, allow_graceful=False)
            except Exception:
                pass
    while len([n for n in cluster.worker_nodes]) < WORKERS:
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()


@pytest.fixture(scope="module")
def reference(cluster, tiny_llava_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("undisturbed") / "run"
    run_search(_search(tiny_llava_dir), str(out), progress=False, log=lambda m: None)
    return outcome(out)


def _node_of(cluster, node_id: str):
    return next(n for n in cluster.worker_nodes if n.node_id == node_id)


def _actor_node(name: str) -> str:
    """The node of a live named actor (from the GCS: these clusters run no dashboard)."""
    from ray._private.state import actors

    (actor,) = [a for a in actors().values() if a.get("Name") == name and a.get("State") == "ALIVE"]
    return actor["Address"]["NodeID"]


class NodeLoss:
    """Removes (or SIGTERMs the processes of) the node of a named actor once, in the middle of generation 1:
    after the first candidate of that generation came back."""

    def __init__(self, cluster, actor: str, how: str = "remove"):
        self.cluster, self.actor, self.how = cluster, actor, how
        self.pool, self.seen, self.lost, self.logs = None, 0, None, []

    def on_ready(self, pool):
        self.pool = pool
        self.first_generation = pool.stats["candidates"]
        self.holder_node = _actor_node(f"{pool.run_name}.weights")

    def on_candidate(self, summary):
        self.seen += 1
        if self.lost is None and self.pool.projector_version > 0:  # generation 1 has begun (after a projector step)
            name = f"{self.pool.run_name}.{self.actor}"
            node = _node_of(self.cluster, _actor_node(name))
            self.lost = node.node_id
            if self.how == "remove":
                self.cluster.remove_node(node)
            else:  # spot preemption: the node's processes get SIGTERM
                for proc in node.live_processes():
                    os.kill(proc[1].pid, signal.SIGTERM)

    def hooks(self):
        return dict(on_candidate=self.on_candidate, on_ready=self.on_ready, log=self.logs.append)


# evaluator 1's node holds a level-database part; evaluator 0's node also holds the learner (it lives in the
# placement group's bundle 0; the object holder is pinned to the head, the driver's node). Removing that node (cluster.remove_node)
# passed as well when this test was written; the suite keeps the two cases below for time.
@pytest.mark.parametrize("actor,how", [("evaluator-1", "remove"), ("learner", "sigterm")])
def test_a_node_lost_mid_generation_gives_the_same_result(cluster, reference, tiny_llava_dir, tmp_path, actor, how):
    _refill(cluster)
    loss = NodeLoss(cluster, actor, how)
    out = tmp_path / "run"
    summary = run_search(_search(tiny_llava_dir), str(out), progress=False, **loss.hooks())
    assert loss.lost is not None, "the node was never lost: the test did not test anything"
    # the holder of the weights' refs does not restart: it must live on the driver's node, never on a worker's
    assert loss.holder_node == cluster.head_node.node_id
    assert_same_outcome(outcome(out), reference)
    stats = summary["stats"]  # what the run reports: which node, how much was redone and how long it took
    assert stats["nodes_lost"] == [loss.lost] and stats["reruns"] >= 1 and stats["restart_seconds"] > 0
    lost_lines = [m for m in loss.logs if loss.lost[:8] in m]
    assert lost_lines, "the log does not say which node was lost: " + " | ".join(loss.logs[-8:])


class Stop(Exception):
    """The driver dies in the middle of generation 1 (its checkpoint of generation 0 is on disk)."""


@pytest.mark.parametrize("shape", [{"actors": 3, "strategy": "STRICT_SPREAD"}], ids=["three-actors-strict-spread"])
def test_resume_on_another_cluster_shape_gives_the_same_result(cluster, reference, tiny_llava_dir, tmp_path, shape):
    """Started with two actors spread over two nodes, resumed with three on three nodes under another strategy
    (resuming with one actor on one node passed too when this test was written): the level database's parts,
    the schedule of candidates to actors and the prefix caches differ, what the search decides does not."""
    from efficientllava.actors.run import resume_search

    _refill(cluster)
    out = tmp_path / "run"
    pool = {}

    def stop_in_generation_1(summary):
        if pool["pool"].projector_version > 0:
            raise Stop

    with pytest.raises(Stop):
        run_search(_search(tiny_llava_dir), str(out), progress=False, log=lambda m: None,
                   on_ready=lambda p: pool.update(pool=p), on_candidate=stop_in_generation_1)
    assert not (out / "model").exists()
    seen = {}
    resume_search(str(out), ray_overrides=shape, progress=False, log=lambda m: None,
                  on_ready=lambda p: seen.update(actors=p.n_actors, nodes={f["node_id"] for f in p.facts}))
    assert seen["actors"] == shape["actors"] and len(seen["nodes"]) == shape["actors"]
    assert_same_outcome(outcome(out), reference)
