"""The cluster plan (actors/cluster_plan.py): its constants are the fit of benchmarks/results/memory.json, the fit predicts a row it did not use, shapes, node plans and the one-line refusal."""
import json

import pytest

from efficientllava.actors import cluster_plan as cp
from efficientllava.actors.memory_request import GiB


@pytest.fixture(scope="module")
def memory_rows():
    from benchmarks.common import RESULTS

    return json.loads((RESULTS / "memory.json").read_text())["rows"]


@pytest.mark.parametrize("mode", ["sequential", "database"])
def test_package_constants_are_the_fit_and_predict_the_held_out_row(memory_rows, mode):
    from benchmarks.cluster_plan import fit, validation

    alpha, beta = fit(memory_rows, mode)
    assert cp.ALPHA[mode] == pytest.approx(alpha, rel=1e-3) and cp.BETA[mode] == pytest.approx(beta, rel=1e-3)
    check = validation(memory_rows, mode, cp.ALPHA[mode], cp.BETA[mode])
    assert check["row"] == "1b" and abs(check["error"]) <= 0.15


@pytest.mark.parametrize("name, published", [("llava-1.5-7b", 7.063e9), ("llava-1.5-13b", 13.35e9),
                                             ("qwen2.5-vl-7b", 8.29e9)])
def test_shapes_have_the_published_parameter_counts(name, published):
    assert cp.SHAPES[name].params == pytest.approx(published, rel=0.005)


def test_node_plans_choose_more_actors_on_bigger_gpus_and_say_why_not():
    shape = cp.SHAPES["llava-1.5-7b"]
    big = cp.node_plan(shape, "sequential", 5, gpus=8, gpu_gb=80, ram_gb=1024)
    small = cp.node_plan(shape, "sequential", 5, gpus=8, gpu_gb=24, ram_gb=1024)
    assert big.fits and small.fits and big.actors_per_gpu > small.actors_per_gpu >= 1
    assert big.actors_per_gpu * big.actor.gpu_bytes <= 80 * GiB
    tiny = cp.node_plan(shape, "database", 5, gpus=1, gpu_gb=4, ram_gb=16)
    assert not tiny.fits and tiny.why and tiny.actors_per_gpu == 0
    offloaded = cp.node_plan(cp.SHAPES["llava-1.5-13b"], "sequential", 5, gpus=1, gpu_gb=24, ram_gb=512)
    assert offloaded.fits and offloaded.offload  # 13B in fp16 (26 GiB) does not fit a 24 GiB GPU without it


def _facts(shape: cp.Shape) -> dict:
    t = shape.text()
    return {"hidden": t["hidden_size"], "intermediate": t["intermediate_size"], "heads": t["num_attention_heads"],
            "kv_heads": t["num_key_value_heads"], "vocab": t["vocab_size"], "layers": shape.layers}


def test_check_fits_says_what_to_change_in_one_line():
    shape = cp.SHAPES["llava-1.5-7b"]
    per_actor = cp.actor_plan(shape, "sequential", 5).gpu_bytes
    args = dict(params=shape.params, facts=_facts(shape), mode="sequential", levels=5, width=2, on_disk=False,
                node_object_store=None)
    cp.check_fits(**args, offload=False, actors_per_gpu=1, gpu_gb=80)  # fits
    with pytest.raises(ValueError, match=r"at most 1 evaluator\(s\) per GPU \(--gpus-per-actor 1\)") as exc:
        cp.check_fits(**args, offload=False, actors_per_gpu=2, gpu_gb=1.5 * per_actor / GiB)
    assert "\n" not in str(exc.value)
    with pytest.raises(ValueError, match="set --offload"):
        cp.check_fits(**args, offload=False, actors_per_gpu=1, gpu_gb=16)
    with pytest.raises(ValueError, match="object store"):
        cp.check_fits(**{**args, "node_object_store": GiB}, offload=False, actors_per_gpu=1, gpu_gb=None)
