"""The demo main job end to end on a tiny LLaVA (search on a local Ray cluster, uniform, held-out table)."""
import json
import math

import pytest

from actors.demo import DemoJob, demo_run_config, run_demo
from prune_engine.config import HeldoutConfig


@pytest.mark.ray
def test_demo_job_on_tiny_llava(tiny_llava_dir, tmp_path):
    import ray

    run = demo_run_config({"engine.model": str(tiny_llava_dir), "search.population": 4, "search.generations": 2,
                           "search.elites": 2, "data.nsamples": 4, "data.seqlen": 32, "data.mm_samples": 4,
                           "engine.mode": "sequential", "ray.actors": 2, "search.projector_lr": 1e-3})
    cfg = DemoJob(out=tmp_path / "demo", run=run, heldout=HeldoutConfig(segments=2, seqlen=32, vqa=6))
    try:
        result = run_demo(cfg, log=lambda m: None)
    finally:
        ray.shutdown()
    rows = result["rows"]
    assert set(rows) == {"dense", "uniform", "searched"}
    assert rows["dense"]["sparsity"] < 0.01
    for name in ("uniform", "searched"):
        assert rows[name]["sparsity"] == pytest.approx(0.5, abs=0.011)  # LM linears only
        assert all(0.0 <= rows[name][k] <= 1.0 for k in ("easy_vqa", "fashion_mnist"))
        assert math.isfinite(rows[name]["ppl"])
    saved = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert saved["rows"] == rows
    assert "| searched |" in (tmp_path / "demo" / "demo.md").read_text()
    assert (tmp_path / "demo" / "search" / "model" / "config.json").exists()
