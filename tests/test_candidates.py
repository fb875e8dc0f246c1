"""Candidate evaluation (L_text / L_mm, G, screening, projector gradients) and the projector learner on a tiny LLaVA."""
import math

import numpy as np
import pytest
import torch

from efficientllava.prune_engine.config import DataConfig, EngineConfig
from efficientllava.prune_engine.scoring import CandidateScorer


def _configs(**settings) -> tuple[EngineConfig, DataConfig]:
    """The engine and data sections of a scorer from one flat set of settings."""
    data = {k: settings.pop(k) for k in list(settings) if k in DataConfig.model_fields}
    return EngineConfig(**settings), DataConfig(**data)
from efficientllava.prune_engine.projector import ProjectorError
from efficientllava.prune_engine.projector import ProjectorLearner


@pytest.fixture(scope="module")
def evaluator(tiny_llava_dir):
    spec = _configs(model=str(tiny_llava_dir), nsamples=4, seqlen=32, mm_calib="easy-vqa:train", mm_samples=8,
                      loss="ce", projector_batch=4, monitor_samples=2)
    return CandidateScorer(*spec, levels=[0.4, 0.5, 0.6])


def _model_answer_loss(evaluator, batches) -> float:
    """The model's own next-token loss over the answer tokens (full logits, no shortcuts)."""
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            batch = dict(batch)
            labels = batch.pop("labels")
            logits = evaluator.adapter.model(**batch).logits[:, :-1]
            total += torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels[:, 1:], ignore_index=-100,
                                                       reduction="sum").item()
            count += int((labels[:, 1:] != -100).sum())
    return total / count


def test_evaluate_reports_losses_per_modality_norms_and_sparsity(evaluator):
    assert evaluator.has_projector and len(evaluator.param_counts()) == 3
    r = evaluator.evaluate(np.array([0.4, 0.5, 0.6]))
    assert r.mean_sparsity == pytest.approx(0.5, abs=0.01)
    assert r.log_norm_ratio.shape == (3,) and np.all(r.log_norm_ratio < 0)
    assert math.isfinite(r.l_text) and r.l_mm is not None and r.l_mm > 0 and r.l_mm != r.l_text
    more = evaluator.evaluate(np.array([0.6, 0.6, 0.6]))
    assert np.all(more.log_norm_ratio[:2] < r.log_norm_ratio[:2])  # more pruning (blocks 0, 1), smaller norms
    again = evaluator.evaluate(np.array([0.4, 0.5, 0.6]))
    assert (again.l_text, again.l_mm) == (r.l_text, r.l_mm) and again.blocks_run == 3
    # L_mm is the model's own answer-token cross-entropy over all image-text samples (the pruned weights are in
    # the model): the held-aside ones and the ones the projector trains on
    every = evaluator.answer_loss(np.array([0.4, 0.5, 0.6]), evaluator.monitor_batches + evaluator.projector_batches)
    assert r.l_mm == pytest.approx(every, rel=1e-4)
    assert every == pytest.approx(
        _model_answer_loss(evaluator, evaluator.monitor_batches + evaluator.projector_batches), rel=1e-5)
    assert evaluator.answer_loss(np.array([0.4, 0.5, 0.6])) == pytest.approx(
        _model_answer_loss(evaluator, evaluator.monitor_batches), rel=1e-5)


def test_projector_steps_never_train_on_the_held_aside_samples(evaluator, tiny_llava_dir):
    from efficientllava.prune_engine.data.calibration import vqa_batches

    held = vqa_batches(evaluator.processor, evaluator.samples[:2])[0]
    assert torch.equal(evaluator.monitor_batches[0]["input_ids"], held["input_ids"])
    assert [len(b["input_ids"]) for b in evaluator.projector_batches] == [4, 2]  # the other 6 samples
    trained = [evaluator.processor.decode(row) for b in evaluator.projector_batches for row in b["input_ids"]]
    assert not set(trained) & {evaluator.processor.decode(row) for row in held["input_ids"]}
    # nothing to hold aside (one sample): the held-aside loss is NaN, so the guard keeps every update
    one = CandidateScorer(*_configs(model=str(tiny_llava_dir), nsamples=2, seqlen=32, mm_calib="easy-vqa:train",
                                    mm_samples=1), levels=[0.5])
    assert one.monitor_batches == [] and math.isnan(one.answer_loss(np.array([0.5, 0.5, 0.5])))
    assert one.held_aside == 0 and evaluator.held_aside == 2  # what the pool reports with each projector update



