"""Shared bits of the benchmark scripts: machine facts and result files."""
from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    import torch
    import transformers

    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip()
    except OSError:  # no git on the machine (e.g. a GPU box with only the working tree)
        commit = None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "load_average_at_start": load, "commit": commit,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


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
