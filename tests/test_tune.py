"""`efficientllava tune`: an eta sweep as a Ray Tune experiment on a tiny LLaVA, then restored."""
import json
import math

import pytest
from typer.testing import CliRunner

from efficientllava.actors.tune import TuneJob, format_rows
from efficientllava.actors.cli import app


def test_tune_job_validation():
    with pytest.raises(ValueError, match="distinct"):
        TuneJob(run={}, etas=(0.5, 0.5))
    with pytest.raises(ValueError, match=">= 0"):
        TuneJob(run={}, etas=(-1.0,))
    with pytest.raises(ValueError, match="metric"):
        TuneJob(run={}, metric="bleu")
    rows = [{"eta": 0.0, "error": None, "ppl": 20.0, "easy_vqa": 0.5, "fashion_mnist": None, "mean_sparsity": 0.5,
             "fitness": -3.0, "l_proxy": 3.0, "g": -0.1},
            {"eta": 0.5, "error": None, "ppl": 19.0, "easy_vqa": 0.4, "fashion_mnist": None, "mean_sparsity": 0.5,
             "fitness": -3.1, "l_proxy": 3.05, "g": -0.1}]
    assert "best ppl" in format_rows(rows, "ppl").splitlines()[3]
    assert "best easy_vqa" in format_rows(rows, "easy_vqa").splitlines()[2]


@pytest.mark.ray
def test_tune_eta_sweep_and_restore(tiny_llava_dir, tmp_path):
    runner = CliRunner()
    args = ["tune", "--model", str(tiny_llava_dir), "--eta", "0,1", "--storage", str(tmp_path / "tune"),
            "--name", "sweep", "--population", "3", "--generations", "1", "--set", "search.elites=1",
            "--nsamples", "4", "--seqlen", "32", "--mm-calib", "easy-vqa:train", "--mm-samples", "4",
            "--mode", "sequential", "--actors", "1", "--eval-segments", "2", "--eval-seqlen", "32",
            "--eval-vqa", "4", "--json", str(tmp_path / "rows.json")]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [r["eta"] for r in rows] == [0.0, 1.0]
    for r in rows:
        assert r["error"] is None
        assert math.isfinite(r["ppl"]) and 0 <= r["easy_vqa"] <= 1
        assert r["mean_sparsity"] == pytest.approx(0.5, abs=0.011)
        doc = json.loads((tmp_path / "tune" / "sweep" / "searches" / f"eta={r['eta']:g}" / "policy.json").read_text())
        assert doc["eta"] == r["eta"]  # each trial searched with its own eta
        assert r["fitness"] == pytest.approx(-doc["l_proxy"] - r["eta"] * doc["srm_scale"] * doc["g"])
    stamp = (tmp_path / "tune" / "sweep" / "searches" / "eta=0" / "policy.json").stat().st_mtime_ns
    # the same command again restores the experiment: the finished trials are not searched again
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    assert "restoring" in second.output
    again = json.loads((tmp_path / "rows.json").read_text())
    assert [(r["eta"], r["ppl"]) for r in again] == [(r["eta"], r["ppl"]) for r in rows]
    assert (tmp_path / "tune" / "sweep" / "searches" / "eta=0" / "policy.json").stat().st_mtime_ns == stamp
    # other settings under the same name: refused with the difference named, nothing restored
    third = runner.invoke(app, [*args, "--target", "0.3"])
    assert third.exit_code == 2 and "other settings" in third.output and "target" in third.output, third.output


def test_an_interrupted_trial_is_reported_unfinished_and_the_sweep_writes_nothing(monkeypatch, tmp_path):
    """A trial without a finished search's result (the experiment was interrupted) is an error row that says to
    resume, never a result; benchmarks/eta_sweep.py then exits non-zero and writes no results file."""
    from types import SimpleNamespace

    import benchmarks.common as common
    import benchmarks.eta_sweep as eta_sweep
    from efficientllava.actors import tune as tune_module

    done = SimpleNamespace(config={"eta": 0.0}, error=None, metrics={"ppl": 10.0, "run_dir": str(tmp_path)})
    cut = SimpleNamespace(config={"eta": 0.5}, error=None, metrics={})
    failed = SimpleNamespace(config={"eta": 1.0}, error=RuntimeError("boom\nstack"), metrics=None)
    rows = [tune_module.trial_row(r) for r in (done, cut, failed)]
    assert [r["error"] for r in rows] == [None, tune_module.NOT_FINISHED, "boom"]
    assert rows[0]["ppl"] == 10.0 and rows[1]["ppl"] is None

    monkeypatch.setattr(tune_module, "run_tune", lambda job, log=print: rows)
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    written = []
    monkeypatch.setattr(eta_sweep, "write_results", lambda *a, **k: written.append(a))
    assert eta_sweep.main(["--eta", "0,0.5,1", "--storage", str(tmp_path / "tune")]) == 1
    assert written == [] and not (tmp_path / "results").exists()


