"""The model database mode scores, saved as it is (benchmarks/variants.py stitch_from_database): every block pruned
from the dense model's inputs and stitched, against the sequential prune of the same policy."""
import json

import numpy as np
import pytest
import torch

from benchmarks.variants import stitch_from_database
from tiny_models import projector_experiment, saved_llava_parts


def _split(model_dir) -> tuple[dict, dict]:
    """(projector tensors, language-model linear weights by block and name: "0.self_attn.q_proj.weight")."""
    projector, lm = saved_llava_parts(model_dir)
    return projector, {k.split(".layers.", 1)[1]: v for k, v in lm.items()}


@pytest.fixture(scope="module")
def stitched(tiny_llava_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("database-export")
    engine, data, dense, evolved = projector_experiment(tiny_llava_dir)
    uniform_ratios, uniform_report = stitch_from_database(engine, data, 0.5, None, None, out / "uniform")
    policy = np.array([0.4, 0.6, 0.5])
    _, dense_report = stitch_from_database(engine, data, 0.5, policy, None, out / "policy-dense")
    _, evolved_report = stitch_from_database(engine, data, 0.5, policy, evolved, out / "policy-evolved")
    # the independent reference: the prune command (layer-sequential), uniform 0.5 on the same data
    from efficientllava.prune_engine.prune import PruneJob, run_prune

    run_prune(PruneJob(model=str(tiny_llava_dir), out=out / "sequential", sparsity=0.5, data=data, progress=False),
              log=lambda m: None)
    models = {name: _split(out / name)
              for name in ("uniform", "policy-dense", "policy-evolved", "sequential")}
    return {"out": out, "dense": dense, "evolved": evolved, "models": models, "uniform_ratios": uniform_ratios,
            "reports": {"uniform": uniform_report, "policy-dense": dense_report, "policy-evolved": evolved_report}}


def test_uniform_is_every_block_at_the_target(stitched):
    assert stitched["uniform_ratios"] == [0.5, 0.5, 0.5]
    _, lm = stitched["models"]["uniform"]
    _, seq = stitched["models"]["sequential"]
    assert set(lm) == set(seq) and len(lm) == 3 * 7
    for name, w in lm.items():  # the same zeros per matrix as the sequential prune at the same ratio
        assert int((w == 0).sum()) == int((seq[name] == 0).sum()), name
    report = stitched["reports"]["uniform"]
    assert report.mean_sparsity == pytest.approx(0.5, abs=0.01)
    policy = json.loads((stitched["out"] / "uniform" / "policy.json").read_text())
    assert policy["export"] == "database (stitched)" and policy["projector"] == "dense"


def test_only_the_first_stage_sees_the_same_inputs_as_the_sequential_prune(stitched):
    """Block 0's q/k/v read the dense embeddings in both (nearly the same masks: the Hessians differ only in
    summation order); every later stage reads dense activations here and pruned ones in the sequential prune."""
    _, lm = stitched["models"]["uniform"]
    _, seq = stitched["models"]["sequential"]
    for name in ("0.self_attn.q_proj.weight", "0.self_attn.k_proj.weight", "0.self_attn.v_proj.weight"):
        assert (lm[name] == 0).eq(seq[name] == 0).float().mean() > 0.99, name
    later = [n for n in lm if not n.startswith("0.self_attn.")]
    assert any((lm[n] == 0).ne(seq[n] == 0).any() for n in later)


def test_the_language_model_is_the_database_whatever_the_projector(stitched):
    """The database is built with the dense projector (as a search builds it): the stitched language model is the
    same with the evolved projector, which only the saved model answers through and the report measures with."""
    d_proj, d_lm = stitched["models"]["policy-dense"]
    e_proj, e_lm = stitched["models"]["policy-evolved"]
    for name, w in d_lm.items():
        assert torch.equal(w, e_lm[name]), name
    for name, w in stitched["dense"].items():
        assert torch.equal(d_proj[name], w)
        assert torch.equal(e_proj[name], stitched["evolved"][name].to(w.dtype))
    reports = stitched["reports"]
    assert reports["policy-dense"].loss_text == reports["policy-evolved"].loss_text  # text never sees the projector
    assert reports["policy-dense"].loss_mm != reports["policy-evolved"].loss_mm
    for b, r in enumerate([0.4, 0.6, 0.5]):  # each block at its policy's ratio
        assert all(s == pytest.approx(r, abs=0.02) for s in reports["policy-dense"].sparsity[b].values())


def test_the_ablation_pairs_a_database_export_with_its_sequential_prune(monkeypatch, tmp_path):
    import benchmarks.ablation as ablation

    calls, written = [], {}

    def fake_run(variant, target, settings, work, log=print, cached_only=False):
        calls.append(variant)
        ppl = {"uniform": 400.0, "uniform_database": 500.0, "full": 250.0, "full_database": 240.0}.get(variant, 20.0)
        return {"variant": variant, "target": target, "seed": settings.seed, "sparsity": target or 0.0,
                "ppl": ppl, "easy_vqa": 0.5, "fashion_mnist": 0.4}

    monkeypatch.setattr(ablation, "run_variant", fake_run)
    monkeypatch.setattr(ablation, "write_results", lambda name, title, table, data, notes: written.update(
        table=table, data=data))
    assert ablation.main(["--targets", "0.7", "--variants", "uniform_database,full_database", "--seeds", "0",
                          "--cached-only", "--work", str(tmp_path)]) == 0
    assert {"uniform", "full", "uniform_database", "full_database"} <= set(calls)
    assert calls.index("full") < calls.index("full_database")  # Full's run first: the export reuses it
    vs = written["data"]["vs_sequential"]
    assert vs["uniform_database"]["0.7"]["ppl"]["per_seed"] == pytest.approx([-20.0])  # sequential 20% lower
    assert vs["full_database"]["0.7"]["ppl"]["per_seed"] == pytest.approx([250 / 240 * 100 - 100])
    assert "Uniform SparseGPT − Uniform, stitched from the level database" in written["table"]