def test_projector_gradient_matches_finite_differences(evaluator):
    ratios = np.array([0.5, 0.5, 0.5])
    loss, grads = evaluator.projector_gradient(ratios, 0)
    params = list(evaluator.adapter.projector.parameters())
    g = torch.as_tensor(grads[-1])  # last layer bias: cheap to probe
    rng = np.random.default_rng(0)
    for idx in rng.choice(g.numel(), 3, replace=False):
        eps = 1e-2
        with torch.no_grad():
            params[-1].view(-1)[idx] += eps
            up, _ = evaluator.projector_gradient(ratios, 0)
            params[-1].view(-1)[idx] -= 2 * eps
            down, _ = evaluator.projector_gradient(ratios, 0)
            params[-1].view(-1)[idx] += eps
        assert (up - down) / (2 * eps) == pytest.approx(float(g.view(-1)[idx]), rel=0.05, abs=1e-4)
    assert loss == pytest.approx(_model_answer_loss(evaluator, evaluator.projector_batches[:1]), rel=1e-5)
    other, _ = evaluator.projector_gradient(ratios, 1)  # the next mini-batch
    assert other != loss and evaluator.projector_gradient(ratios, 2)[0] == loss  # 6 trained samples / 4: two, cycled


def test_a_non_finite_projector_is_an_error(evaluator):
    saved = evaluator.projector_state_dict()
    poisoned = {k: torch.full_like(v, float("nan")) for k, v in saved.items()}
    evaluator.adapter.projector.load_state_dict(poisoned)
    try:
        with pytest.raises(ProjectorError, match="non-finite projector loss"):
            evaluator.projector_gradient(np.array([0.5, 0.5, 0.5]), 0)
    finally:
        evaluator.adapter.projector.load_state_dict(saved)
    learner = ProjectorLearner(saved, lr=1e-2)
    bad = [[np.full(p.shape, np.inf, dtype=np.float32) for p in learner.params]]
    with pytest.raises(ProjectorError, match="non-finite combined projector gradient"):
        learner.step(bad, np.array([1.0]))


def test_learner_steps_lower_the_weighted_loss_and_record_the_change(evaluator):
    policies = [np.array([0.4, 0.5, 0.6]), np.array([0.6, 0.5, 0.4])]
    c = np.array([0.7, 0.3])
    before = [evaluator.answer_loss(p) for p in policies]
    learner = ProjectorLearner(evaluator.projector_state_dict(), lr=1e-2)
    learner.mark()
    version = 0
    for step in range(4):  # mini-batch steps, each on both candidates
        grads = [evaluator.projector_gradient(p, step)[1] for p in policies]
        version = learner.step(grads, c)
        evaluator.set_projector(learner.state_dict(), version)
    assert version == 4 and learner.change_since_mark() > 1e-4
    after = [evaluator.answer_loss(p) for p in policies]
    assert np.dot(c, after) < np.dot(c, before)
    # checkpoint round trip keeps parameters and optimizer state
    clone = ProjectorLearner(evaluator.projector_state_dict())
    clone.load_bytes(learner.to_bytes())
    assert clone.version == 4
    for a, b in zip(clone.params, learner.params):
        assert torch.equal(a, b)
    assert clone.optimizer.state_dict()["state"].keys() == learner.optimizer.state_dict()["state"].keys()


