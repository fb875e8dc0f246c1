"""Shared bits of the benchmark scripts: machine facts and result files."""
from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
#: the CPU features that change our speeds: AVX-512 (and its VNNI / BF16 parts) and AMX decide which kernels
#: torch, oneDNN and DeepSparse run, and whether bfloat16 is fast (prune_engine/precision.py)
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_isa() -> dict:
    """The ISA flags of ISA_FLAGS the CPU has (Linux /proc/cpuinfo) and the kernel level torch dispatches to."""
    import torch

    flags: set[str] = set()
    try:
        line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags"))
        flags = set(line.split(":", 1)[1].split())
    except (OSError, StopIteration):
        pass
    out = {f: f in flags for f in ISA_FLAGS}
    out["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return out


def isa_summary(isa: dict) -> str:
    """'AVX-512 + VNNI + BF16 + AMX' or 'AVX2 only (no AVX-512, no AMX, no native bfloat16)'."""
    if not isa.get("avx512f"):
        return "AVX2 only (no AVX-512, no AMX, no native bfloat16)" if isa.get("avx2") else "no AVX2"
    parts = ["AVX-512"] + [name for flag, name in (("avx512_vnni", "VNNI"), ("avx512_bf16", "BF16"),
                                                  ("amx_tile", "AMX")) if isa.get(flag)]
    return " + ".join(parts)


def cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def machine() -> dict:
    import torch
    import transformers

    cpu = cpu_name()
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip()
    except OSError:  # no git on the machine (e.g. a GPU box with only the working tree)
        commit = None
    isa = cpu_isa()
    return {"cpu": cpu, "isa": isa_summary(isa), "isa_flags": isa, "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "load_average_at_start": load, "commit": commit,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def machine_label() -> str:
    """This machine as a result row records it: the CPU and its instruction sets (what a pruned model at high
    sparsity depends on through rounding, docs/method.md "Another CPU")."""
    return f"{cpu_name()}, {isa_summary(cpu_isa())}"


def markdown_table(headers: list[str], rows: list[list]) -> str:
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, title: str, table: str, data: dict, notes: str = "") -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    info = data.setdefault("machine", machine())
    md = [f"# {title}", "", table, ""]
    if notes:
        md += [notes, ""]
    md += ["Machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), ""]
    (RESULTS / f"{name}.md").write_text("\n".join(md))
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2, default=str))
    print(f"\nwrote {RESULTS / name}.md and .json")
