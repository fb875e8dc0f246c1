"""A run cannot be lost or mixed up: orphaned checkpoints, model identity, absolute model paths, stable run
names, Tune settings, report defaults (no Ray needed)."""
from __future__ import annotations

import json
import shutil

import pytest
from test_report import make_run
from test_search_checkpoint import CFG, _run
from test_search_synthetic import SyntheticEvaluator
from typer.testing import CliRunner

from efficientllava.search import CheckpointError, SearchConfig, SearchDriver
from efficientllava.search.checkpoint import COMMITTED, STATE, RunStore


def _listing(path):
    return sorted((p.name, p.read_bytes()) for p in path.iterdir())


@pytest.mark.parametrize("damage", ["delete", "corrupt"])
def test_lost_commit_record_is_an_error_and_every_file_stays(tmp_path, damage):
    from efficientllava.search.checkpoint import read_saved

    _run(tmp_path, generations=2)
    if damage == "delete":
        (tmp_path / STATE).unlink()
    else:
        (tmp_path / STATE).write_text('{"generation": 2')
    before = _listing(tmp_path)
    with pytest.raises(CheckpointError, match="missing" if damage == "delete" else "corrupt"):
        read_saved(str(tmp_path))  # what `resume` reads first
    with pytest.raises(CheckpointError):
        SearchDriver(SearchConfig(**CFG), SyntheticEvaluator(n_blocks=6), str(tmp_path)).run()  # a fresh start
    assert _listing(tmp_path) == before


def test_a_crash_before_the_first_commit_restarts_cleanly(tmp_path):
    """Generation-1 files without state.json and without committed.txt: nothing was ever committed."""
    _run(tmp_path, generations=1)
    (tmp_path / STATE).unlink()
    (tmp_path / COMMITTED).unlink()
    result = SearchDriver(SearchConfig(**dict(CFG, generations=1)), SyntheticEvaluator(n_blocks=6),
                          str(tmp_path)).run()
    assert result.generations == 1 and RunStore(str(tmp_path)).exists()


def test_cleanup_deletes_only_older_generations(tmp_path):
    _run(tmp_path, generations=2)
    newer = tmp_path / "history-000009.parquet"
    newer.write_bytes(b"not ours to delete")
    SearchDriver.resume(str(tmp_path), SyntheticEvaluator(n_blocks=6),
                        config=SearchConfig(**dict(CFG, generations=3))).run()
    assert newer.read_bytes() == b"not ours to delete"
    assert not (tmp_path / "history-000002.parquet").exists() and (tmp_path / "history-000003.parquet").exists()


def test_relative_model_is_saved_absolute(tiny_llava_dir, tmp_path, monkeypatch):
    from efficientllava.actors.config import RunConfig

    shutil.copytree(tiny_llava_dir, tmp_path / "models" / "tiny")
    monkeypatch.chdir(tmp_path)
    run = RunConfig.load(overrides={"engine.model": "models/tiny"})
    assert run.engine.model == str(tmp_path / "models" / "tiny")
    assert run.app()["engine"]["model"] == str(tmp_path / "models" / "tiny")  # what resume reads


def test_identity_covers_vision_tower_and_projector(tiny_llava_dir):
    import torch

    from efficientllava.prune_engine.models.loading import load_model, model_identity

    adapter, _ = load_model(str(tiny_llava_dir))
    base = model_identity(adapter, "m")
    for part in (adapter.model.model.vision_tower, adapter.model.model.multi_modal_projector):
        p = next(part.parameters())
        saved = p.detach().clone()
        with torch.no_grad():
            p.add_(0.01)
        assert model_identity(adapter, "m")["fingerprint"] != base["fingerprint"]
        with torch.no_grad():
            p.copy_(saved)
    assert model_identity(adapter, "m") == base


def test_run_name_is_read_back_from_the_run_directory(tmp_path):
    from efficientllava.actors.config import RayOptions
    from efficientllava.actors.run import RUN_NAME, _run_name

    (tmp_path / RUN_NAME).write_text("first-01000000\n")
    assert _run_name(RayOptions(), str(tmp_path)) == "first-01000000"  # no Ray needed: the stored name
    assert _run_name(RayOptions(name="mine"), str(tmp_path)) == "mine"


def test_tune_refuses_an_experiment_made_with_other_settings(tmp_path):
    from efficientllava.actors.config import ConfigError
    from efficientllava.actors.tune import TuneJob, check_same_settings, save_settings

    run = {"search": {"target": 0.5}, "engine": {"model": "smollm2"}, "ray": {"actors": 1}}
    job = TuneJob(run=run, storage=str(tmp_path), name="sweep")
    check_same_settings(job)  # nothing there yet
    save_settings(job)
    check_same_settings(job.model_copy(update={"max_concurrent": 2,  # runtime-only differences are fine
                                               "run": dict(run, ray={"actors": 2})}))
    other = job.model_copy(update={"run": dict(run, search={"target": 0.3})})
    with pytest.raises(ConfigError, match=r"search\.target \(0\.5 then, 0\.3 now\)"):
        check_same_settings(other)
    with pytest.raises(ConfigError, match="etas"):
        check_same_settings(job.model_copy(update={"etas": (0.0, 2.0)}))


@pytest.mark.parametrize("model, included", [("tiny", False), ("smol-llava", True)])
def test_report_appends_repository_benchmarks_only_for_smol_llava(tmp_path, model, included):
    from efficientllava.actors.cli import app

    run = make_run(tmp_path / "run")
    doc = json.loads((run / "policy.json").read_text())
    (run / "policy.json").write_text(json.dumps(dict(doc, model=model)))
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    assert ("(benchmark)" in (run / "report" / "report.md").read_text()) is included


def test_report_generation_axes_have_integer_ticks(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from efficientllava.actors import report

    captured = []
    real_close = plt.close
    plt.close = lambda fig=None: captured.append(fig)  # keep the figures to inspect their axes
    try:
        report.write_report(make_run(tmp_path / "run", generations=3), benchmarks=None)
    finally:
        plt.close = real_close
    fitness_ticks = captured[0].axes[0].get_xticks()
    assert all(float(t).is_integer() for t in fitness_ticks)
    colorbar_ticks = captured[2].axes[1].get_yticks()  # the neighbour-weights plot's generation colour bar
    assert all(float(t).is_integer() for t in colorbar_ticks)
    for fig in captured:
        real_close(fig)
