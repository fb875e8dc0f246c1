"""Several Ray nodes on one machine (ray.cluster_utils.Cluster): actors spread over worker nodes,
weights reach them through the object store, and the final model comes back to the driver's node."""
import json

import pytest

ray = pytest.importorskip("ray")

from efficientllava.actors.run import run_search  # noqa: E402
from ray_helpers import language_model_sparsity, tiny_run  # noqa: E402

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def multinode():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})  # no actor here
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    ray.init(address=cluster.address)
    cluster.wait_for_nodes()
    try:
        yield cluster, workers
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_actors_on_two_worker_nodes(multinode, tiny_llava_dir, tmp_path):
    from transformers import LlavaForConditionalGeneration

    seen = {}
    run = tiny_run(tiny_llava_dir, search={"population": 4, "generations": 2}, ray={"strategy": "STRICT_SPREAD"})
    out = tmp_path / "run"
    summary = run_search(run, str(out), progress=False, log=lambda m: None,
                         on_ready=lambda ev: seen.update(nodes=[f["node_id"] for f in ev.facts]))
    driver_node = ray.get_runtime_context().get_node_id()
    assert len(set(seen["nodes"])) == 2 and driver_node not in seen["nodes"]
    # the model was pruned on a worker node and its files shipped back to the driver's directory
    doc = json.loads((out / "model" / "policy.json").read_text())
    assert doc["achieved_mean_sparsity"] == pytest.approx(summary["policy"]["mean_sparsity"], abs=1e-3)
    model = LlavaForConditionalGeneration.from_pretrained(out / "model")
    assert abs(language_model_sparsity(model) - 0.5) <= 0.01 + 1e-6
