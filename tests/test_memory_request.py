"""The host memory an evaluator actor reserves (actors/memory_request.py) and the GPU share it may ask for."""
import json

import pytest
import torch
from safetensors.torch import save_file

from efficientllava.actors.config import RayOptions, RunConfig
from efficientllava.actors.memory_request import RUNTIME_BYTES, GiB, actor_memory, checkpoint_parameters, estimate_actor_memory
from efficientllava.search.config import ConfigError


@pytest.fixture
def checkpoint(tmp_path):
    """A model directory of 10 x 20 + 5 = 205 parameters in two safetensors files (fp16 and fp32)."""
    path = tmp_path / "model"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    save_file({"a": torch.zeros(10, 20, dtype=torch.float16)}, str(path / "model-00001-of-00002.safetensors"))
    save_file({"b": torch.zeros(5)}, str(path / "model-00002-of-00002.safetensors"))
    return path


def test_parameters_from_the_checkpoint_on_disk(checkpoint, tmp_path):
    assert checkpoint_parameters(checkpoint) == 205  # from the headers: whatever dtype the files hold
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "pytorch_model.bin").write_bytes(b"\0" * 400)
    (legacy / "config.json").write_text(json.dumps({"torch_dtype": "float32"}))
    assert checkpoint_parameters(legacy) == 100  # file size over the dtype's width
    (legacy / "config.json").write_text("{}")
    assert checkpoint_parameters(legacy) == 200  # no dtype said: fp16 assumed (more parameters, conservative)
    assert checkpoint_parameters(tmp_path / "empty") is None
    (tmp_path / "empty").mkdir()
    assert checkpoint_parameters(tmp_path / "empty") is None


def test_estimate_from_sizes(checkpoint):
    sequential = estimate_actor_memory(205, "sequential", 5, gpu=False)
    assert sequential == RUNTIME_BYTES + 2 * 205 * 4  # model + dense copy, fp32
    database = estimate_actor_memory(205, "database", 5, gpu=False)
    assert database == RUNTIME_BYTES + (2 + 5) * 205 * 4 and database > sequential  # + one copy per level
    # on a GPU: the shared weights and the dense copy in host memory (fp16), the model on the GPU
    assert estimate_actor_memory(205, "sequential", 5, gpu=True) == RUNTIME_BYTES + 2 * 205 * 2
    assert estimate_actor_memory(205, "database", 5, gpu=True) == RUNTIME_BYTES + 7 * 205 * 2
    assert estimate_actor_memory(205, "database", 5, gpu=True, offload=True) == RUNTIME_BYTES + 8 * 205 * 2
    # engine.offload_dir: the dense copy and the database are memory-mapped files, not host memory
    assert estimate_actor_memory(205, "database", 5, gpu=True, on_disk=True) == RUNTIME_BYTES + 205 * 2
    assert estimate_actor_memory(205, "database", 5, gpu=False, on_disk=True) == RUNTIME_BYTES + 205 * 4
    assert estimate_actor_memory(None, "database", 5, gpu=False) is None
    # what the pool requests: the estimate, the setting, or nothing
    assert actor_memory(None, str(checkpoint), "database", 5, gpu=False) == (database, "estimated")
    assert actor_memory(2.5, str(checkpoint), "database", 5, gpu=False) == (int(2.5 * GiB), "set")
    assert actor_memory(0, str(checkpoint), "database", 5, gpu=False) == (0, "none")
    assert actor_memory(None, "org/some-model", "database", 5, gpu=False) == (0, "none")  # a hub id: unknown
    assert actor_memory(None, "/no/such/dir", "sequential", 5, gpu=False) == (0, "none")


def test_a_7b_model_estimate_is_in_the_expected_range():
    """Sanity of the formula at the paper's scale: LLaVA-1.5-7B (7.06 G parameters), 5 levels."""
    p = 7_063_000_000
    assert 54 < estimate_actor_memory(p, "sequential", 5, gpu=False) / GiB < 55  # 2 x 26.3 GiB + 1.5
    assert 27 < estimate_actor_memory(p, "sequential", 5, gpu=True) / GiB < 28  # 2 x 13.2 GiB + 1.5


@pytest.mark.parametrize("gpus", [0, 0.25, 0.5, 1, 1.0])
def test_at_most_one_gpu_per_actor_is_accepted(gpus):
    assert RayOptions(gpus_per_actor=gpus).gpus_per_actor == gpus


@pytest.mark.parametrize("gpus", [1.5, 2, 4])
def test_more_than_one_gpu_per_actor_is_refused_in_one_line(tiny_llava_dir, gpus):
    with pytest.raises(ConfigError, match=r"invalid ray config: gpus_per_actor is .*one device.*at most 1.*"
                                          r"engine\.offload") as err:
        RunConfig.load(None, {"engine.model": str(tiny_llava_dir), "ray.gpus_per_actor": gpus})
    assert "\n" not in str(err.value)


def test_memory_setting_is_checked(tiny_llava_dir):
    with pytest.raises(ConfigError, match="memory_per_actor_gb"):
        RunConfig.load(None, {"engine.model": str(tiny_llava_dir)}, ["ray.memory_per_actor_gb=-1"])
    run = RunConfig.load(None, {"engine.model": str(tiny_llava_dir), "ray.memory_per_actor_gb": 3.5})
    assert run.ray.memory_per_actor_gb == 3.5 and run.app()["ray"]["memory_per_actor_gb"] == 3.5
