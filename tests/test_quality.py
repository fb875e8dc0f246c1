"""benchmarks/quality.py: a preset against uniform SparseGPT and the default preset's Full, on stand-in rows."""
from __future__ import annotations

import pytest

import benchmarks.quality as quality

#: stand-in held-out numbers per (model, target): ppl, easy-vqa, Fashion-MNIST, and the shifted columns
ROWS = {
    ("uniform", 0.7): dict(ppl=400.0, easy_vqa=0.30, fashion_mnist=0.38, ppl_pydoc=410.0, easy_vqa_rephrased=0.25,
                           fashion_mnist_rephrased=0.38),
    ("default", 0.7): dict(ppl=250.0, easy_vqa=0.55, fashion_mnist=0.38, ppl_pydoc=300.0, easy_vqa_rephrased=0.45,
                           fashion_mnist_rephrased=0.39),
    ("uniform", 0.5): dict(ppl=45.0, easy_vqa=0.90, fashion_mnist=0.70, ppl_pydoc=50.0, easy_vqa_rephrased=0.80,
                           fashion_mnist_rephrased=0.70),
    ("default", 0.5): dict(ppl=43.0, easy_vqa=0.91, fashion_mnist=0.70, ppl_pydoc=49.0, easy_vqa_rephrased=0.80,
                           fashion_mnist_rephrased=0.70),
}


def _fake(preset_rows: dict, calls: list):
    def run(variant, target, settings, work, log=print, cached_only=False):
        name = {"uniform": "uniform", "full": "default", "preset": "preset"}[variant]
        calls.append((variant, settings.preset, settings.seed, target))
        base = preset_rows[target] if name == "preset" else ROWS[(name, target)]
        # seeds move every number a little (the means stay the stand-in's)
        shift = {0: -0.01, 1: 0.0, 2: 0.01}[settings.seed]
        row = {m: v * (1 + shift) if m.startswith("ppl") else v + shift for m, v in base.items()}
        if name == "preset":  # the search's generations took an hour; producing the row here a minute
            row["search_seconds"] = 3600.0
        return {"variant": variant, "target": target, "seed": settings.seed, "sparsity": target, "prune_seconds": 60.0,
                **row}
    return run


@pytest.fixture
def harness(monkeypatch, tmp_path):
    written = {}
    monkeypatch.setattr(quality, "ray_started", lambda settings: None)
    monkeypatch.setattr(quality, "write_results", lambda name, title, table, data, notes: written.update(
        name=name, table=table, data=data, notes=notes))

    def main(preset_rows, calls, *extra):
        monkeypatch.setattr(quality, "run_variant", _fake(preset_rows, calls))
        return quality.main(["--preset", "paper", "--targets", "0.7,0.5", "--seeds", "0,1,2", "--work",
                             str(tmp_path), *extra])
    return main, written


def test_a_preset_that_meets_every_check(harness):
    main, written = harness
    good = {0.7: {**ROWS[("default", 0.7)], "ppl": 190.0, "easy_vqa": 0.56},
            0.5: {**ROWS[("default", 0.5)], "ppl": 42.0}}
    calls = []
    assert main(good, calls) == 0
    # uniform and the default's Full under the default preset, the asked preset as it is; every seed, every target
    assert sorted(set(calls)) == sorted({(v, p, s, t) for v, p in (("uniform", "default"), ("full", "default"),
                                                                    ("preset", "paper"))
                                         for s in (0, 1, 2) for t in (0.7, 0.5)})
    checks = written["data"]["checks"]
    assert all(c["ok"] for c in checks) and "All" in written["notes"]
    ratio = next(c for c in checks if c["check"].startswith("ppl <= 0.5 x uniform"))
    assert ratio["value"] == pytest.approx(190.0 / 400.0)
    assert {c["check"] for c in checks if c["target"] == 0.5} >= {"ppl <= default's Full",
                                                                   "ppl_pydoc (shifted) not worse than uniform"}
    assert written["data"]["results"]["0.7"]["vs_uniform"]["ppl"]["wins"] == 3
    assert written["data"]["results"]["0.7"]["wall_s"] == [60.0, 60.0, 60.0]
    assert written["data"]["results"]["0.7"]["search_s"] == [3600.0, 3600.0, 3600.0]
    preset_line = next(line for line in written["table"].splitlines() if "`paper` preset" in line)
    default_line = next(line for line in written["table"].splitlines() if "`default` preset" in line)
    assert preset_line.endswith("| 60, 60, 60 | 1, 1, 1 |") and default_line.endswith("| - | 1, 1, 1 |")
    # the stand-in rows record no machine: the notes say so, naming each (a real row records where it was made)
    assert "do not record their machine" in written["notes"] and "preset at 0.5 (seed 2)" in written["notes"]


