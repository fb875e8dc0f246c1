"""The demo main job end to end on a tiny LLaVA (search on a local Ray cluster, uniform, held-out table)."""
import json
import math

import pytest

from efficientllava.actors.demo import DemoJob, cut_short, demo_run_config, run_demo
from efficientllava.prune_engine.config import HeldoutConfig


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
        # in-distribution and shifted columns (rephrased questions, another text domain)
        assert all(0.0 <= rows[name][k] <= 1.0 for k in ("easy_vqa", "fashion_mnist", "easy_vqa_rephrased",
                                                         "fashion_mnist_rephrased"))
        assert math.isfinite(rows[name]["ppl"]) and math.isfinite(rows[name]["ppl_pydoc"])
    saved = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert saved["rows"] == rows
    table = (tmp_path / "demo" / "demo.md").read_text()
    assert "| searched |" in table and "questions alone can move it" in table  # with the VQA noise line under it
    assert (tmp_path / "demo" / "search" / "model" / "config.json").exists()


@pytest.mark.ray
def test_demo_sizes_its_screening_to_its_time_budget_and_says_how(tiny_llava_dir, tmp_path):
    """The default preset under the demo's budget: baseline first, then the search with what is left, its
    children per generation chosen from measured costs (here the preset's cap binds: a tiny model is fast)."""
    import re

    import pyarrow.parquet as pq
    import ray

    run = demo_run_config({"engine.model": str(tiny_llava_dir), "search.population": 4, "search.generations": 2,
                           "search.elites": 2, "search.offspring": 12, "data.nsamples": 4, "data.seqlen": 32,
                           "data.mm_samples": 4, "engine.screen_nsamples": 2, "engine.screen_mm_samples": 2,
                           "engine.screen_precision": "fp32", "ray.actors": 2, "search.projector_lr": 1e-3})
    assert run.search.offspring_budget and run.engine.mode == "database"  # the default preset's
    logs = []
    cfg = DemoJob(out=tmp_path / "demo", run=run, heldout=HeldoutConfig(segments=2, seqlen=32, vqa=6),
                  time_budget_s=600)
    try:
        run_demo(cfg, log=logs.append)
    finally:
        ray.shutdown()
    order = [m[:5] for m in logs if re.match(r"\[\d/3\]", m)]
    assert order == ["[1/3]", "[2/3]", "[3/3]"] and "uniform SparseGPT" in next(m for m in logs if m.startswith("[1/3]"))
    (budget,) = [m for m in logs if m.startswith("search time budget:")]
    (sized,) = [m for m in logs if m.startswith("screening sized:")]
    assert "float32 screening" in sized and "12 children per generation" in sized and "most the preset" in sized
    history = pq.read_table(tmp_path / "demo" / "search" / "history.parquet").to_pylist()
    assert sum(1 for r in history if r["fidelity"] == "screen") == 12
    left = float(re.search(r"search time budget: (\d+) s", budget).group(1))
    assert 0 < left < 600


def test_the_demo_says_when_its_time_budget_cut_the_search():
    note = cut_short("time_budget", 1, 3)
    assert note.startswith("the time budget stopped the search after 1 of 3 generation(s)") and "--time-budget 0" in note
    assert cut_short("generations", 3, 3) is None  # a finished search
    assert cut_short("time_budget", 3, 3) is None  # the budget ran out with the last generation
    assert cut_short(None, None, 3) is None  # no policy record of why it stopped


def test_the_demo_says_which_vqa_differences_the_questions_alone_could_make():
    from efficientllava.actors.demo import vqa_noise

    rows = {"dense": {"ppl": 17.5, "easy_vqa": 0.96},
            "uniform": {"ppl": 38.0, "easy_vqa": 0.9, "fashion_mnist": 0.7, "easy_vqa_rephrased": float("nan")},
            "searched": {"ppl": 37.0, "easy_vqa": 0.84, "fashion_mnist": 0.7, "easy_vqa_rephrased": float("nan")}}
    line = vqa_noise(rows, 150)
    # 1.96 x sqrt((0.9 * 0.1 + 0.84 * 0.16) / 150) = 0.0756: 7.6 points; 1.96 x sqrt(2 * 0.21 / 150) = 10.4 points
    assert "easy-vqa acc -6.0 ± 7.6" in line and "Fashion-MNIST acc +0.0 ± 10.4" in line
    assert "150 questions" in line and "rephrased" not in line and "ppl" not in line  # NaN (text-only) and perplexity left out
    assert "± 5.4" in vqa_noise(rows, 300).split("Fashion")[0]  # more questions, less noise: 7.56 / sqrt(2)
    assert vqa_noise({"uniform": rows["uniform"]}, 150) is None  # no searched row
    assert vqa_noise({k: {"ppl": 1.0} for k in ("uniform", "searched")}, 150) is None  # a text-only model
