"""The Evo ablation's parts (benchmarks/variants.py): Full's policy re-pruned from the dense model with the
evolved projector choosing the masks only, giving the answers only, both (the base they are compared with) or neither."""
import json

import numpy as np
import pytest
import torch

from benchmarks.variants import EVO_PARTS, full_outcome, prune_with_projectors
from tiny_models import projector_experiment, saved_llava_parts


def _split(model_dir) -> tuple[dict, dict]:
    """(projector tensors by the projector's own names, language-model linear weights) of a saved LLaVA."""
    projector, lm = saved_llava_parts(model_dir)
    assert projector and len(lm) == 3 * 7
    return projector, lm


@pytest.fixture(scope="module")
def parts(tiny_llava_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("evo-parts")
    engine, data, dense, evolved = projector_experiment(tiny_llava_dir)
    ratios = np.array([0.4, 0.6, 0.5])
    models = {}
    for variant, (masks, answers) in EVO_PARTS.items():
        prune_with_projectors(engine, data, ratios, evolved, masks, answers, out / variant)
        models[variant] = _split(out / variant)
    # the independent reference for masks chosen under the dense projector: the prune command, same policy and data
    from efficientllava.prune_engine.prune import PruneJob, run_prune

    (out / "policy.json").write_text(json.dumps({"ratios": ratios.tolist()}))
    run_prune(PruneJob(model=str(tiny_llava_dir), out=out / "reference", policy=out / "policy.json", data=data,
                       progress=False), log=lambda m: None)
    reference = _split(out / "reference")
    return {"dense": dense, "evolved": evolved, "models": models, "reference": reference}


def test_each_part_answers_through_the_projector_it_names(parts):
    models = parts["models"]
    for name, w in parts["dense"].items():
        evolved = parts["evolved"][name].to(w.dtype)
        assert torch.equal(models["evo_masks_only"][0][name], w)
        assert torch.equal(models["evo_neither"][0][name], w)
        assert torch.equal(models["evo_answers_only"][0][name], evolved)
        assert torch.equal(models["evo_both"][0][name], evolved)
        assert not torch.equal(evolved, w)


def test_the_masks_depend_on_the_masks_projector_only(parts):
    """The 2 x 2 design: two parts that compute their masks under the same projector have the same pruned language
    model, whichever projector they answer with (evo_both = evo_masks_only, evo_neither = evo_answers_only)."""
    models = parts["models"]
    for a, b in (("evo_both", "evo_masks_only"), ("evo_neither", "evo_answers_only")):
        for name, w in models[a][1].items():
            assert torch.equal(w == 0, models[b][1][name] == 0), (a, b, name)
            torch.testing.assert_close(w, models[b][1][name])


def test_each_part_takes_its_masks_from_the_projector_it_names(parts):
    """Masks under the dense projector are the prune command's (same policy, same data); under the evolved
    projector the image-text activations, hence the Hessians and the masks, change."""
    masks_only, answers_only = parts["models"]["evo_masks_only"][1], parts["models"]["evo_answers_only"][1]
    reference = parts["reference"][1]
    for name, w in reference.items():
        assert torch.equal(answers_only[name] == 0, w == 0), name
        torch.testing.assert_close(answers_only[name], w)
    assert any(not torch.equal(masks_only[n] == 0, reference[n] == 0) for n in reference)
    # and the policy holds in both: the same zeros per matrix
    for name, w in reference.items():
        assert int((masks_only[name] == 0).sum()) == int((w == 0).sum()), name


def test_full_outcome_reads_the_policy_and_the_final_projector(tmp_path):
    import pyarrow as pa

    from efficientllava.prune_engine.tensors import serialise
    from efficientllava.search.checkpoint import HISTORY_SCHEMA, RunStore

    with pytest.raises(FileNotFoundError, match="run the 'full' variant"):
        full_outcome(tmp_path)
    params = {"linear_1.weight": torch.arange(6.0).reshape(2, 3)}
    RunStore(str(tmp_path)).save({"generation": 3, "projector_version": 2}, HISTORY_SCHEMA.empty_table(),
                                 serialise({"names": list(params), "params": params, "version": 2}))
    doc = {"levels": [0, 2, 1], "level_values": [0.6, 0.7, 0.8], "projector_version": 2}
    (tmp_path / "policy.json").write_text(json.dumps(doc))
    ratios, projector = full_outcome(tmp_path)
    np.testing.assert_array_equal(ratios, [0.6, 0.8, 0.7])
    assert torch.equal(projector["linear_1.weight"], params["linear_1.weight"])
    (tmp_path / "policy.json").write_text(json.dumps({**doc, "projector_version": 1}))
    with pytest.raises(ValueError, match="does not hold the projector of the final model"):
        full_outcome(tmp_path)


def test_prune_for_export_uses_every_cpu_or_the_given_count_and_restores_the_thread_count():
    """The final prune of a search (and of a re-prune meant to give its model) runs with every CPU of the process,
    or with `threads`; the torch thread count is what it was afterwards, also when the prune fails."""
    import os

    from efficientllava.prune_engine.scoring import CandidateScorer

    class Scorer:
        def prune_from_dense(self, ratios):
            seen.append(torch.get_num_threads())
            if fail:
                raise RuntimeError("boom")
            return "report"

    before, seen, fail = torch.get_num_threads(), [], False
    torch.set_num_threads(1)
    try:
        assert CandidateScorer.prune_for_export(Scorer(), np.array([0.5])) == "report"
        assert CandidateScorer.prune_for_export(Scorer(), np.array([0.5]), threads=1) == "report"
        assert seen == [len(os.sched_getaffinity(0)), 1] and torch.get_num_threads() == 1
        fail = True
        with pytest.raises(RuntimeError):
            CandidateScorer.prune_for_export(Scorer(), np.array([0.5]))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
