"""The layer-sequential pipeline on tiny models loaded through the real loader."""
import math

import pytest
import torch

from efficientllava.prune_engine.data.calibration import text_batches, vqa_batches
from efficientllava.prune_engine.data.vqa import load_easy_vqa
from efficientllava.prune_engine.models.adapter import ModelError
from efficientllava.prune_engine.models.loading import load_model
from efficientllava.prune_engine.pipeline import LayerwisePruner
from efficientllava.prune_engine.sparsegpt import Pattern

TEXT = "wiki:calib"


def zeros(adapter):
    return [{n: int((m.weight == 0).sum()) for n, m in adapter.linears(i).items()} for i in range(adapter.num_blocks)]


@pytest.fixture
def llama(tiny_llama_dir):
    adapter, tok = load_model(str(tiny_llama_dir))
    return adapter, tok, text_batches(tok, TEXT, 8, 64, seed=0)


def test_uniform_policy_exact_sparsity_and_untouched_rest(llama):
    adapter, _, batches = llama
    before = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    report = LayerwisePruner(adapter, batches, progress=False).prune(0.5)
    for i, counts in enumerate(zeros(adapter)):
        for n, m in adapter.linears(i).items():
            assert counts[n] == round(0.5 * m.weight.numel()), (i, n)
    pruned_names = {f"model.layers.{i}.{n}.weight" for i in range(adapter.num_blocks) for n in adapter.linears(i)}
    for k, v in adapter.model.state_dict().items():
        if k not in pruned_names:
            assert torch.equal(v, before[k]), k
    assert report.mean_sparsity == pytest.approx(0.5, abs=1e-4)
    assert all(r < 0 for r in report.log_norm_ratio)  # pruning shrinks the Frobenius norm


def test_per_block_and_per_matrix_policy(llama):
    adapter, _, batches = llama
    names = list(adapter.linears(0))
    policy = [0.3, {n: 0.1 * (j + 1) for j, n in enumerate(names)}, 0.7]
    report = LayerwisePruner(adapter, batches, progress=False).prune(policy)
    counts = zeros(adapter)
    for i, entry in enumerate(policy):
        for n, m in adapter.linears(i).items():
            ratio = entry if isinstance(entry, float) else entry[n]
            assert counts[i][n] == round(ratio * m.weight.numel())
            assert report.sparsity[i][n] == pytest.approx(counts[i][n] / m.weight.numel())


def test_report_loss_is_the_pruned_models_loss(llama):
    adapter, _, batches = llama
    report = LayerwisePruner(adapter, batches, progress=False).prune(0.6)
    with torch.no_grad():
        ids = batches[0]["input_ids"]
        direct = adapter.model(input_ids=ids, labels=ids).loss.item()
    assert report.loss == pytest.approx(direct, rel=1e-4)


def test_pruner_restores_dense_between_policies(llama):
    adapter, _, batches = llama
    pruner = LayerwisePruner(adapter, batches, progress=False)
    first = pruner.prune(0.5)
    pruner.prune(0.7)
    again = pruner.prune(0.5)
    assert again.loss == pytest.approx(first.loss, rel=1e-6)
    dense = pruner.prune(0.0)
    with torch.no_grad():
        ids = batches[0]["input_ids"]
        pruner.restore_dense()
        assert dense.loss == pytest.approx(adapter.model(input_ids=ids, labels=ids).loss.item(), rel=1e-5)


def test_batched_calibration_equals_single_batch(tiny_llama_dir):
    adapter, tok = load_model(str(tiny_llama_dir))
    pruner = LayerwisePruner(adapter, text_batches(tok, TEXT, 8, 64, seed=0), progress=False)
    one = pruner.prune(0.5)
    w_one = [{n: m.weight.clone() for n, m in adapter.linears(i).items()} for i in range(adapter.num_blocks)]
    pruner.restore_dense()
    four = LayerwisePruner(adapter, text_batches(tok, TEXT, 8, 64, seed=0, batch_size=2), progress=False).prune(0.5)
    assert four.loss == pytest.approx(one.loss, rel=1e-4)
    for i in range(adapter.num_blocks):
        for n, m in adapter.linears(i).items():
            torch.testing.assert_close(m.weight, w_one[i][n], rtol=1e-3, atol=1e-4)


