"""The Ray layer's pieces that need no cluster: scheduling, the run config, shared weights, and the
property the actor pool relies on (an evaluation does not depend on what the actor did before)."""
import shutil

import numpy as np
import pytest
import torch

from efficientllava.actors.config import RunConfig
from efficientllava.search.policy import levels_of
from efficientllava.actors.schedule import Schedule, contiguous_chunks, lexicographic_order
from efficientllava.prune_engine.tensors import pack_tensors, unpack_tensors
from efficientllava.search.config import ConfigError, SearchConfig
from efficientllava.search.policy import PolicySpace


# ---- scheduling -------------------------------------------------------------------------------
def test_chunks_are_contiguous_balanced_and_sorted():
    ratios = [[0.5, 0.6], [0.4, 0.6], [0.5, 0.4], [0.4, 0.5], [0.6, 0.4]]
    order = lexicographic_order(ratios)
    assert [ratios[i] for i in order] == sorted(ratios)
    chunks = contiguous_chunks(order, 2)
    assert chunks == [order[:3], order[3:]]
    assert contiguous_chunks(list(range(16)), 16) == [[i] for i in range(16)]
    assert contiguous_chunks(list(range(3)), 5) == [[0], [1], [2], [], []]


def test_schedule_own_chunk_then_steal_from_tail():
    ratios = [[float(i)] for i in range(8)]
    s = Schedule(ratios, ["a", "b"])
    assert [s.next_for("a") for _ in range(4)] == [0, 1, 2, 3]
    assert s.next_for("a") == 7  # steals the last of b's chunk: b keeps its prefix order
    assert [s.next_for("b") for _ in range(3)] == [4, 5, 6]
    assert s.next_for("a") is None and s.empty()


def test_schedule_reruns_a_lost_candidate_elsewhere():
    s = Schedule([[0.1], [0.2], [0.3], [0.4]], ["a", "b"])
    assert s.next_for("a") == 0
    s.failed(0, "a")
    assert s.next_for("a") == 1  # not back on the actor it died on...
    assert s.next_for("b") == 0  # ...but on the other one, before b's own chunk
    s.failed(0, "b")
    s.retire("b")  # b is gone for good: its chunk and the orphan go to a
    assert sorted(iter(lambda: s.next_for("a"), None)) == [0, 2, 3]
    assert s.empty()


# ---- the run config ---------------------------------------------------------------------------
def test_run_config_sections_flags_and_saved_round_trip(tmp_path, tiny_llava_dir):
    path = tmp_path / "run.yaml"
    path.write_text(f"search:\n  population: 8\n  eta: 0.25\nengine:\n  model: {tiny_llava_dir}\ndata:\n  nsamples: 4\n"
                    "ray:\n  actors: 2\n  cpus_per_actor: 2\n")
    run = RunConfig.load(path, {"search.eta": 0.75, "ray.actors": None}, ["search.elites=2", "data.seqlen=16"])
    assert run.search.population == 8 and run.search.eta == 0.75 and run.search.elites == 2  # flags win
    assert run.data.nsamples == 4 and run.data.seqlen == 16 and run.ray.actors == 2
    assert run.engine.threads == 2  # fixed per run from cpus_per_actor: results do not depend on the cluster
    assert run.engine.granularity == "block" and run.data.seed == run.search.seed
    assert run.levels == pytest.approx([0.4, 0.45, 0.5, 0.55, 0.6])
    # what the checkpoint keeps (the search config, and the other sections in its app slot) rebuilds the same run
    saved, app = run.search.to_dict(), run.app()
    assert saved["extra"] == {} and set(app) == {"engine", "data", "ray"}
    again = RunConfig.from_saved(saved, {"actors": 1, "address": None}, app=app)
    assert again.engine == run.engine and again.data == run.data and again.ray.actors == 1
    assert again.search == run.search and again.ray.cpus_per_actor == 2


def test_run_directories_from_before_the_data_section_still_resume(tiny_llava_dir):
    run = RunConfig.load(None, {"engine.model": str(tiny_llava_dir), "data.nsamples": 4})
    app = run.app()
    old = dict(app["engine"], **app["data"])  # the oldest layout: data inside engine, in the search's extra
    saved = dict(run.search.to_dict(), extra={"engine": old, "ray": app["ray"]})
    again = RunConfig.from_saved(saved)
    assert again.data == run.data and again.engine == run.engine and again.search == run.search


def test_a_data_setting_in_the_engine_section_names_its_new_place(tiny_llava_dir):
    with pytest.raises(ConfigError, match="write data.nsamples"):
        RunConfig.load(None, {"engine.model": str(tiny_llava_dir), "engine.nsamples": 4})


def test_levels_match_the_policy_space():
    for cfg in (SearchConfig(), SearchConfig(target=0.3, span=0.2, step=0.1), SearchConfig(target=0.7, step=0.025)):
        space = PolicySpace.from_config(cfg, np.ones(4))
        assert levels_of(cfg) == space.levels.tolist()


