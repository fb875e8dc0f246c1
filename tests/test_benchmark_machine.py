"""Benchmark results name their machine: the CPU's ISA flags that decide our speeds are recorded."""
from __future__ import annotations

from benchmarks.common import ISA_FLAGS, cpu_isa, isa_summary, machine


def test_machine_records_the_isa_flags_that_matter():
    info = machine()
    assert set(ISA_FLAGS) <= set(info["isa_flags"]) and info["isa_flags"]["torch_cpu_capability"]
    assert info["isa"] == isa_summary(cpu_isa()) and info["commit"] is not None


def test_isa_summary_tells_avx2_only_from_avx512():
    none = {f: False for f in ISA_FLAGS}
    assert isa_summary(none | {"avx2": True}) == "AVX2 only (no AVX-512, no AMX, no native bfloat16)"
    assert isa_summary(none | {"avx2": True, "avx512f": True, "avx512_vnni": True}) == "AVX-512 + VNNI"
    full = {f: True for f in ISA_FLAGS}
    assert isa_summary(full) == "AVX-512 + VNNI + BF16 + AMX"