def test_finished_only_writes_a_partial_sweep_labelled_as_such(monkeypatch, tmp_path):
    """--finished-only runs nothing and writes the finished trials, naming the unfinished ones; with fewer than two
    finished trials it writes nothing."""
    from types import SimpleNamespace

    import benchmarks.eta_sweep as eta_sweep
    from efficientllava.actors import tune as tune_module

    def finished(eta, ppl):
        run_dir = tmp_path / f"eta={eta:g}"
        run_dir.mkdir()
        (run_dir / "policy.json").write_text(json.dumps({"levels": [2, 2, 1 if eta else 3]}))
        metrics = {m: 0.5 for m in tune_module.METRICS} | {"ppl": ppl, "run_dir": str(run_dir)}
        return SimpleNamespace(config={"eta": eta}, error=None, metrics=metrics)

    cut = SimpleNamespace(config={"eta": 1.0}, error=None, metrics={})
    rows = [tune_module.trial_row(r) for r in (finished(0.0, 300.0), finished(0.5, 250.0), cut)]
    monkeypatch.setattr(tune_module, "finished_rows", lambda job: rows)
    monkeypatch.setattr(tune_module, "run_tune", lambda job, log=print: pytest.fail("ran the experiment"))
    written = []
    monkeypatch.setattr(eta_sweep, "write_results", lambda *a, **k: written.append(a))
    assert eta_sweep.main(["--eta", "0,0.5,1", "--storage", str(tmp_path / "tune"), "--finished-only"]) == 0
    (name, _, table, data, notes), = written
    assert name == "eta_sweep" and data["unfinished"] == [1.0] and [r["eta"] for r in data["rows"]] == [0.0, 0.5]
    assert notes.startswith("PARTIAL SWEEP: the trials eta = 1 did not finish") and "validation ppl: 0.5" in notes
    # the other trial against the default eta (0.5): perplexity in % (300 against 250), accuracies in points
    assert data["vs_default"]["0"]["ppl"] == pytest.approx(20.0) and data["vs_default"]["0"]["easy_vqa"] == 0.0
    assert "Against the default eta 0.5: eta 0: ppl +20.0%" in notes
    written.clear()
    assert eta_sweep.main(["--eta", "0,0.5,1", "--storage", str(tmp_path / "tune"), "--finished-only",
                           "--results", "eta_sweep_s1"]) == 0
    assert written[0][0] == "eta_sweep_s1"
    written.clear()
    monkeypatch.setattr(tune_module, "finished_rows", lambda job: rows[1:])
    assert eta_sweep.main(["--eta", "0,0.5,1", "--storage", str(tmp_path / "tune"), "--finished-only"]) == 1
    assert written == []


def test_finished_rows_names_a_trial_that_never_reported(monkeypatch, tmp_path):
    """A restored experiment's trial that never reported has no config: finished_rows still names it (NOT_FINISHED,
    from the job's etas) beside the finished ones, and runs nothing."""
    from types import SimpleNamespace

    from ray import tune

    from efficientllava.actors import tune as tune_module

    done = SimpleNamespace(config={"eta": 0.0}, error=None, metrics={"ppl": 10.0, "run_dir": str(tmp_path)})
    never = SimpleNamespace(config=None, error=None, metrics=None)

    class Restored:
        can_restore = staticmethod(lambda path: True)
        restore = classmethod(lambda cls, path, trainable: cls())

        def get_results(self):
            return [never, done]

        def fit(self):
            pytest.fail("ran the experiment")

    monkeypatch.setattr(tune, "Tuner", Restored)
    monkeypatch.setattr(tune_module, "check_same_settings", lambda job: None)
    job = SimpleNamespace(experiment_dir=tmp_path, etas=(0.0, 0.5))
    rows = tune_module.finished_rows(job)
    assert [(r["eta"], r["error"]) for r in rows] == [(0.0, None), (0.5, tune_module.NOT_FINISHED)]