def test_rescale_keeps_a_fraction_of_the_update_since_the_mark(evaluator):
    start = evaluator.projector_state_dict()
    learner = ProjectorLearner(start, lr=1e-2)
    grads = [[np.random.default_rng(j).normal(size=p.shape).astype(np.float32) for j, p in enumerate(learner.params)]]
    learner.mark()
    for _ in range(3):
        learner.step(grads, np.array([1.0]))
    end = learner.state_dict()
    assert learner.rescale(0.25) == 4
    for n in learner.names:  # W = W_mark + s (W_end - W_mark), against a plain reference
        assert torch.allclose(learner.state_dict()[n], start[n].float() + 0.25 * (end[n] - start[n].float()), atol=1e-6)
    assert learner.rescale(0.0) == 5 and learner.change_since_mark() == 0.0  # dropped: the marked weights exactly
    assert learner.rescale(1.0) == 6 and all(torch.equal(learner.state_dict()[n], end[n]) for n in learner.names)
    # the trust region's premise: the relative change is linear in s, so s = tau / change lands on tau
    full_change = learner.change_since_mark()
    learner.rescale(0.03 / full_change)
    assert learner.change_since_mark() == pytest.approx(0.03, rel=1e-4)
    learner.rescale(1.0)
    learner.step(grads, np.array([1.0]))  # a new step ends the update somewhere else
    moved = learner.state_dict()
    learner.rescale(1.0)
    assert all(torch.equal(learner.state_dict()[n], moved[n]) for n in learner.names)


@pytest.fixture(scope="module")
def database_evaluator(tiny_llava_dir):
    spec = _configs(model=str(tiny_llava_dir), nsamples=6, seqlen=32, mm_calib="easy-vqa:train", mm_samples=6,
                      mode="database", screen_nsamples=2, screen_mm_samples=2, loss="kl")
    return CandidateScorer(*spec, levels=[0.4, 0.5, 0.6])


def test_database_is_built_once_and_kept_across_projector_versions(database_evaluator):
    ev = database_evaluator
    assert ev.pruner.database and all(w.weight.device.type == "cpu" for w in ev.pruner.database.values())
    r = ev.evaluate(np.array([0.4, 0.6, 0.5]))
    w = ev.adapter.linears(1)["mlp.down_proj"].weight
    assert int((w == 0).sum()) == round(0.6 * w.numel())
    entries = dict(ev.pruner.database._entries)
    state = {k: v * 1.5 for k, v in ev.projector_state_dict().items()}
    ev.set_projector(state, 7)
    again = ev.evaluate(np.array([0.4, 0.6, 0.5]))
    # not rebuilt: the very same entry objects (a rebuild makes new ones)
    assert ev.pruner.database._entries.keys() == entries.keys()
    assert all(ev.pruner.database._entries[k] is e for k, e in entries.items())
    assert again.l_text == r.l_text and again.l_mm != r.l_mm  # text never sees the projector
    # image-text only (after a projector step the driver knows the rest): the same L_mm, no text loss
    mm_only = ev.evaluate(np.array([0.4, 0.6, 0.5]), modalities=("mm",))
    assert mm_only.l_mm == again.l_mm and math.isnan(mm_only.l_text)
    assert np.array_equal(mm_only.log_norm_ratio, again.log_norm_ratio)


def test_screening_scores_a_slice_and_shares_work_with_full(database_evaluator, tiny_llava_dir):
    ev = database_evaluator
    assert ev.screen is not None and 0 < len(ev.screen) < len(ev.batches)
    policy = np.array([0.5, 0.4, 0.6])
    screen = ev.evaluate(policy, "screen")
    full = ev.evaluate(policy, "full")
    assert screen.l_text != full.l_text and screen.l_mm is not None
    other = CandidateScorer(ev.engine, ev.data, levels=[0.4, 0.5, 0.6])
    other.set_projector(ev.projector_state_dict(), ev.projector_version)  # as ev holds it now
    fresh = other.evaluate(policy, "full")
    assert (fresh.l_text, fresh.l_mm) == pytest.approx((full.l_text, full.l_mm), rel=1e-6)


def test_export_fidelity_scores_the_sequential_prune_and_leaves_the_database_usable(database_evaluator):
    """The re-rank's "export" fidelity: the candidate pruned as the final model is (sequentially from the dense
    model), scored like a sequential-mode scorer scores it; stitched scores before and after are the same."""
    ev = database_evaluator
    policy = np.array([0.6, 0.4, 0.5])
    stitched = ev.evaluate(policy, "full")
    export = ev.evaluate(policy, "export")
    assert export.fidelity == "export" and export.mean_sparsity == pytest.approx(stitched.mean_sparsity, abs=1e-6)
    assert (export.l_text, export.l_mm) != (stitched.l_text, stitched.l_mm)  # not the stitched model
    sequential = CandidateScorer(ev.engine.model_copy(update={"mode": "sequential"}), ev.data)
    sequential.set_projector(ev.projector_state_dict(), ev.projector_version)
    ref = sequential.evaluate(policy, "full")
    assert (export.l_text, export.l_mm) == pytest.approx((ref.l_text, ref.l_mm), rel=1e-5)
    assert np.allclose(export.log_norm_ratio, ref.log_norm_ratio, rtol=0, atol=1e-6)
    again = ev.evaluate(policy, "full")  # the dense weights are back: stitching gives what it gave
    assert (again.l_text, again.l_mm) == (stitched.l_text, stitched.l_mm)


