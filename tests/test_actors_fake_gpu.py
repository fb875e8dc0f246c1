"""The GPU schedule on a CPU machine: Ray nodes that declare GPUs (ray.cluster_utils.Cluster, num_gpus=2), the computation kept on the CPU by engine.device=cpu; bundles with fractional GPUs, the device Ray assigns, a restart in a GPU bundle."""
import pytest

from efficientllava.actors.evaluator_actor import actor_device


@pytest.mark.parametrize("setting, gpu_ids, device", [
    ("auto", ["1"], "cuda"),  # Ray sets CUDA_VISIBLE_DEVICES=1: 'cuda' is that GPU
    ("auto", [], "cpu"),
    ("cpu", ["0"], "cpu"),  # an explicit cpu keeps the computation off the GPU of the bundle
    ("cuda:0", ["3"], "cuda:0"),
])
def test_the_actor_device_follows_the_setting_then_the_assigned_gpu(setting, gpu_ids, device):
    assert actor_device(setting, gpu_ids) == device


def test_an_unknown_device_is_one_line(tiny_llava_dir):
    from efficientllava.actors.config import ConfigError
    from ray_helpers import tiny_run

    with pytest.raises(ConfigError, match="device 'tpu'"):
        tiny_run(tiny_llava_dir, engine={"device": "tpu"})


@pytest.fixture(scope="module")
def fake_gpu_cluster(tmp_path_factory):
    import ray
    from ray.cluster_utils import Cluster

    import faults

    fault = tmp_path_factory.mktemp("fault") / "kill-an-evaluator"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    cluster.add_node(num_cpus=2, num_gpus=2)  # declared, not real: nothing here may touch CUDA
    ray.init(address=cluster.address, runtime_env=faults.runtime_env(fault), log_to_driver=False)
    cluster.wait_for_nodes()
    try:
        yield fault
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.ray
def test_search_with_half_a_gpu_per_actor_on_a_fake_gpu_node(fake_gpu_cluster, tiny_llava_dir, tmp_path):
    """Two evaluators in bundles {CPU: 1, GPU: 0.5}: Ray assigns each a GPU and sets CUDA_VISIBLE_DEVICES to it,
    engine.device=cpu keeps the work on the CPU (fp32, as the automatic dtype says for a CPU); one evaluator is
    killed mid-candidate and Ray restarts it in its GPU bundle; the search finishes at its target."""
    import json

    import ray
    from ray.util import placement_group_table

    from efficientllava.actors.run import run_search
    from ray_helpers import tiny_run

    fake_gpu_cluster.write_text("0")  # the first candidate scored kills its evaluator
    seen = {}

    def on_ready(pool):
        seen.update(facts=pool.facts, gpus=pool.gpus, bundles=placement_group_table(pool.pg)["bundles"],
                    free_gpus=ray.available_resources().get("GPU", 0.0))

    run = tiny_run(tiny_llava_dir, search={"population": 4, "generations": 2}, engine={"device": "cpu"},
                   ray={"actors": 2, "cpus_per_actor": 1, "gpus_per_actor": 0.5})
    logs = []
    summary = run_search(run, str(tmp_path / "run"), progress=False, log=logs.append, on_ready=on_ready)
    assert seen["gpus"] == 0.5
    assert [b.get("GPU") for b in seen["bundles"].values()] == [0.5, 0.5]
    assert seen["free_gpus"] == pytest.approx(1.0)  # 2 declared, 2 x 0.5 held by the bundles
    for f in seen["facts"]:
        assert f["device"] == "cpu" and f["dtype"] == "float32"
        assert f["gpu_ids"] and f["cuda_visible_devices"] == ",".join(f["gpu_ids"])
    assert not fake_gpu_cluster.exists(), "the fault was injected"
    assert summary["stats"]["actor_failures"] == 1 and summary["stats"]["reruns"] == 1, logs
    doc = json.loads((tmp_path / "run" / "policy.json").read_text())
    assert abs(doc["mean_sparsity"] - 0.5) <= 0.01 + 1e-9


@pytest.mark.ray
def test_a_plan_that_cannot_fit_the_gpus_is_refused_before_any_actor_starts(fake_gpu_cluster, tiny_llava_dir,
                                                                              tmp_path):
    """Two evaluators per fake GPU whose declared memory (ray.gpu_memory_gb) holds one of them: one line saying
    what to change, and no actor or placement group was started."""
    import ray
    from ray.util import placement_group_table

    from efficientllava.actors.cluster_plan import block_working_set, device_peak
    from efficientllava.actors.config import ConfigError
    from efficientllava.actors.memory_request import GiB, model_parameters
    from efficientllava.actors.run import run_search
    from efficientllava.prune_engine.models.loading import model_facts
    from ray_helpers import tiny_run

    facts = model_facts(str(tiny_llava_dir))
    text = {"hidden_size": facts["hidden"], "intermediate_size": facts["intermediate"],
            "num_attention_heads": facts["heads"], "num_key_value_heads": facts["kv_heads"],
            "vocab_size": facts["vocab"]}
    per_actor = device_peak(model_parameters(str(tiny_llava_dir)) * 2, block_working_set(text, 1), "sequential")
    groups = len(placement_group_table())
    run = tiny_run(tiny_llava_dir, engine={"mode": "sequential"},  # auto device: the (fake) GPU, float16
                   ray={"actors": 2, "cpus_per_actor": 1, "gpus_per_actor": 0.5,
                        "gpu_memory_gb": 1.5 * per_actor / GiB})
    with pytest.raises(ConfigError) as exc:
        run_search(run, str(tmp_path / "run"), progress=False, log=lambda m: None)
    message = str(exc.value)
    assert "\n" not in message and "2 evaluator(s) per GPU" in message and "--gpus-per-actor 1" in message
    named = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
    assert not [n for n in named if "evaluator" in n] and len(placement_group_table()) == groups


def test_a_run_saved_before_engine_device_was_honoured_keeps_choosing_by_gpu(tiny_llava_dir):
    """Older run directories saved engine.device 'cpu' (then ignored: actors chose by their GPU) and no dtype."""
    from efficientllava.actors.config import RunConfig
    from ray_helpers import tiny_run

    run = tiny_run(tiny_llava_dir)
    saved = dict(run.search.to_dict(), extra=run.app())  # the layout of then: the sections in the search's extra
    saved["extra"]["engine"] = {k: v for k, v in saved["extra"]["engine"].items() if k != "dtype"} | {"device": "cpu"}
    assert RunConfig.from_saved(saved).engine.device == "auto"
    saved["extra"]["engine"]["dtype"] = "auto"  # saved now: an explicit cpu is kept
    assert RunConfig.from_saved(saved).engine.device == "cpu"
