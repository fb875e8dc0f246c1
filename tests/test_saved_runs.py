"""What a run directory keeps of its run: the search config plus the app slot (engine, data and Ray sections) in
app.yaml and every checkpoint; and run directories of the older layout (checkpoint format 4, those sections inside
the search config's `extra`) still resume, bit for bit.

tests/fixtures/checkpoint_format4 was written by the code of commit 727d7db (checkpoint format 4): RunConfig.load
with engine.model smollm2, data.nsamples 4, data.seqlen 32, search.population 6, search.elites 2,
search.generations 2, ray.actors 2 (preset none), its search config run by SearchDriver with
SyntheticEvaluator(n_blocks=6) for 2 generations."""
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml
from test_search_synthetic import SyntheticEvaluator

from efficientllava.actors.config import RunConfig
from efficientllava.search import SearchConfig, SearchDriver
from efficientllava.search.checkpoint import APP, CONFIG, FORMAT, STATE, RunStore, read_saved

FORMAT4 = Path(__file__).parent / "fixtures" / "checkpoint_format4"


@pytest.fixture
def old_run(tmp_path):
    shutil.copytree(FORMAT4, tmp_path / "run")
    return tmp_path / "run"


def _search(saved: dict, **changes) -> SearchConfig:
    return SearchConfig.from_dict({k: v for k, v in dict(saved, **changes).items() if k in SearchConfig.model_fields})


def test_an_old_checkpoint_reads_with_its_settings_in_the_search_config(old_run):
    state = json.loads((old_run / STATE).read_text())
    assert state["format"] == 4 and "app" not in state and "engine" in state["config"]["extra"]
    saved, app, committed = read_saved(str(old_run))
    assert committed and app is None and saved == state["config"]
    run = RunConfig.from_saved(saved, {"actors": 1}, app=app)
    assert run.engine.model == "smollm2" and run.data.nsamples == 4 and run.data.seqlen == 32
    assert run.search.population == 6 and run.search.extra == {}  # the legacy sections are not search settings
    assert run.ray.actors == 1  # a runtime override


def test_an_old_checkpoint_resumes_to_the_result_of_an_uninterrupted_run(old_run, tmp_path):
    saved, app, _ = read_saved(str(old_run))
    longer = _search(saved, generations=3)
    resumed = SearchDriver.resume(str(old_run), SyntheticEvaluator(n_blocks=6), config=longer).run()
    reference = SearchDriver(longer, SyntheticEvaluator(n_blocks=6), str(tmp_path / "reference")).run()
    # the fixture's first two generations were scored on the CPU that wrote it: numpy's float sums may round
    # differently here (AVX2 vs AVX-512 reduction order), so floats agree to rounding and all else exactly
    assert np.array_equal(resumed.policy, reference.policy)
    assert resumed.fitness == pytest.approx(reference.fitness, rel=1e-12, abs=1e-15)
    assert resumed.history.column_names == reference.history.column_names
    for name in resumed.history.column_names:
        kind = resumed.history.schema.field(name).type
        mine, theirs = resumed.history[name].to_pylist(), reference.history[name].to_pylist()
        if pa.types.is_floating(kind) or (pa.types.is_list(kind) and pa.types.is_floating(kind.value_type)):
            assert [v is None for v in mine] == [v is None for v in theirs], name
            pairs = [(a, b) for a, b in zip(mine, theirs) if a is not None]
            assert all(np.allclose(a, b, rtol=1e-12, atol=1e-15, equal_nan=True) for a, b in pairs), name
        else:
            assert mine == theirs, name
    # the resumed run writes the current format; without an app slot its settings stay where they were
    state = RunStore(str(old_run)).load()[0]
    assert state["format"] == FORMAT and state["app"] is None
    again = read_saved(str(old_run))
    assert RunConfig.from_saved(again[0], app=again[1]).engine.model == "smollm2"


def test_a_new_run_keeps_its_app_slot_from_the_start_and_in_every_checkpoint(tmp_path):
    app = {"engine": {"model": "smollm2"}, "data": {"nsamples": 4, "seqlen": 32}, "ray": {"actors": 2}}
    cfg = SearchConfig(population=6, elites=2, generations=1)
    run_dir = tmp_path / "run"

    class Stop(Exception):
        pass

    class StopAtOnce(SyntheticEvaluator):
        def evaluate(self, *args, **kwargs):
            raise Stop  # stopped before its first checkpoint: only what the run wrote at its start is there

    with pytest.raises(Stop):
        SearchDriver(cfg, StopAtOnce(n_blocks=6), str(run_dir), app=app).run()
    assert sorted(p.name for p in run_dir.iterdir()) == [APP, CONFIG]
    assert yaml.safe_load((run_dir / APP).read_text()) == app
    assert SearchConfig.from_file(run_dir / CONFIG) == cfg  # config.yaml stays a plain search config
    assert read_saved(str(run_dir)) == (cfg.to_dict(), app, False)
    SearchDriver(cfg, SyntheticEvaluator(n_blocks=6), str(run_dir), app=app).run()
    assert read_saved(str(run_dir)) == (cfg.to_dict(), app, True)
    # a resume keeps the slot as first saved
    SearchDriver.resume(str(run_dir), SyntheticEvaluator(n_blocks=6), config=cfg.merge({"generations": 2})).run()
    state = RunStore(str(run_dir)).load()[0]
    assert state["generation"] == 2 and state["app"] == app and "engine" not in state["config"]["extra"]


def test_a_run_config_round_trips_through_the_app_slot(tiny_llava_dir, tmp_path):
    run = RunConfig.load(None, {"engine.model": str(tiny_llava_dir), "data.nsamples": 4, "ray.actors": 2})
    SearchDriver(run.search.merge({"generations": 1, "population": 4, "elites": 1}), SyntheticEvaluator(n_blocks=3),
                 str(tmp_path / "run"), app=run.app()).run()
    saved, app, committed = read_saved(str(tmp_path / "run"))
    again = RunConfig.from_saved(saved, app=app)
    assert committed and again.engine == run.engine and again.data == run.data and again.ray == run.ray
