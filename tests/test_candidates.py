"""Candidate evaluation (L_proxy, G, projector gradient) and the projector learner on a tiny LLaVA."""
import numpy as np
import pytest
import torch

from prune_engine.candidates import CandidateEvaluator, EngineSpec
from prune_engine.projector import ProjectorLearner


@pytest.fixture(scope="module")
def evaluator(tiny_llava_dir):
    spec = EngineSpec(model=str(tiny_llava_dir), nsamples=4, seqlen=32, mm_calib="easy-vqa:train", mm_samples=6)
    return CandidateEvaluator(spec, levels=[0.4, 0.5, 0.6])


def test_evaluate_reports_loss_norms_and_sparsity(evaluator):
    assert evaluator.has_projector and len(evaluator.param_counts()) == 3
    r = evaluator.evaluate(np.array([0.4, 0.5, 0.6]))
    assert r.mean_sparsity == pytest.approx(0.5, abs=0.01)
    assert r.log_norm_ratio.shape == (3,) and np.all(r.log_norm_ratio < 0)
    more = evaluator.evaluate(np.array([0.6, 0.6, 0.6]))
    assert np.all(more.log_norm_ratio[1:] < r.log_norm_ratio[1:])  # more pruning, smaller norms
    again = evaluator.evaluate(np.array([0.4, 0.5, 0.6]))
    assert again.l_proxy == r.l_proxy and again.blocks_run == 3


def test_projector_gradient_matches_finite_differences(evaluator):
    evaluator.evaluate(np.array([0.5, 0.5, 0.5]))
    loss, grads = evaluator.projector_gradient()
    proj = evaluator.adapter.projector
    params = list(proj.parameters())
    g = torch.as_tensor(grads[-1])  # last layer bias: cheap to probe
    rng = np.random.default_rng(0)
    for idx in rng.choice(g.numel(), 3, replace=False):
        eps = 1e-2
        with torch.no_grad():
            params[-1].view(-1)[idx] += eps
            up, _ = evaluator.projector_gradient()
            params[-1].view(-1)[idx] -= 2 * eps
            down, _ = evaluator.projector_gradient()
            params[-1].view(-1)[idx] += eps
        assert (up - down) / (2 * eps) == pytest.approx(float(g.view(-1)[idx]), rel=0.05, abs=1e-4)
    assert loss > 0
    # the loss is the model's own next-token loss over the answer tokens (full logits, no shortcuts)
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in evaluator.mm:
            batch = dict(batch)
            labels = batch.pop("labels")
            logits = evaluator.adapter.model(**batch).logits[:, :-1]
            total += torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels[:, 1:], ignore_index=-100,
                                                       reduction="sum").item()
            count += int((labels[:, 1:] != -100).sum())
    assert loss == pytest.approx(total / count, rel=1e-5)


def test_learner_step_lowers_the_weighted_loss(evaluator):
    policies = [np.array([0.4, 0.5, 0.6]), np.array([0.6, 0.5, 0.4])]
    losses, grads = [], []
    for p in policies:
        evaluator.evaluate(p)
        loss, g = evaluator.projector_gradient()
        losses.append(loss)
        grads.append(g)
    learner = ProjectorLearner(evaluator.projector_state_dict(), lr=1e-2)
    c = np.array([0.7, 0.3])
    version = learner.step(grads, c)
    assert version == 1
    evaluator.set_projector(learner.state_dict(), version)
    after = []
    for p in policies:
        evaluator.evaluate(p)
        after.append(evaluator.projector_gradient()[0])
    assert np.dot(c, after) < np.dot(c, losses)
    # checkpoint round trip keeps parameters and optimizer state
    clone = ProjectorLearner(evaluator.projector_state_dict())
    clone.load_bytes(learner.to_bytes())
    assert clone.version == 1
    for a, b in zip(clone.params, learner.params):
        assert torch.equal(a, b)
    assert clone.optimizer.state_dict()["state"].keys() == learner.optimizer.state_dict()["state"].keys()


def test_database_mode_matches_database_weights(tiny_llava_dir):
    spec = EngineSpec(model=str(tiny_llava_dir), nsamples=4, seqlen=32, mode="database")
    ev = CandidateEvaluator(spec, levels=[0.4, 0.5, 0.6])
    assert not ev.has_projector
    r = ev.evaluate(np.array([0.4, 0.6, 0.5]))
    assert r.mean_sparsity == pytest.approx(0.5, abs=0.01)
    w = ev.adapter.linears(1)["mlp.down_proj"].weight
    assert int((w == 0).sum()) == round(0.6 * w.numel())
