"""The benchmarks' result cache (benchmarks/variants.py): a cached variant is reused only for the
settings that decide its result."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.variants import Settings


def test_key_follows_the_resolved_settings(monkeypatch):
    from efficientllava.actors import config

    base = Settings()
    key, uniform_key = base.key("full", 0.7), base.key("uniform", 0.7)
    # the same resolved configuration reached by an explicit override: the same key
    mm = 64  # DataConfig's default
    assert Settings(data={**base.data, "mm_samples": mm}).key("full", 0.7) == key
    # a runtime-only setting: the same key
    assert Settings(actors=1).key("full", 0.7) == Settings(actors=2).key("full", 0.7)
    # what changes a result changes the key: seed, target, variant, held-out data, a setting
    assert base.model_copy(update={"seed": 1}).key("full", 0.7) != key
    assert base.key("full", 0.5) != key
    assert base.key("no_evo", 0.7) != key
    assert Settings(heldout=base.heldout.model_copy(update={"vqa": 10})).key("full", 0.7) != key
    assert Settings(data={**base.data, "mm_samples": mm + 1}).key("full", 0.7) != key
    # a setting added later enters the key only when set: earlier finished runs stay valid
    assert Settings(data={**base.data, "mm_balance": False}).key("full", 0.7) == key
    assert Settings(data={**base.data, "mm_balance": True}).key("full", 0.7) != key
    assert Settings(data={**base.data, "mm_balance": True}).key("uniform", 0.7) != uniform_key
    assert Settings(data={**base.data, "mm_rephrase": 0.0}).key("full", 0.7) == key
    assert Settings(data={**base.data, "mm_rephrase": 0.5}).key("full", 0.7) != key
    assert base.key("full_rephrase", 0.7) == Settings(data={**base.data, "mm_rephrase": 0.5}).key("full_rephrase", 0.7)
    # keys name cached rows and finished runs on disk: a refactor must not move them (these two name the rows that
    # benchmarks/results/ablation_val_07.json was made from; a deliberate change of what decides a result updates them)
    val = Settings(heldout=base.heldout.model_copy(update={"split": "val"}))
    assert (val.key("uniform", 0.7), val.key("full", 0.7)) == ("uniform-0.7-s0-54813dc273", "full-0.7-s0-e3977810be")
    # a changed preset default (no override anywhere) must not hit the old cache entry
    monkeypatch.setitem(config.PRESETS, "default", {**config.PRESETS["default"], "data.mm_samples": mm + 1})
    assert Settings().run_config(0.7).data.mm_samples == mm + 1
    assert Settings().key("full", 0.7) != key
    assert Settings().key("uniform", 0.7) != uniform_key  # the baselines calibrate on the same data
    assert Settings().key("dense", 0.0) == base.key("dense", 0.0)  # the dense model has no settings


def test_the_baselines_key_ignores_search_and_engine_settings():
    base = Settings()
    for variant in ("uniform", "owl"):
        key = base.key(variant, 0.7)
        assert Settings(search={"projector_guard": False}, engine={"monitor_samples": 4}).key(variant, 0.7) == key
        assert Settings(data={**base.data, "seed": 5}).key(variant, 0.7) != key
        assert base.key(variant, 0.5) != key
    assert Settings(search={"projector_guard": False}).key("full", 0.7) != base.key("full", 0.7)


@pytest.mark.parametrize("variant", ["dense", "uniform", "owl", "auto_wo_gen", "full", "no_evo", "evo_wo_ub",
                                     "evo_masks_only", "evo_answers_only", "evo_both", "evo_neither", "full_ce_fitness"])
def test_every_variant_has_a_key(variant):
    key = Settings().key(variant, 0.0 if variant == "dense" else 0.5)
    assert key.startswith(f"{variant}-")


def test_cached_only_runs_nothing(tmp_path):
    import json

    from benchmarks.variants import run_variant

    s = Settings()
    assert run_variant("full", 0.7, s, tmp_path, log=lambda m: None, cached_only=True) is None
    assert list(tmp_path.iterdir()) == []  # nothing written, nothing run
    row = {"variant": "full", "target": 0.7, "seed": 0, "ppl": 1.0}
    (tmp_path / f"{s.key('full', 0.7)}.json").write_text(json.dumps(row))
    assert run_variant("full", 0.7, s, tmp_path, log=lambda m: None, cached_only=True) == row
    assert run_variant("full", 0.7, s.model_copy(update={"seed": 1}), tmp_path, log=lambda m: None,
                       cached_only=True) is None


def fake_search(monkeypatch, calls: list, fidelity=("full", "screen", "screen")):
    """run_search / resume_search stand-ins: they record the call and leave what a real run leaves in its
    directory (a checkpoint's state file and the history); held-out metrics are a constant."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from efficientllava.actors import run as run_module
    from efficientllava.prune_engine.evaluation import heldout
    from efficientllava.search.checkpoint import STATE

    def search(kind):
        def call(*args, **kwargs):
            out = Path(args[1] if kind == "run" else args[0])
            calls.append((kind, str(out)))
            out.mkdir(parents=True, exist_ok=True)
            (out / STATE).write_text('{"elapsed_s": 12.5}')  # the search's generations, over all its sessions
            pq.write_table(pa.table({"fidelity": list(fidelity)}), out / "history.parquet")
            if "log" in kwargs:
                kwargs["log"]("generation 1/3: best F -1.0")
            return {"policy": {"ratios": [0.7], "fitness": 1.0, "l_proxy": 1.0, "g": 0.0}, "model_dir": str(out),
                    "stats": {"candidates": 1, "screened": 0}}  # a resumed pool's own count: not the row's
        return call

    monkeypatch.setattr(run_module, "run_search", search("run"))
    monkeypatch.setattr(run_module, "resume_search", search("resume"))
    monkeypatch.setattr(heldout, "heldout_metrics", lambda model, h: {"ppl": 2.0, "sparsity": 0.7})


def test_an_interrupted_search_is_resumed_and_a_fresh_one_started(tmp_path, monkeypatch):
    """A search variant whose run directory holds a checkpoint (an interrupted benchmark) goes on from it; without
    one the directory is cleared and the search starts; the row is cached either way, and counts every candidate
    of the run's history (the resumed pool's own count would miss the generations before the resume)."""
    import json

    from benchmarks import variants
    from efficientllava.search.checkpoint import STATE

    calls = []
    fake_search(monkeypatch, calls)
    s = Settings()
    out = tmp_path / s.search_key("full", 0.7)
    out.mkdir()
    (out / STATE).write_text("{}")  # a checkpoint's state file: the search was interrupted
    row = variants.run_variant("full", 0.7, s, tmp_path, log=lambda m: None)
    assert calls == [("resume", str(out))] and row["ppl"] == 2.0
    cached = json.loads((tmp_path / f"{s.key('full', 0.7)}.json").read_text())
    assert (cached["evaluated"], cached["screened"], cached["run"], cached["search_seconds"]) == (3, 2, out.name, 12.5)
    stale = tmp_path / s.search_key("no_evo", 0.7)
    stale.mkdir()
    (stale / "half-written").write_text("")  # no checkpoint: cleared, started again
    variants.run_variant("no_evo", 0.7, s, tmp_path, log=lambda m: None)
    assert calls[-1] == ("run", str(stale)) and not (stale / "half-written").exists()


def test_one_search_serves_every_evaluation_of_it(tmp_path, monkeypatch):
    """The run directory is named by the search alone: evaluated on validation and then on test, a search runs once
    (the second evaluation re-exports from the finished run); each evaluation has its own cached row."""
    from benchmarks import variants

    calls = []
    fake_search(monkeypatch, calls)
    val = Settings(heldout=Settings().heldout.model_copy(update={"split": "val"}))
    test = Settings(heldout=Settings().heldout.model_copy(update={"split": "test"}))
    assert val.search_key("full", 0.7) == test.search_key("full", 0.7) and val.key("full", 0.7) != test.key("full", 0.7)
    assert Settings(owl_lambda=0.1).search_key("full", 0.7) == val.search_key("full", 0.7)
    assert val.search_key("full", 0.5) != val.search_key("full", 0.7)
    assert val.model_copy(update={"seed": 1}).search_key("full", 0.7) != val.search_key("full", 0.7)
    assert val.search_key("no_evo", 0.7) != val.search_key("full", 0.7)
    variants.run_variant("full", 0.7, val, tmp_path, log=lambda m: None)
    variants.run_variant("full", 0.7, test, tmp_path, log=lambda m: None)
    run = str(tmp_path / val.search_key("full", 0.7))
    assert calls == [("run", run), ("resume", run)]
    assert (tmp_path / f"{val.key('full', 0.7)}.json").exists() and (tmp_path / f"{test.key('full', 0.7)}.json").exists()
    assert (tmp_path / val.search_key("full", 0.7) / "history.parquet").exists()  # the run stays, its model goes


def test_a_run_in_its_old_directory_is_moved_not_lost(tmp_path, monkeypatch):
    """Runs made while a search's directory was named by its evaluation's cache key are found and moved."""
    from benchmarks import variants
    from efficientllava.search.checkpoint import STATE

    calls = []
    fake_search(monkeypatch, calls)
    s = Settings()
    legacy = tmp_path / s.key("full", 0.7)
    legacy.mkdir()
    (legacy / STATE).write_text("{}")
    lines = []
    variants.run_variant("full", 0.7, s, tmp_path, log=lines.append)
    assert calls == [("resume", str(tmp_path / s.search_key("full", 0.7)))] and not legacy.exists()
    assert any("moves from" in line for line in lines)


def test_a_preset_resolving_to_a_variant_reuses_its_search():
    """`quality` is auto_wo_gen_long's settings under the default preset: one search serves both."""
    assert Settings(preset="quality").search_key("preset", 0.7) == Settings().search_key("auto_wo_gen_long", 0.7)
    assert Settings(preset="quality").key("preset", 0.7) != Settings().key("auto_wo_gen_long", 0.7)


def test_a_search_variant_logs_its_generations_into_the_benchmark_log(tmp_path, monkeypatch):
    """A search variant runs for up to an hour: its own lines (one a generation) reach the benchmark's log,
    named by variant, target and seed, whether it starts or resumes."""
    from benchmarks import variants
    from efficientllava.search.checkpoint import STATE

    fake_search(monkeypatch, [])
    s = Settings()
    lines = []
    variants.run_variant("full", 0.7, s, tmp_path, log=lines.append)
    assert "    full at 0.7 (seed 0): generation 1/3: best F -1.0" in lines
    resumed = tmp_path / s.search_key("no_evo", 0.7)
    resumed.mkdir()
    (resumed / STATE).write_text("{}")
    lines.clear()
    variants.run_variant("no_evo", 0.7, s, tmp_path, log=lines.append)
    assert "  no_evo at 0.7 (seed 0): resuming the search in " + str(resumed) in lines
    assert "    no_evo at 0.7 (seed 0): generation 1/3: best F -1.0" in lines


def test_every_search_variant_resolves_and_is_labelled():
    """A variant's overrides are real settings with valid values (a misspelt key or a bad value is a config error
    here, not an hour into a benchmark), every variant has a label for the tables, and no two variants make the
    same search (their runs would be one directory)."""
    from benchmarks.variants import LABELS, SEARCHES

    s = Settings()
    keys = {}
    for variant, overrides in SEARCHES.items():
        run = s.run_config(0.7, overrides)
        for dotted, value in overrides.items():
            section, leaf = dotted.split(".")
            assert getattr(getattr(run, section), leaf) == value, (variant, dotted)
        assert variant in LABELS, variant
        keys.setdefault(s.search_key(variant, 0.7), []).append(variant)
    # one search each, but `preset`: under the default preset it is Full's search, and shares its run
    assert sorted(sorted(v) for v in keys.values() if len(v) > 1) == [["full", "preset"]]


def test_provenance_names_the_rows_another_machine_made():
    from benchmarks.common import machine_label
    from benchmarks.variants import provenance

    here = machine_label()
    assert "," in here and here.split(",")[0].strip()  # the CPU's name, then its instruction sets
    rows = [{"variant": "dense", "target": None, "seed": 0, "computed_on": here},
            {"variant": "uniform", "target": 0.7, "seed": 0, "computed_on": "AMD EPYC, AVX2 only"},
            {"variant": "full", "target": 0.7, "seed": 1, "computed_on": "AMD EPYC, AVX2 only"},
            {"variant": "full", "target": 0.7, "seed": 0}]
    note = provenance(rows, here)
    assert "Rows computed on another machine (AMD EPYC, AVX2 only): uniform at 0.7 (seed 0), full at 0.7 (seed 1)." in note
    assert "do not record their machine" in note and "full at 0.7 (seed 0)" in note
    assert "dense" not in note
    assert provenance(rows[:1], here) == ""
    twice = [rows[1], dict(rows[1])]  # one row reported in two cells (a cross-task uniform beside each variant)
    assert provenance(twice, here) == "Rows computed on another machine (AMD EPYC, AVX2 only): uniform at 0.7 (seed 0)."
    restored = [{"variant": "uniform", "target": 0.5, "seed": 2, "restored_from": "Intel Xeon, AMX (commit abc1234)"}]
    assert provenance(restored, here) == (
        "Rows that do not record their machine, restored from a results file written on Intel Xeon, AMX "
        "(commit abc1234) (the file's machine, possibly not the row's): uniform at 0.5 (seed 2).")


def test_a_longer_search_grows_the_same_search_run_for_fewer_generations(tmp_path, monkeypatch):
    """A search asked for more generations than a run in the work directory has done, at otherwise identical
    settings, copies that run (the one with the most generations; the source stays) and resumes it to the asked
    length; another search, another calibration draw, or a run past the asked length is never grown."""
    from benchmarks import variants
    from efficientllava.actors import run as run_module
    from efficientllava.search.checkpoint import HISTORY_SCHEMA, STATE, RunStore

    def checkpoint(name: str, settings: Settings, generation: int) -> None:
        run = settings.run_config(0.7, variants.SEARCHES["full"])
        RunStore(str(tmp_path / name)).save({"generation": generation, "config": run.search.to_dict(),
                                             "app": run.app(), "elapsed_s": 60.0 * generation},
                                            HISTORY_SCHEMA.empty_table(), None)

    longer = Settings(search={"generations": 6})
    checkpoint("anytime-full-0.7-s0-a", Settings(), 2)  # the default's 3-generation search, 2 generations done
    checkpoint("search-0.7-s0-b", Settings(), 3)  # the same search finished: the run to grow
    checkpoint("search-0.7-s0-c", Settings(search={"generations": 6, "span": 0.2}), 5)  # another search
    checkpoint("search-0.7-s1-d", Settings(seed=1), 4)  # another calibration draw
    checkpoint("search-0.7-s0-e", Settings(search={"generations": 9}), 7)  # past the asked length
    (tmp_path / "not-a-run").mkdir()
    assert variants.shorter_run(longer, "full", 0.7, tmp_path) == (tmp_path / "search-0.7-s0-b", 3)
    assert variants.shorter_run(Settings(search={"generations": 2}), "full", 0.7, tmp_path) == \
        (tmp_path / "anytime-full-0.7-s0-a", 2)
    assert variants.shorter_run(Settings(seed=2), "full", 0.7, tmp_path) is None

    calls: list = []
    fake_search(monkeypatch, calls)
    asked = []
    resume = run_module.resume_search
    monkeypatch.setattr(run_module, "resume_search", lambda *a, **k: asked.append(k["generations"]) or resume(*a, **k))
    lines: list = []
    variants.run_variant("full", 0.7, longer, tmp_path, log=lines.append)
    grown = tmp_path / longer.search_key("full", 0.7)
    assert calls == [("resume", str(grown))] and asked == [6]
    assert any("grows search-0.7-s0-b" in line for line in lines)
    assert (tmp_path / "search-0.7-s0-b" / STATE).is_file() and (grown / "history-000003.parquet").is_file()