def test_layer_sequential_calibration_uses_pruned_outputs(tiny_llama_dir):
    """Block 1's Hessian must come from the outputs of the *pruned* block 0 (not the dense one)."""
    adapter, tok = load_model(str(tiny_llama_dir))
    batches = text_batches(tok, TEXT, 8, 64, seed=0)
    pruner = LayerwisePruner(adapter, batches, progress=False)
    seen = []
    handle = adapter.blocks[1].register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    pruner.prune([0.8, 0.5, 0.5])
    handle.remove()
    x = pruner.inputs[0]
    with torch.no_grad():
        expected = adapter.run_block(0, x.hidden, x.kwargs)  # block 0 is pruned now
        pruner.restore_dense()
        dense = adapter.run_block(0, x.hidden, x.kwargs)
    torch.testing.assert_close(seen[0], expected)
    assert not torch.allclose(seen[0], dense, atol=1e-3)


def test_batches_held_aside_from_calibration_only_run_forward(tiny_llama_dir):
    """`calibrating`: the Hessians come from those batches alone, in sequential and in database mode (the pruned
    weights equal those of a pruner given only them), while every batch runs forward and a held-aside batch's loss
    is the pruned model's own loss on it."""
    adapter, tok = load_model(str(tiny_llama_dir))
    batches = text_batches(tok, TEXT, 8, 64, seed=0, batch_size=2)  # 4 batches
    calib, policy = [1, 2, 3], [0.7, 0.5, 0.6]

    def weights():
        return [{n: m.weight.clone() for n, m in adapter.linears(i).items()} for i in range(adapter.num_blocks)]

    held = LayerwisePruner(adapter, batches, progress=False, calibrating=calib, scored=[0])
    report = held.prune(policy)
    w_held = weights()
    with torch.no_grad():
        ids = batches[0]["input_ids"]
        direct = adapter.model(input_ids=ids, labels=ids).loss.item()
    assert report.loss == pytest.approx(direct, rel=1e-4)
    held.build_database([0.5, 0.6, 0.7])
    db_held = {k: v.weight.clone() for k, v in held.database.items()}
    held.restore_dense()
    alone = LayerwisePruner(adapter, [batches[i] for i in calib], progress=False)
    alone.prune(policy)
    for i, block in enumerate(weights()):
        for n, w in block.items():
            assert torch.equal(w, w_held[i][n]), (i, n)
    alone.build_database([0.5, 0.6, 0.7])
    assert set(db_held) == set(alone.database.keys())
    assert all(torch.equal(db_held[k], alone.database[k].weight) for k in db_held)
    # the held-aside batch changes nothing it calibrates; calibrating on it too changes the weights
    alone.restore_dense()
    LayerwisePruner(adapter, batches, progress=False).prune(policy)
    assert any(not torch.equal(w, w_held[i][n]) for i, block in enumerate(weights()) for n, w in block.items())
    with pytest.raises(ValueError, match="non-empty subset"):
        LayerwisePruner(adapter, batches, progress=False, calibrating=[])
    with pytest.raises(ValueError, match="non-empty subset"):
        LayerwisePruner(adapter, batches, progress=False, calibrating=[4])


@pytest.mark.parametrize("spec", ["2:4", "4:8"])
def test_nm_pipeline(llama, spec):
    adapter, _, batches = llama
    p = Pattern.parse(spec)
    LayerwisePruner(adapter, batches, p, progress=False).prune(p.sparsity)
    for i in range(adapter.num_blocks):
        for n, m in adapter.linears(i).items():
            groups = (m.weight != 0).view(m.weight.shape[0], -1, p.m).sum(-1)
            assert torch.all(groups == p.n), (i, n)


