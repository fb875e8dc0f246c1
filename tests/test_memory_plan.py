"""The memory plan: weights off the device (CPU memory or memory-mapped files), a bounded prefix cache, offloaded blocks, a micro-batched, checkpointed projector gradient.

None of these may change a result: each is checked bit-for-bit (or, for the gradient, to float
rounding) against the in-memory, unbounded, whole-batch path on tiny models. This machine has no
GPU, so block offloading is checked on its bookkeeping: every block's forward runs while the block
is on the device, and each block moves once per candidate.
"""
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from efficientllava.prune_engine.config import DataConfig, EngineConfig
from efficientllava.prune_engine.data.calibration import text_batches, vqa_batches
from efficientllava.prune_engine.data.vqa import load_easy_vqa
from efficientllava.prune_engine.models.loading import load_model
from efficientllava.prune_engine.owl import outlier_ratios
from efficientllava.prune_engine.pipeline import LayerwisePruner
from efficientllava.prune_engine.prefix_cache import PrefixCache
from efficientllava.prune_engine.scoring import CandidateScorer
from efficientllava.prune_engine.sparsegpt import Pruned
from efficientllava.prune_engine.weight_store import DenseWeights, LevelDatabase

LEVELS = [0.3, 0.5, 0.7]


def _weights(adapter):
    return [{n: m.weight.detach().clone() for n, m in adapter.linears(b).items()} for b in range(adapter.num_blocks)]


def _assert_same_weights(a, b):
    for block_a, block_b in zip(a, b):
        for n in block_a:
            assert torch.equal(block_a[n], block_b[n]), n


# ---- the stores ----------------------------------------------------------------------------
@pytest.mark.parametrize("on_disk", [False, True])
def test_level_database_and_dense_weights_round_trip(tmp_path, on_disk):
    directory = tmp_path / "spill" if on_disk else None
    weights = [torch.randn(4, 6, dtype=torch.bfloat16), torch.randn(3, 6)]
    db = LevelDatabase(directory)
    for i, w in enumerate(weights):
        db[(i, "mlp.down_proj", 0.5)] = Pruned(w, 0.5, float(i), 2.0 * i)
    assert len(db) == 2 and (1, "mlp.down_proj", 0.5) in db and sorted(db) == sorted(db.keys())
    for i, w in enumerate(weights):
        entry = db[(i, "mlp.down_proj", 0.5)]
        assert torch.equal(entry.weight, w) and entry.weight.dtype == w.dtype
        assert (entry.ratio, entry.sq_norm, entry.error) == (0.5, float(i), 2.0 * i)
    dense = DenseWeights([{"a": weights[0]}, {"a": weights[1]}], directory)
    assert torch.equal(dense.block(1)["a"], weights[1])
    if on_disk:
        files = list(directory.rglob("*.pt"))
        assert len(files) == 4  # one per entry and per dense matrix, nothing in memory
        assert all(isinstance(e, tuple) for e in db._entries.values())
        db.clear()
        assert not db and len(list(directory.rglob("*.pt"))) == 2
        del db, dense
        assert not list(directory.rglob("*.pt"))  # removed with the stores