@pytest.mark.parametrize("overrides, message", [
    ({"search.target": 0.05}, "below 0"),
    ({"engine.mode": "fast"}, "mode must be"),
    ({"engine.pattern": "2:4"}, "N:M pattern"),
    ({"engine.granularity": "matrix"}, "differs from the search"),
    ({"data.nsamples": 0}, "nsamples: must be a positive"),
    ({"data.calib": "nope:x"}, "calib"),
    ({"data.mm_calib": "mnist"}, "unknown image-text data"),
    ({"ray.gpus_per_actor": 2.5}, "at most 1"),
    ({"ray.memory_per_actor_gb": -1}, "memory_per_actor_gb"),
    ({"ray.bogus": 1}, "unknown key 'bogus'"),
    ({"engine.model": "no-such-model"}, "not a directory"),
])
def test_bad_settings_are_one_line_errors(tiny_llava_dir, overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        RunConfig.load(None, {"engine.model": str(tiny_llava_dir), **overrides})
    assert "\n" not in str(err.value)


def test_text_only_model_with_image_text_data_is_refused(tiny_llama_dir):
    with pytest.raises(ConfigError, match="needs a LLaVA model"):
        RunConfig.load(None, {"engine.model": str(tiny_llama_dir), "data.mm_calib": "easy-vqa:train"})


# ---- weights through the object store -------------------------------------------------------
def test_pack_unpack_keeps_values_ties_and_bfloat16():
    w = torch.randn(4, 3)
    state = {"a": w, "tied": w, "b": torch.randn(2).to(torch.bfloat16), "c": torch.arange(3)}
    packed = pack_tensors(state)
    assert set(packed["arrays"]) == {"a", "b", "c"} and packed["aliases"] == {"tied": "a"}
    back = unpack_tensors(packed)
    for k, v in state.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v)
    assert back["tied"] is back["a"]


def test_model_built_from_shared_weights_reads_no_weights_from_disk(tmp_path, tiny_llava_dir):
    from efficientllava.prune_engine.models.loading import load_model

    dense, _ = load_model(str(tiny_llava_dir))
    shared = unpack_tensors(pack_tensors(dense.model.state_dict()))
    bare = tmp_path / "no-weights"
    shutil.copytree(tiny_llava_dir, bare, ignore=shutil.ignore_patterns("*.safetensors"))
    adapter, _ = load_model(str(bare), state_dict=shared)
    ids = torch.tensor([[1, 2, 3, 400, 500]])
    with torch.no_grad():
        assert torch.equal(adapter.model(input_ids=ids).logits, dense.model(input_ids=ids).logits)
    assert adapter.model.lm_head.weight.data_ptr() == adapter.model.get_input_embeddings().weight.data_ptr()


# ---- what makes the pool's order irrelevant ---------------------------------------------------
@pytest.mark.parametrize("mode", ["sequential", "database"])
def test_evaluation_does_not_depend_on_what_the_actor_evaluated_before(tiny_llava_dir, mode):
    """Prefix reuse (and the database) must give bit-identical results in any order, on a fresh
    evaluator or a used one: the pool may hand a candidate to any actor."""
    from efficientllava.prune_engine.config import DataConfig, EngineConfig
    from efficientllava.prune_engine.scoring import CandidateScorer

    spec = EngineConfig(model=str(tiny_llava_dir), threads=1, mode=mode,
                        **({"screen_nsamples": 2, "screen_mm_samples": 2} if mode == "database" else {}))
    data = DataConfig(nsamples=4, seqlen=32, mm_calib="easy-vqa:train", mm_samples=4)
    levels = [0.4, 0.45, 0.5, 0.55, 0.6]
    policies = [np.array(p) for p in ([0.4, 0.5, 0.6], [0.4, 0.5, 0.55], [0.4, 0.6, 0.5], [0.6, 0.5, 0.4])]

    def run(ev, order, fidelity):
        out = {}
        for i in order:
            r = ev.evaluate(policies[i], fidelity)
            out[i] = (r, ev.projector_gradient(policies[i], i))
        return [out[i] for i in sorted(out)]

    a = CandidateScorer(spec, data, levels)
    forward = run(a, range(4), "full")
    assert forward[1][0].blocks_run < 3  # shares blocks 0-1 with the previous one
    b = CandidateScorer(spec, data, levels)
    if mode == "database":
        run(b, [2, 0, 3], "screen")  # a used evaluator: screened candidates first (per-batch stacks)
    backward = run(b, reversed(range(4)), "full")
    for (x, gx), (y, gy) in zip(forward, backward):
        assert (x.l_text, x.l_mm) == (y.l_text, y.l_mm) and np.array_equal(x.log_norm_ratio, y.log_norm_ratio)
        assert gx[0] == gy[0] and all(np.array_equal(g, h) for g, h in zip(gx[1], gy[1]))