def test_kl_to_dense_is_zero_for_the_dense_model(tiny_llava_dir):
    spec = _configs(model=str(tiny_llava_dir), nsamples=4, seqlen=32, mm_calib="easy-vqa:train", mm_samples=4,
                      loss="kl")
    ev = CandidateScorer(*spec, levels=[0.0, 0.5])
    dense = ev.evaluate(np.zeros(3))
    assert abs(dense.l_text) < 1e-2 and abs(dense.l_mm) < 1e-2  # fp16-stored teacher: tiny, not exactly 0
    pruned = ev.evaluate(np.full(3, 0.5))
    assert pruned.l_text > 10 * abs(dense.l_text) and pruned.l_mm > 0


def test_text_only_database_mode(tiny_llava_dir):
    spec = _configs(model=str(tiny_llava_dir), nsamples=4, seqlen=32, mode="database")
    ev = CandidateScorer(*spec, levels=[0.4, 0.5, 0.6])
    assert not ev.has_projector
    r = ev.evaluate(np.array([0.4, 0.6, 0.5]))
    assert r.mean_sparsity == pytest.approx(0.5, abs=0.01) and r.l_mm is None


def test_fitness_is_measured_on_its_slice_and_the_rest_only_calibrates(tiny_llava_dir):
    spec = _configs(model=str(tiny_llava_dir), nsamples=6, seqlen=32, fitness_nsamples=2, screen_nsamples=1,
                      mm_calib="easy-vqa:train", mm_samples=4, mode="database", loss="kl")
    ev = CandidateScorer(*spec, levels=[0.4, 0.5, 0.6])
    seqs = [len(ev.batches[i]["input_ids"]) for i in range(len(ev.batches)) if ev.kinds[i] == "text"]
    calib_only = [i for i in range(len(ev.batches)) if i not in ev.scored]
    assert seqs == [1, 1, 4] and len(calib_only) == 1 and ev.kinds[calib_only[0]] == "text"
    assert ev.pruner.teacher[calib_only[0]] is None  # no dense distribution kept for it
    policy = np.array([0.4, 0.6, 0.5])
    full = ev.pruner.stitch(ev.policy(policy), ev.scored)
    assert full.tokens == sum(int((ev.batches[i]["labels"][:, 1:] != -100).sum()) for i in ev.scored)
    r = ev.evaluate(policy)
    assert r.l_text == pytest.approx(full.loss_text) and r.l_mm == pytest.approx(full.loss_mm)


def test_screening_in_bfloat16_is_close_to_fp32_and_full_scores_stay_exact(tiny_llava_dir):
    spec = dict(model=str(tiny_llava_dir), nsamples=6, seqlen=32, mm_calib="easy-vqa:train", mm_samples=6,
                mode="database", screen_nsamples=2, screen_mm_samples=2, loss="kl")
    low = CandidateScorer(*_configs(**spec, screen_precision="bf16"), levels=[0.4, 0.5, 0.6])
    exact = CandidateScorer(*_configs(**spec, screen_precision="fp32"), levels=[0.4, 0.5, 0.6])
    assert low.identity()["screen_dtype"] == "bfloat16" and exact.identity()["screen_dtype"] == "float32"
    for policy in (np.array([0.5, 0.4, 0.6]), np.array([0.6, 0.6, 0.4])):
        s_low, s_exact = low.evaluate(policy, "screen"), exact.evaluate(policy, "screen")
        assert s_low.l_text != s_exact.l_text
        assert (s_low.l_text, s_low.l_mm) == pytest.approx((s_exact.l_text, s_exact.l_mm), rel=5e-2)
        assert np.array_equal(s_low.log_norm_ratio, s_exact.log_norm_ratio)
        f_low, f_exact = low.evaluate(policy, "full"), exact.evaluate(policy, "full")
        assert (f_low.l_text, f_low.l_mm) == (f_exact.l_text, f_exact.l_mm)  # full fidelity: the model's dtype