def test_database_levels_match_direct_pruning(llama):
    adapter, _, batches = llama
    pruner = LayerwisePruner(adapter, batches, progress=False)
    levels = [0.4, 0.5, 0.6]
    pruner.build_database(levels)  # dense forward, every level pruned on dense inputs
    assert {(b, r) for b, _, r in pruner.database} == {(b, r) for b in range(3) for r in levels}
    assert all(p.weight.device.type == "cpu" for p in pruner.database.values())  # off the device
    # a part of the database (what one actor builds when the build is shared) is the same entries
    part = LayerwisePruner(adapter, batches, progress=False)
    part.build_database(levels, blocks=[1])
    assert {b for b, _, _ in part.database} == {1}
    for key, entry in part.database.items():
        assert torch.equal(entry.weight, pruner.database[key].weight) and entry.sq_norm == pruner.database[key].sq_norm
    direct = pruner.prune(0.6)  # block 0 sees dense inputs in both runs
    q = pruner.database[(0, "self_attn.q_proj", 0.6)]
    torch.testing.assert_close(q.weight, adapter.linears(0)["self_attn.q_proj"].weight, rtol=1e-4, atol=1e-5)
    stitched = pruner.stitch([0.6, 0.4, 0.5])
    for b, r in enumerate([0.6, 0.4, 0.5]):
        for n, m in adapter.linears(b).items():
            assert torch.equal(m.weight, pruner.database[(b, n, r)].weight)
    assert stitched.block_sq_norm[1] == pytest.approx(sum(pruner.database[(1, n, 0.4)].sq_norm for n in adapter.linears(1)))
    assert direct.loss > 0 and math.isfinite(stitched.loss)
    with pytest.raises(ValueError, match="not a database level"):
        pruner.stitch(0.55)
    # with two batches: a subset scores only its batch; the full score afterwards equals a fresh one
    pruner.restore_dense()
    two = LayerwisePruner(adapter, text_batches(llama[1], TEXT, 8, 64, seed=0, batch_size=4), progress=False,
                           reuse_prefix=True)
    two.build_database(levels)
    subset = two.stitch([0.6, 0.4, 0.5], batches=[0])
    full = two.stitch([0.6, 0.4, 0.5])
    assert subset.tokens * 2 == full.tokens and two.blocks_run == 3 + 3 + 3  # build, subset, the other batch
    assert full.loss == pytest.approx(stitched.loss, rel=1e-5)  # the same tokens in two batches


def test_a_wide_level_database_serves_per_matrix_policies(llama):
    """The wider level set of issue 26 (0.7 +- 0.2 in steps of 0.025: 17 levels): every matrix of every block at
    every level, each at exactly its sparsity; a per-matrix policy using the extreme levels is stitched from them."""
    from efficientllava.search import SearchConfig
    from efficientllava.search.policy import levels_of

    adapter, _, batches = llama
    levels = levels_of(SearchConfig(target=0.7, span=0.2, step=0.025))
    assert len(levels) == 17 and levels[0] == pytest.approx(0.5) and levels[-1] == pytest.approx(0.9)
    pruner = LayerwisePruner(adapter, batches, progress=False)
    pruner.build_database(levels)
    names = list(adapter.linears(0))
    assert len(pruner.database) == adapter.num_blocks * len(names) * 17
    for (b, name, r), entry in pruner.database.items():
        assert int((entry.weight == 0).sum()) == round(r * entry.weight.numel()), (b, name, r)
    policy = [{n: levels[(b * 7 + i * 3) % 17] for i, n in enumerate(names)} for b in range(adapter.num_blocks)]
    assert {r for block in policy for r in block.values()} >= {levels[0], levels[-1]}
    report = pruner.stitch(policy)
    for b, block in enumerate(policy):
        for n, m in adapter.linears(b).items():
            assert torch.equal(m.weight, pruner.database[(b, n, block[n])].weight)
    counts = [{n: m.weight.numel() for n, m in adapter.linears(b).items()} for b in range(adapter.num_blocks)]
    expected = sum(block[n] * counts[b][n] for b, block in enumerate(policy) for n in block) / sum(
        sum(c.values()) for c in counts)
    assert report.mean_sparsity == pytest.approx(expected, abs=1e-3)


def test_prefix_reuse_gives_identical_results_and_skips_blocks(llama):
    adapter, _, batches = llama
    fresh = LayerwisePruner(adapter, batches, progress=False)
    expected = [fresh.prune(p) for p in ([0.5, 0.5, 0.6], [0.5, 0.5, 0.7], [0.5, 0.4, 0.7])]
    fresh.restore_dense()
    reuse = LayerwisePruner(adapter, batches, progress=False, reuse_prefix=True)
    got = [reuse.prune(p) for p in ([0.5, 0.5, 0.6], [0.5, 0.5, 0.7], [0.5, 0.4, 0.7])]
    assert reuse.blocks_run == 3 + 1 + 2
    for e, g in zip(expected, got):
        assert g.loss == e.loss and g.block_sq_norm == e.block_sq_norm and g.sparsity == e.sparsity