def test_files_a_killed_process_left_are_removed_at_the_next_start(tmp_path):
    import subprocess
    import sys

    child = subprocess.run([sys.executable, "-c", (
        "import os, torch; from efficientllava.prune_engine.weight_store import LevelDatabase; from efficientllava.prune_engine.sparsegpt import Pruned;"
        f"db = LevelDatabase({str(tmp_path)!r}); db[(0, 'a', 0.5)] = Pruned(torch.ones(2), 0.5, 1.0, 0.0);"
        "os._exit(0)")], capture_output=True, text=True)  # exits without dropping the store
    assert child.returncode == 0, child.stderr
    assert len(list(tmp_path.glob("levels-*"))) == 1
    db = LevelDatabase(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [db._files.root.name]  # the orphan is gone, ours is there


def test_prefix_cache_keeps_every_stride_th_block_within_budget():
    cache = PrefixCache(num_blocks=6, block_bytes=4 * 8, budget_bytes=3 * 4 * 8)  # room for 3 of 6 blocks
    assert cache.stride == 2 and cache.kept == {1, 3, 5}
    keys = [(k,) for k in "abcdef"]
    for b in range(6):
        cache.push("lane", keys[b], torch.full((8,), float(b)), block=b)
    assert cache.bytes <= 3 * 4 * 8
    # a policy differing from block 4 on restarts after the deepest kept block before it (3)
    start, out = cache.start("lane", keys[:4] + [("x",), ("y",)], "cpu")
    assert start == 4 and torch.equal(out, torch.full((8,), 3.0))
    assert [e.facts["block"] for e in cache.entries("lane")] == [0, 1, 2, 3]
    unbounded, none = PrefixCache(6, 32, None), PrefixCache(6, 32, 0)
    assert unbounded.kept == set(range(6)) and none.kept == set()
    none.push("lane", keys[0], torch.zeros(8))
    assert none.start("lane", keys, "cpu") == (0, None)


# ---- the pipeline with the stores ---------------------------------------------------------
@pytest.fixture
def llama(tiny_llama_dir):
    adapter, tok = load_model(str(tiny_llama_dir))
    return adapter, text_batches(tok, "wiki:calib", 4, 32, seed=0, batch_size=2)


def test_sequential_pruning_identical_with_dense_weights_on_disk(llama, tmp_path):
    adapter, batches = llama
    policies = [0.5, [0.3, 0.6, 0.5], [0.3, 0.6, 0.7]]
    memory = LayerwisePruner(adapter, batches, progress=False, reuse_prefix=True)
    expected = []
    for p in policies:
        expected.append((memory.prune(p).loss, _weights(adapter)))
    memory.restore_dense()
    disk = LayerwisePruner(adapter, batches, progress=False, reuse_prefix=True, offload_dir=tmp_path)
    assert list(tmp_path.rglob("*.pt"))
    for p, (loss, weights) in zip(policies, expected):
        assert disk.prune(p).loss == loss
        _assert_same_weights(_weights(adapter), weights)


@pytest.mark.parametrize("budget_blocks", [0, 1, 2])
def test_database_on_disk_and_bounded_cache_give_identical_candidates(llama, tmp_path, budget_blocks):
    adapter, batches = llama
    candidates = [[0.5, 0.5, 0.5], [0.5, 0.5, 0.7], [0.5, 0.3, 0.7], [0.5, 0.3, 0.7], [0.7, 0.3, 0.7]]
    reference = LayerwisePruner(adapter, batches, progress=False, reuse_prefix=True)
    reference.build_database(LEVELS)
    expected = [reference.stitch(c) for c in candidates]
    run_reference = reference.blocks_run
    reference.restore_dense()
    block_bytes = sum(x.hidden.numel() * x.hidden.element_size() for x in reference.inputs)
    bounded = LayerwisePruner(adapter, batches, progress=False, reuse_prefix=True, offload_dir=tmp_path,
                               cache_bytes=budget_blocks * block_bytes)
    bounded.build_database(LEVELS)
    assert len(bounded.database) == len(reference.database)
    for key, entry in reference.database.items():
        assert torch.equal(bounded.database[key].weight, entry.weight)
    run_start = bounded.blocks_run
    for c, report in zip(candidates, expected):
        got = bounded.stitch(c)
        assert (got.loss, got.block_sq_norm) == (report.loss, report.block_sq_norm)
        assert bounded.cache.bytes <= budget_blocks * block_bytes
    # less room, more blocks recomputed; with no room at all every candidate runs every block
    assert bounded.blocks_run - run_start >= run_reference - 3
    if budget_blocks == 0:
        assert bounded.blocks_run - run_start == 3 * len(candidates)


# ---- block offloading ---------------------------------------------------------------------
def _watch_blocks(adapter):
    """Fail any block forward that runs while the block is not on the device; count block moves."""
    moves = {"n": 0}
    for b, block in enumerate(adapter.blocks):
        def check(_module, _args, b=b):
            assert adapter._onload_depth.get(b, 0) > 0, f"block {b} ran off the device"
        block.input_layernorm.register_forward_pre_hook(check)  # the block's forward really runs
        original = block.to

        def counted(*args, original=original, **kwargs):
            moves["n"] += 1
            return original(*args, **kwargs)
        block.to = counted
    return moves


def test_offloaded_blocks_run_only_on_the_device_and_give_identical_results(tiny_llava_dir):
    adapter, processor = load_model(str(tiny_llava_dir))
    batches = (text_batches(processor, "wiki:calib", 4, 32, seed=0)
               + vqa_batches(processor, load_easy_vqa("train", limit=4), 2))
    reference = LayerwisePruner(adapter, batches, progress=False, reuse_prefix=True, loss="kl")
    seq = reference.prune([0.4, 0.5, 0.6])
    reference.build_database(LEVELS)
    stitched = reference.stitch([0.3, 0.7, 0.5])
    reference.restore_dense()
    owl = outlier_ratios(adapter, batches)

    adapter.offload_blocks("cpu")
    moves = _watch_blocks(adapter)
    assert outlier_ratios(adapter, batches) == owl  # the OWL baseline's scores, block by block
    pruner = LayerwisePruner(adapter, batches, progress=False, reuse_prefix=True, loss="kl")
    assert pruner.prune([0.4, 0.5, 0.6]).loss == seq.loss
    pruner.build_database(LEVELS)
    before = moves["n"]
    assert pruner.stitch([0.3, 0.7, 0.5]).loss == stitched.loss
    assert moves["n"] - before == 2 * adapter.num_blocks  # each block onto the device and back, once
    assert all(depth == 0 for depth in adapter._onload_depth.values())


# ---- the projector gradient -------------------------------------------------------------
def test_microbatched_checkpointed_projector_gradient_equals_the_whole_batch(tiny_llava_dir):
    common = dict(model=str(tiny_llava_dir), loss="ce", projector_batch=4)
    data = DataConfig(nsamples=2, seqlen=32, mm_calib="easy-vqa:train", mm_samples=8)  # 4 held aside, 4 trained on
    whole = CandidateScorer(EngineConfig(**common), data, levels=LEVELS)
    micro = CandidateScorer(EngineConfig(**common, projector_microbatch=1, activation_checkpointing=True,
                                         offload=True), data, levels=LEVELS)
    assert [len(s) for s in micro.projector_steps] == [4] and [len(s) for s in whole.projector_steps] == [1]
    ratios = np.array([0.5, 0.6, 0.7])
    loss, grads = whole.projector_gradient(ratios, 0)
    loss_micro, grads_micro = micro.projector_gradient(ratios, 0)
    assert loss_micro == pytest.approx(loss, rel=1e-5)
    # The same sum in another order (4 micro-batches of 1 sample against one batch of 4, recomputed blocks):
    # in float32 each gradient entry sums per-token contributions, each up to about max|g| (the largest entry);
    # reordering a sum of n such terms moves it by up to ~n * eps * max|g| (eps = 2^-24), whatever the entry's
    # own size, so entries near zero are compared on that absolute scale, not relative to themselves.
    tokens = sum(int(b["input_ids"].numel()) for step in micro.projector_steps for b in step)
    for g, gm in zip(grads, grads_micro):
        scale = np.abs(g).max()
        assert scale > 0
        np.testing.assert_allclose(gm, g, rtol=1e-4, atol=tokens * 2.0**-24 * scale)
        assert np.linalg.norm(gm - g) <= 1e-4 * np.linalg.norm(g)  # and as a whole, to a few hundred ulps
    assert not any(p.requires_grad for p in micro.adapter.model.parameters())  # frozen again


# ---- the CLI --------------------------------------------------------------------------------
def test_prune_with_offload_saves_the_same_model(tiny_llama_dir, tmp_path):
    from efficientllava.actors.cli import app

    runner = CliRunner()
    outputs = {}
    for name, extra in (("plain", []), ("offload", ["--offload", "--offload-dir", tmp_path / "spill"])):
        out = tmp_path / name
        result = runner.invoke(app, [str(a) for a in ["prune", "--model", tiny_llama_dir, "--out", out,
                                                      "--nsamples", 4, "--seqlen", 32, *extra]])
        assert result.exit_code == 0, result.output
        outputs[name] = json.loads((out / "policy.json").read_text())
    assert outputs["offload"]["calibration_loss"] == outputs["plain"]["calibration_loss"]
    assert outputs["offload"]["job"]["offload"] is True
    from safetensors.torch import load_file

    plain, offloaded = load_file(tmp_path / "plain" / "model.safetensors"), load_file(
        tmp_path / "offload" / "model.safetensors")
    assert plain.keys() == offloaded.keys() and all(torch.equal(plain[k], offloaded[k]) for k in plain)
    assert not list((tmp_path / "spill").rglob("*.pt"))  # the memory-mapped copies are gone


def test_an_unwritable_offload_dir_is_a_one_line_error_before_any_work(tiny_llama_dir, tmp_path):
    from efficientllava.actors.cli import app

    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["prune", "--model", str(tiny_llama_dir), "--out", str(out),
                                      "--offload-dir", str(blocker / "spill")])
    assert result.exit_code == 2 and "--offload-dir" in result.output and "is a file" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


def test_run_config_checks_the_offload_dir_before_ray_starts(tmp_path):
    from efficientllava.actors.config import RunConfig
    from efficientllava.search.config import ConfigError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=r"invalid engine config: offload_dir .*is a file"):
        RunConfig.load(preset="default", overrides={"engine.model": "smollm2",
                                                    "engine.offload_dir": str(blocker / "spill")})
    run = RunConfig.load(preset="default", overrides={"engine.model": "smollm2", "engine.offload": True,
                                                      "engine.offload_dir": str(tmp_path / "spill")})
    assert run.engine.offload and run.engine.offload_dir == str(tmp_path / "spill")