def test_a_half_precision_model_screens_in_its_own_dtype(tiny_llava_dir):
    spec = _configs(model=str(tiny_llava_dir), nsamples=2, seqlen=32, mode="database", screen_nsamples=1,
                    screen_precision="bf16", dtype="bfloat16")
    ev = CandidateScorer(*spec, levels=[0.4, 0.5])
    assert ev.pruner.dtype == torch.bfloat16 and ev.screen_dtype is None
    assert ev.identity()["screen_dtype"] == "bfloat16"  # the model's own
    assert math.isfinite(ev.evaluate(np.array([0.4, 0.5, 0.4]), "screen").l_text)


class _LocalScorer:
    """The search's evaluation protocol on one in-process CandidateScorer (no Ray); a projector "step"
    scales the projector by 1.5 (a change the text scores of sequential pruning must follow)."""

    def __init__(self, scorer):
        from efficientllava.search import Evaluation, ProjectorUpdate

        self.Evaluation, self.ProjectorUpdate = Evaluation, ProjectorUpdate
        self.s = scorer
        self.param_counts, self.identity = scorer.param_counts(), scorer.identity()
        self.text_independent_of_projector = scorer.text_independent_of_projector
        self.projector_version = scorer.projector_version
        self.states = {self.projector_version: scorer.projector_state_dict()}
        self.modalities = []

    def evaluate(self, ratios, projector_version, fidelity="full", modalities=("text", "mm")):
        assert projector_version == self.s.projector_version
        self.modalities += [tuple(modalities)] * len(ratios)
        out = [self.s.evaluate(np.asarray(r), fidelity, tuple(modalities)) for r in ratios]
        return [self.Evaluation(c.l_text, c.log_norm_ratio, c.seconds, c.l_mm) for c in out]

    def projector_step(self, ratios, draws, lr):
        self.projector_version += 1
        self.states[self.projector_version] = {k: v * 1.5 for k, v in self.s.projector_state_dict().items()}
        self.s.set_projector(self.states[self.projector_version], self.projector_version)
        return self.ProjectorUpdate(self.projector_version)

    def projector_state(self):
        return b""

    def fresh(self, ratios, version):
        """A policy scored on all modalities under projector `version` (the scorer's own restored after)."""
        now = self.s.projector_version
        self.s.set_projector(self.states[version], version)
        try:
            return self.s.evaluate(np.asarray(ratios))
        finally:
            self.s.set_projector(self.states[now], now)


def test_sequential_mode_rescores_text_after_a_projector_step_exactly(tiny_llava_dir, tmp_path):
    """Sequential pruning's Hessians see the projector's image-text activations: L_text and G change with
    the projector, so the driver re-scores every modality after a step (database mode says otherwise) and
    each recorded score is the one a fresh evaluation under that projector gives."""
    from efficientllava.search import SearchConfig, SearchDriver, feasible_space

    spec = dict(model=str(tiny_llava_dir), nsamples=2, seqlen=32, mm_calib="easy-vqa:train", mm_samples=2)
    ev = _LocalScorer(CandidateScorer(*_configs(**spec), levels=[0.4, 0.5, 0.6]))
    assert not ev.text_independent_of_projector
    assert CandidateScorer(*_configs(**spec, mode="database"), levels=[0.4, 0.5, 0.6]).text_independent_of_projector
    cfg = SearchConfig(population=4, elites=2, generations=2, projector_guard=False, projector_steps=1, seed=0)
    h = SearchDriver(cfg, ev, str(tmp_path / "run")).run().history.to_pydict()
    assert h["projector_version"] == [0] * 4 + [1] * 4 and set(ev.modalities) == {("text", "mm")}
    space = feasible_space(cfg, ev.param_counts)
    for p, v, lt, lm, g in zip(h["policy"], h["projector_version"], h["l_text"], h["l_mm"], h["g"]):
        fresh = ev.fresh(space.ratios(np.array(p)), v)
        assert (lt, lm, g) == pytest.approx((fresh.l_text, fresh.l_mm, float(np.sum(fresh.log_norm_ratio))), rel=1e-6)
    # the elites scored under both projectors: their text scores did move (a memo would have been stale)
    for p in h["policy"][4:6]:
        (lt0, g0), (lt1, g1) = [(lt, g) for q, lt, g in zip(h["policy"], h["l_text"], h["g"]) if q == p]
        assert lt0 != pytest.approx(lt1, rel=1e-6) or g0 != pytest.approx(g1, rel=1e-6)


