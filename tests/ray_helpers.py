"""Helpers for the Ray tests and benchmarks: small run configs, run outcomes and their comparison,
and a probe of what the dashboard / metrics endpoint shows."""
from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path


from efficientllava.actors.config import RunConfig


def tiny_sections(model: str, search: dict | None = None, engine: dict | None = None, data: dict | None = None,
                  ray: dict | None = None) -> dict:
    """A search on a tiny model that takes seconds per generation on two CPU cores."""
    sections = {
        "search": {"population": 6, "elites": 2, "generations": 3, "seed": 3, "eta": 0.5, "projector_lr": 1e-2},
        # cross-entropy fitness: with the KL objective the tiny model's projector loss is ~1e-3 and the guard
        # drops every update, so a run would never show the projector moving (tests/test_candidates.py covers KL)
        "engine": {"model": str(model), "loss": "ce"},
        "data": {"nsamples": 4, "seqlen": 32, "mm_calib": "easy-vqa:train", "mm_samples": 4},
        "ray": {"actors": 2},
    }
    for name, over in (("search", search), ("engine", engine), ("data", data), ("ray", ray)):
        sections[name].update(over or {})
    return sections


def tiny_run(model: str, **sections) -> RunConfig:
    return RunConfig.from_sections(tiny_sections(model, **sections))


def outcome(run_dir: str | Path) -> dict:
    """Everything a finished run decided, minus wall times."""
    import pyarrow.parquet as pq
    from safetensors.torch import load_file

    from efficientllava.prune_engine.tensors import deserialise
    from efficientllava.search.checkpoint import RunStore

    run_dir = Path(run_dir)
    doc = json.loads((run_dir / "policy.json").read_text())
    doc.pop("final_prune_seconds", None)
    history = pq.read_table(run_dir / "history.parquet").drop(["seconds"])
    state, _, projector = RunStore(str(run_dir)).load()
    return {"doc": doc, "history": history, "projector": deserialise(projector) if projector else None,
            "weights": load_file(str(run_dir / "model" / "model.safetensors")), "generation": state["generation"],
            "population": state["population"], "best": state["best"]}


def assert_same_outcome(a: dict, b: dict) -> None:
    """Bit for bit: policy, fitness, history, projector (+ optimizer state) and the saved model."""
    import torch

    assert a["doc"] == b["doc"], (a["doc"], b["doc"])
    assert a["history"].equals(b["history"]), (a["history"].to_pylist()[:3], b["history"].to_pylist()[:3])
    assert a["generation"] == b["generation"] and a["population"] == b["population"] and a["best"] == b["best"]
    if a["projector"] is None or b["projector"] is None:
        assert a["projector"] is b["projector"]
    else:
        for name in a["projector"]["names"]:
            assert torch.equal(a["projector"]["params"][name], b["projector"]["params"][name]), name
        sa, sb = a["projector"]["optimizer"]["state"], b["projector"]["optimizer"]["state"]
        assert sa.keys() == sb.keys()
        for k in sa:
            for field in ("exp_avg", "exp_avg_sq"):
                assert torch.equal(sa[k][field], sb[k][field]), (k, field)
    assert a["weights"].keys() == b["weights"].keys()
    for k in a["weights"]:
        assert torch.equal(a["weights"][k], b["weights"][k]), k


def language_model_sparsity(model) -> float:
    """Zeros over all prunable decoder linears (q, k, v, o, gate, up, down)."""
    from efficientllava.prune_engine.models.adapter import ModelAdapter

    adapter = ModelAdapter(model)
    zeros = total = 0
    for i in range(adapter.num_blocks):
        for m in adapter.linears(i).values():
            zeros += int((m.weight == 0).sum())
            total += m.weight.numel()
    return zeros / total


def scrape_metrics(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()


def probe_dashboard(metrics_port: int, names: list[str], metrics: tuple[str, ...], timeout_s: float = 30.0,
                    ready=None) -> dict:
    """Named live actors (state API) and which custom metrics the node's metrics endpoint exports;
    polls until every metric is there and `ready(found)` holds (metrics are exported periodically)."""
    import ray
    from ray.util.state import list_actors

    address = ray.get_runtime_context().gcs_address  # this cluster, whatever else runs on the machine
    alive = {a.name for a in list_actors(address=address, filters=[("state", "=", "ALIVE")], limit=1000)}
    found: dict[str, list[str]] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = scrape_metrics(metrics_port)
        found = {m: [line for line in text.splitlines() if line.startswith(f"ray_{m}")] for m in metrics}
        if all(found.values()) and (ready is None or ready(found)):
            break
        time.sleep(1.0)
    return {"actors": sorted(n for n in names if n in alive), "metrics": found}


def metric_value(lines: list[str], run_name: str) -> float | None:
    values = [float(line.rsplit(" ", 1)[1]) for line in lines if f'run="{run_name}"' in line]
    return values[-1] if values else None


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def zeros_match_policy(model, ratios: list[float]) -> bool:
    from efficientllava.prune_engine.models.adapter import ModelAdapter

    adapter = ModelAdapter(model)
    for i, r in enumerate(ratios):
        for m in adapter.linears(i).values():
            if int((m.weight == 0).sum()) != round(r * m.weight.numel()):
                return False
    return True


__all__ = ["assert_same_outcome", "free_port", "language_model_sparsity", "metric_value", "outcome",
           "probe_dashboard", "scrape_metrics", "tiny_run", "tiny_sections", "zeros_match_policy"]
