"""Item 6: checkpoint layout, atomic writes, validation on resume, continuation."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_search_synthetic import SyntheticEvaluator

from efficientllava.search import CheckpointError, SearchConfig, SearchDriver, read_history
from efficientllava.search.checkpoint import HISTORY_SCHEMA, RunStore

CFG = dict(population=8, elites=2, generations=3, seed=5)


def _run(run_dir, generations=3, **kw):
    cfg = SearchConfig(**dict(CFG, generations=generations, **kw))
    return SearchDriver(cfg, SyntheticEvaluator(n_blocks=6), str(run_dir)).run()


def _error(run_dir, ev=None, **kw) -> str:
    with pytest.raises(CheckpointError) as info:
        SearchDriver.resume(str(run_dir), ev or SyntheticEvaluator(n_blocks=6), **kw)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_layout_after_a_run(tmp_path):
    result = _run(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "committed.txt", "config.yaml", "history-000003.parquet", "projector-000003.bin", "state.json"]  # older removed
    table = pq.read_table(tmp_path / "history-000003.parquet")
    assert table.schema.equals(HISTORY_SCHEMA) and table.equals(result.history) and table.num_rows == 24
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["generation"] == 3 and len(state["population"]) == 8
    assert state["rng"]["bit_generator"] == "PCG64" and state["projector_version"] == 3 * 4  # 4 steps a generation
    assert state["identity"] == SyntheticEvaluator(n_blocks=6).identity
    assert state["config"] == SearchConfig(**CFG).to_dict()
    assert state["best"]["fitness"] == result.fitness and state["best"]["policy"] == result.policy.tolist()
    assert read_history(f"file://{tmp_path}").equals(result.history)  # any pyarrow.fs URI


def test_uri_run_dir(tmp_path):
    a = _run(f"file://{tmp_path}/a")
    b = _run(tmp_path / "b")
    assert a.history.equals(b.history) and (tmp_path / "a" / "state.json").exists()


@pytest.mark.parametrize("offspring", [0, 12])
def test_resume_with_more_generations_equals_a_longer_run(tmp_path, offspring):
    _run(tmp_path / "short", generations=2, offspring=offspring)
    if offspring:  # the children drawn after the last generation are kept, unscreened, for a longer run
        state = RunStore(str(tmp_path / "short")).load()[0]
        assert len(state["population"]) == 2 and len(state["children"]) == 12
    longer = SearchConfig(**dict(CFG, generations=5, offspring=offspring))
    resumed = SearchDriver.resume(str(tmp_path / "short"), SyntheticEvaluator(n_blocks=6), config=longer).run()
    full = _run(tmp_path / "full", generations=5, offspring=offspring)
    assert resumed.history.equals(full.history) and resumed.fitness == full.fitness
    assert RunStore(str(tmp_path / "short")).load()[0]["config"]["generations"] == 5


def test_resume_of_a_finished_run_does_no_work(tmp_path):
    result = _run(tmp_path)
    ev = SyntheticEvaluator(n_blocks=6)
    again = SearchDriver.resume(str(tmp_path), ev).run()
    assert ev.evaluated == [] and again.fitness == result.fitness and again.history.equals(result.history)
    assert ev.projector_version == 3 * 4 and np.any(ev.projector != 0)  # the saved projector state was loaded


def test_fresh_run_refuses_an_existing_checkpoint(tmp_path):
    _run(tmp_path)
    with pytest.raises(CheckpointError, match="already holds a checkpoint"):
        _run(tmp_path)


def test_refuses_another_model(tmp_path):
    _run(tmp_path)
    assert "another model (identity differs in: seed)" in _error(tmp_path, SyntheticEvaluator(n_blocks=6, seed=2))
    other = SyntheticEvaluator(n_blocks=6)
    other.param_counts = other.param_counts + 1
    assert "parameter counts" in _error(tmp_path, other)


def test_refuses_another_config(tmp_path):
    _run(tmp_path)
    msg = _error(tmp_path, config=SearchConfig(**dict(CFG, eta=0.0, neighbours=3)))
    assert "another search config (differs in: eta, neighbours)" in msg


@pytest.mark.parametrize("damage, words", [
    (lambda d: (d / "state.json").write_text((d / "state.json").read_text()[:100]), "not a valid checkpoint record"),
    (lambda d: (d / "state.json").write_text((d / "state.json").read_text().replace('"generation": 3', '"generation": 2')),
     "checksum mismatch"),
    (lambda d: (d / "history-000003.parquet").write_bytes(b"PAR1" + bytes(100)), "does not match its sha256"),
    (lambda d: (d / "projector-000003.bin").unlink(), "projector-000003.bin is missing"),
    (lambda d: (d / "state.json").unlink(), "no checkpoint"),
])
def test_refuses_a_corrupt_checkpoint(tmp_path, damage, words):
    _run(tmp_path)
    damage(tmp_path)
    assert words in _error(tmp_path)


def test_a_crash_before_the_commit_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    _run(tmp_path, generations=2)
    before = RunStore(str(tmp_path)).load()

    def crash(self, src, dst):
        if dst.endswith("state.json"):
            raise KeyboardInterrupt  # dies after the temp file is written, before the rename
        return original(self, src, dst)

    original = RunStore._move
    monkeypatch.setattr(RunStore, "_move", crash)
    cfg = SearchConfig(**dict(CFG, generations=3))
    with pytest.raises(KeyboardInterrupt):
        SearchDriver.resume(str(tmp_path), SyntheticEvaluator(n_blocks=6), config=cfg).run()
    after = RunStore(str(tmp_path)).load()
    assert after[0] == before[0] and after[1].equals(before[1]) and after[2] == before[2]
