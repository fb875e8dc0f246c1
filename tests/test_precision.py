"""Which dtype the screening forward runs in (prune_engine/precision.py)."""
import pytest
import torch

from efficientllava.prune_engine import precision


def test_explicit_settings_and_a_bad_one():
    assert precision.screen_dtype("fp32", "cpu") is None
    assert precision.screen_dtype("bf16", "cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="screen precision must be one of auto, fp32, bf16"):
        precision.screen_dtype("fp16", "cpu")


@pytest.mark.parametrize("fast", [True, False])
def test_auto_on_cpu_follows_the_hardware(monkeypatch, fast):
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: fast)
    assert precision.screen_dtype("auto", "cpu") == (torch.bfloat16 if fast else None)


def test_cpu_flags_are_read_from_proc_cpuinfo():
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        pytest.skip("no /proc/cpuinfo flags here")
    precision.cpu_has_fast_bf16.cache_clear()
    assert precision.cpu_has_fast_bf16() == bool({"amx_bf16", "avx512_bf16"} & set(flags))