def _model_answer_logprobs(evaluator, batch) -> torch.Tensor:
    """The model's own log-probabilities at the answer targets of a batch (full logits, fp32)."""
    batch = dict(batch)
    labels = batch.pop("labels")
    with torch.no_grad():
        logits = evaluator.adapter.model(**batch).logits[:, :-1].float()
    return torch.log_softmax(logits[labels[:, 1:] != -100], -1)


def test_the_projector_trains_on_the_fitness_loss_kl_to_the_dense_model(tiny_llava_dir):
    """One objective: with the KL fitness the projector's loss, the guard's held-aside loss and the fitness's
    image-text term are the same quantity, KL from the dense model's answer distribution (the dense weights and
    the projector of the start, fixed), checked against full-logit forwards."""
    kl = CandidateScorer(*_configs(model=str(tiny_llava_dir), nsamples=4, seqlen=32, mm_calib="easy-vqa:train",
                                   mm_samples=8, loss="kl", projector_batch=4, monitor_samples=2),
                         levels=[0.4, 0.5, 0.6])
    batches = kl.monitor_batches + kl.projector_batches
    kl.pruner.restore_dense()
    dense = [_model_answer_logprobs(kl, b) for b in batches]
    teachers = kl.monitor_teachers + [t[0] for t in kl.step_teachers]
    for t, d in zip(teachers, dense):
        assert t.dtype == torch.float16 and torch.allclose(t.float(), d, atol=2e-2)
    ratios = np.array([0.6, 0.4, 0.6])
    score = kl.evaluate(ratios)
    kl._install(ratios)
    per_batch = [(torch.exp(d) * (d - _model_answer_logprobs(kl, b))).sum().item() for b, d in zip(batches, dense)]
    counts = [len(d) for d in dense]
    assert all(v > 0 for v in per_batch)
    assert score.l_mm == pytest.approx(sum(per_batch) / sum(counts), rel=2e-2)  # the fitness's image-text term
    assert kl.answer_loss(ratios) == pytest.approx(per_batch[0] / counts[0], rel=2e-2)  # what the guard judges
    loss, grads = kl.projector_gradient(ratios, 0)  # what the projector trains on
    assert loss == pytest.approx(per_batch[1] / counts[1], rel=2e-2)
    assert all(np.isfinite(g).all() for g in grads) and any(np.abs(g).max() > 0 for g in grads)
    ce = kl.answer_loss(ratios, kl.monitor_batches)  # explicit batches: cross-entropy, a different number
    assert ce != pytest.approx(kl.answer_loss(ratios), rel=1e-3)
    # engine.projector_objective=ce: the projector trains on answer cross-entropy whatever the fitness (recorded in
    # the identity, so a checkpoint of one never resumes as the other)
    other = CandidateScorer(*_configs(model=str(tiny_llava_dir), nsamples=4, seqlen=32, mm_calib="easy-vqa:train",
                                      mm_samples=8, loss="kl", projector_batch=4, monitor_samples=2,
                                      projector_objective="ce"), levels=[0.4, 0.5, 0.6])
    assert other.step_teachers is None and other.monitor_teachers is None
    assert other.answer_loss(ratios) == pytest.approx(ce, rel=1e-5)
    assert kl.identity()["projector_objective"] == "fitness" and other.identity()["projector_objective"] == "ce"