def test_llava_prune_leaves_vision_projector_embeddings_head_bit_identical(tiny_llava_dir):
    adapter, processor = load_model(str(tiny_llava_dir))
    assert adapter.is_llava
    batches = text_batches(processor, TEXT, 4, 32, seed=0) + vqa_batches(processor, load_easy_vqa("train", limit=6))
    before = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    report = LayerwisePruner(adapter, batches, progress=False).prune(0.5)
    changed = {k for k, v in adapter.model.state_dict().items() if not torch.equal(v, before[k])}
    lm = "model.language_model.layers."
    assert changed and all(k.startswith(lm) and k.endswith("proj.weight") for k in changed)
    assert any(k.startswith("model.vision_tower.") for k in before)
    assert any(k.startswith("model.multi_modal_projector.") for k in before)
    assert report.tokens > 0 and math.isfinite(report.loss)


def test_llava_image_tokens_reach_the_blocks(tiny_llava_dir):
    """block_inputs uses the model's own merge: image features differ from the image token's embedding."""
    adapter, processor = load_model(str(tiny_llava_dir))
    batch = vqa_batches(processor, load_easy_vqa("train", limit=2))[0]
    inputs = adapter.block_inputs(batch)
    image = batch["input_ids"] == adapter.model.config.image_token_id
    emb = adapter.model.get_input_embeddings()(batch["input_ids"])
    assert image.any()
    assert not torch.allclose(inputs.hidden[image], emb[image])
    torch.testing.assert_close(inputs.hidden[~image], emb[~image])


def test_unsupported_model_is_a_one_line_error(tmp_path):
    from transformers import BertConfig

    BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=8).save_pretrained(tmp_path)
    with pytest.raises(ModelError) as exc:
        load_model(str(tmp_path))
    assert "\n" not in str(exc.value) and "supported" in str(exc.value)


def test_stitch_in_bfloat16_installs_cast_weights_and_never_mixes_precisions(llama):
    adapter, _, batches = llama
    pruner = LayerwisePruner(adapter, batches, progress=False, reuse_prefix=True)
    pruner.build_database([0.4, 0.5, 0.6])
    head, embed = adapter.model.lm_head.weight, adapter.model.get_input_embeddings().weight.clone()
    policy = [0.6, 0.4, 0.5]
    exact = pruner.stitch(policy)
    low = pruner.stitch(policy, dtype=torch.bfloat16)
    for b, r in enumerate(policy):  # the level weights, cast
        for n, m in adapter.linears(b).items():
            assert m.weight.dtype == torch.bfloat16 and torch.equal(m.weight, pruner.database[(b, n, r)].weight.bfloat16())
    assert low.loss != exact.loss and low.loss == pytest.approx(exact.loss, rel=2e-2)  # bf16 rounding, same model
    assert low.block_sq_norm == exact.block_sq_norm  # G comes from the database, whatever the forward's precision
    assert pruner.blocks_run == 3 + 3 + 3  # build, fp32, bf16: no fp32 block output was reused in bf16
    assert adapter.model.lm_head.weight is head and head.dtype == torch.float32  # cast copy, model's own untouched
    assert torch.equal(adapter.model.get_input_embeddings().weight, embed)
    again = pruner.stitch(policy)  # back to fp32: bf16 outputs are not reused either, the result is exact again
    assert again.loss == exact.loss and pruner.blocks_run == 12
    assert all(m.weight.dtype == torch.float32 for b in range(3) for m in adapter.linears(b).values())
    pruner.stitch(policy, dtype=torch.bfloat16)
    pruner.restore_dense()  # dense weights come back in the model's dtype (sequential pruning starts from them)
    dense = LayerwisePruner(adapter, batches, progress=False)
    for b in range(3):
        for n, m in adapter.linears(b).items():
            assert m.weight.dtype == torch.float32 and torch.equal(m.weight, dense.dense.block(b)[n])