def test_each_failed_check_is_named_and_the_run_fails(harness):
    main, written = harness
    bad = {0.7: {**ROWS[("default", 0.7)], "ppl": 210.0, "fashion_mnist": 0.36, "easy_vqa_rephrased": 0.20},
           0.5: {**ROWS[("default", 0.5)], "ppl": 44.0}}
    assert main(bad, []) == 1
    failed = {(c["target"], c["check"]) for c in written["data"]["checks"] if not c["ok"]}
    assert failed == {(0.7, "ppl <= 0.5 x uniform"), (0.7, "fashion_mnist >= uniform"),
                      (0.7, "fashion_mnist >= default's Full - 1 points"),
                      (0.7, "easy_vqa_rephrased (shifted) not worse than uniform"),
                      (0.5, "ppl <= default's Full")}
    assert "5 of" in written["notes"] and "**no**" in written["table"]


def test_the_slack_is_in_points(harness):
    """Half a point below the default's Full passes with the default 1-point slack, fails with none."""
    main, written = harness
    close = {0.7: {**ROWS[("default", 0.7)], "ppl": 190.0, "easy_vqa": 0.545},
             0.5: {**ROWS[("default", 0.5)], "ppl": 42.0}}
    assert main(close, []) == 0
    assert main(close, [], "--slack", "0") == 1
    assert {c["check"] for c in written["data"]["checks"] if not c["ok"]} == {"easy_vqa >= default's Full - 0 points"}


@pytest.mark.parametrize("preset, message", [("default", "is the reference itself"), ("nope", "unknown preset")])
def test_a_preset_that_cannot_be_compared_is_refused(preset, message, capsys):
    with pytest.raises(SystemExit) as e:
        quality.main(["--preset", preset])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_the_preset_variant_runs_the_preset_as_it_is():
    from benchmarks.variants import SEARCHES, Settings

    s = Settings(preset="paper")
    assert s.run_config(0.7, SEARCHES["preset"]) == s.run_config(0.7)
    assert s.key("preset", 0.7) != s.key("full", 0.7)


def test_cross_task_runs_uniform_and_the_preset_on_each_single_set_proxy_and_checks_the_other_set(monkeypatch,
                                                                                                 tmp_path):
    """--cross-task: per seed, uniform (the ablation's rows: default settings) and the preset with one set's proxy;
    the preset's accuracy on the other set is checked against uniform's; a loss there fails the run."""
    written, calls = {}, []
    monkeypatch.setattr(quality, "ray_started", lambda settings: None)
    monkeypatch.setattr(quality, "write_results", lambda name, title, table, data, notes: written.update(
        table=table, data=data, notes=notes))
    good = {0.7: {**ROWS[("default", 0.7)], "ppl": 190.0, "easy_vqa": 0.56}}
    in_distribution = _fake(good, [])

    def run(variant, target, settings, work, log=print, cached_only=False):
        proxy = settings.data["mm_calib"]
        calls.append((variant, settings.preset, settings.seed, proxy))
        row = in_distribution(variant, target, settings, work)
        if variant == "preset" and proxy == "fashion-mnist:train":  # cross-task: behind uniform on easy-vqa
            row["easy_vqa"] = row["easy_vqa_rephrased"] = 0.1
        return row

    monkeypatch.setattr(quality, "run_variant", run)
    assert quality.main(["--preset", "paper", "--targets", "0.7", "--seeds", "0,1", "--cross-task",
                         "--work", str(tmp_path)]) == 1
    for proxy in ("easy-vqa:train", "fashion-mnist:train"):
        assert {(v, p, s) for v, p, s, x in calls if x == proxy} == {
            (v, p, s) for v, p in (("uniform", "default"), ("preset", "paper")) for s in (0, 1)}
    cross = {c["check"]: c["ok"] for c in written["data"]["checks"] if c["check"].startswith("cross-task")}
    assert cross == {"cross-task (easy-vqa proxy) fashion_mnist not worse than uniform": True,
                     "cross-task (easy-vqa proxy) fashion_mnist_rephrased not worse than uniform": True,
                     "cross-task (fashion-mnist proxy) easy_vqa not worse than uniform": False,
                     "cross-task (fashion-mnist proxy) easy_vqa_rephrased not worse than uniform": False}
    cell = written["data"]["cross_task"]["0.7"]["fashion-mnist"]
    assert cell["paired"]["easy_vqa"]["wins"] == 0 and cell["seeds"] == [0, 1]
    assert "Cross-task" in written["table"] and "`paper` − uniform per seed" in written["table"]