def test_the_stage_slice_holds_the_screening_slice_and_sits_inside_the_fitness_set(tiny_llava_dir):
    """Multi-step selection's stage slice: the first stage_nsamples text segments and stage_mm_samples image-text
    samples of the fitness set; the same tokens in the same order as without it; "stage" scores exactly it."""
    from efficientllava.prune_engine.calibrated import proxy_data
    from efficientllava.prune_engine.models.loading import load_processor

    base = dict(model=str(tiny_llava_dir), nsamples=6, seqlen=32, mm_calib="easy-vqa:train", mm_samples=6,
                mode="database", fitness_nsamples=4, screen_nsamples=1, screen_mm_samples=2, loss="kl",
                screen_precision="fp32")
    processor = load_processor(str(tiny_llava_dir))
    staged = proxy_data(processor, *reversed(_configs(**base, stage_nsamples=3, stage_mm_samples=4)))
    plain = proxy_data(processor, *reversed(_configs(**base)))
    assert plain.stage is None and staged.screen is not None
    assert set(staged.screen) < set(staged.stage) < set(staged.scored)

    def count(proxy, indices, kind):
        key = "input_ids" if kind == "text" else "labels"
        return sum(len(proxy.batches[i][key]) for i in indices if proxy.kinds[i] == kind)

    assert [count(staged, staged.screen, k) for k in ("text", "mm")] == [1, 2]
    assert [count(staged, staged.stage, k) for k in ("text", "mm")] == [3, 4]
    assert [count(staged, staged.scored, k) for k in ("text", "mm")] == [4, 6]
    def sequences(proxy, kind):  # unpadded: a batch pads its sequences to its longest
        return [ids[mask.bool()].tolist() for b, k in zip(proxy.batches, proxy.kinds) if k == kind
                for ids, mask in zip(b["input_ids"], b.get("attention_mask", torch.ones_like(b["input_ids"])))]

    for kind in ("text", "mm"):  # the same sequences in the same order, only cut at one more place
        assert sequences(staged, kind) == sequences(plain, kind)
    ev = CandidateScorer(*_configs(**base, stage_nsamples=3, stage_mm_samples=4), levels=[0.4, 0.5, 0.6])
    assert ev.identity()["stage"] == [3, 4]
    policy = np.array([0.5, 0.4, 0.6])
    stage = ev.evaluate(policy, "stage")
    ref = ev.pruner.stitch(ev.policy(policy), ev.stage)
    assert (stage.l_text, stage.l_mm) == (ref.loss_text, ref.loss_mm) and stage.fidelity == "stage"
    screen, full = ev.evaluate(policy, "screen"), ev.evaluate(policy, "full")
    assert len({screen.l_text, stage.l_text, full.l_text}) == 3


@pytest.mark.parametrize("settings, message", [
    (dict(stage_nsamples=2), "needs screen_nsamples"),
    (dict(screen_mm_samples=4, stage_mm_samples=2), "at least screen_mm_samples"),
])
def test_a_stage_slice_smaller_than_the_screening_is_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        EngineConfig(**settings)


def test_a_held_aside_fitness_calibrates_on_the_rest(tiny_llava_dir):
    """engine.fitness_held_aside: the fitness's text batches score but build no Hessian; the text past them and every
    image-text batch calibrate; the same batches as without it; the scorer's identity says so (a resumed run checks)."""
    from efficientllava.prune_engine.calibrated import proxy_data
    from efficientllava.prune_engine.models.loading import load_processor

    base = dict(model=str(tiny_llava_dir), nsamples=6, seqlen=32, mm_calib="easy-vqa:train", mm_samples=4,
                mode="database", fitness_nsamples=2, loss="ce")
    processor = load_processor(str(tiny_llava_dir))
    held = proxy_data(processor, *reversed(_configs(**base, fitness_held_aside=True)))
    plain = proxy_data(processor, *reversed(_configs(**base)))
    assert plain.calibrating is None and held.scored == plain.scored
    fit_text = [i for i in held.scored if held.kinds[i] == "text"]
    assert fit_text and not set(fit_text) & set(held.calibrating)
    assert set(held.calibrating) | set(fit_text) == set(range(len(held.batches)))
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(held.batches, plain.batches))
    with pytest.raises(ValueError, match="leaves none of the 6 text segments"):
        proxy_data(processor, *reversed(_configs(**{**base, "fitness_nsamples": 6}, fitness_held_aside=True)))
    ev = CandidateScorer(*_configs(**base, fitness_held_aside=True), levels=[0.4, 0.5, 0.6])
    assert ev.pruner.calibrating == set(held.calibrating) and ev.identity()["fitness_held_aside"] is True
    assert "fitness_held_aside" not in CandidateScorer(*_configs(**base), levels=[0.4, 0.5, 0.6]).identity()
