"""benchmarks/ablation.py's verdict on the paper's ordering (Full ahead of every ablated variant)."""
from __future__ import annotations

import pytest

from benchmarks.ablation import ordering


def _run(seed=0, ppl=100.0, easy=0.5, fashion=0.4):
    return {"seed": seed, "ppl": ppl, "easy_vqa": easy, "fashion_mnist": fashion}


def test_ordering_holds_only_when_full_is_ahead_on_every_metric():
    full = {"ppl_sd": 5.0, "easy_vqa_sd": 0.02, "fashion_mnist_sd": 0.02}
    first = {"full": _run(), "auto_wo_gen": _run(ppl=120.0, easy=0.45, fashion=0.39),
             "no_evo": _run(ppl=130.0, easy=0.40, fashion=0.30)}
    text = ordering(0.7, first, full)
    assert "holds on every metric" in text and "Full behind" not in text
    assert "fashion_mnist Full ahead (within sd)" in text  # 0.01 < sd 0.02
    first["evo_wo_ub"] = _run(ppl=90.0, easy=0.55, fashion=0.39)
    text = ordering(0.7, first, full)
    assert "does not hold on every metric" in text
    assert "Evo w/o UB (c_m equal): ppl Full behind, easy_vqa Full behind, fashion_mnist Full ahead (within sd)" in text
    assert ordering(0.5, {"full": _run()}, full) == "At 0.5: no ablated variant to order."


def test_paired_differences_per_seed_mean_sd_and_wins():
    from benchmarks.variants import paired

    uniform = [{"seed": s, "ppl": 100.0, "easy_vqa": 0.5, "fashion_mnist": 0.4} for s in range(5)]
    full = [{"seed": s, "ppl": p, "easy_vqa": a, "fashion_mnist": 0.4}
            for s, p, a in zip(range(5), (80.0, 90.0, 110.0, 70.0, 100.0), (0.6, 0.4, 0.55, 0.5, 0.52))]
    out = paired(uniform, list(reversed(full)))  # matched by seed, not by position
    assert out["seeds"] == [4, 3, 2, 1, 0]
    ppl, acc = out["ppl"], out["easy_vqa"]
    assert sorted(ppl["per_seed"]) == pytest.approx(sorted([-20.0, -10.0, 10.0, -30.0, 0.0]))
    assert ppl["mean"] == pytest.approx(-10.0) and ppl["wins"] == 3 and ppl["n"] == 5  # a tie is no win
    assert ppl["sd"] == pytest.approx(15.811, abs=1e-3)
    assert acc["wins"] == 3 and acc["mean"] == pytest.approx(1.4) and acc["unit"] == "points"
    assert out["fashion_mnist"]["wins"] == 0 and "ppl_pydoc" not in out  # a metric the rows lack is left out
    assert "draw_noise" not in acc  # without the question count there is none


def test_one_draws_question_noise_is_the_binomial_bound_on_accuracies_only():
    """1.96 x sqrt((p_b (1 - p_b) + p_o (1 - p_o)) / n) in points, averaged over the draws; none for perplexity."""
    from benchmarks.ablation import paired_table
    from benchmarks.variants import paired

    base = [{"seed": 0, "ppl": 100.0, "easy_vqa": 0.5}, {"seed": 1, "ppl": 100.0, "easy_vqa": 0.9}]
    other = [{"seed": 0, "ppl": 90.0, "easy_vqa": 0.5}, {"seed": 1, "ppl": 90.0, "easy_vqa": 0.9}]
    out = paired(base, other, questions=1000)
    by_hand = [1.96 * 100 * (2 * p * (1 - p) / 1000) ** 0.5 for p in (0.5, 0.9)]  # 4.38 and 2.63 points
    assert out["easy_vqa"]["draw_noise"] == pytest.approx(sum(by_hand) / 2)
    assert "draw_noise" not in out["ppl"]
    table = paired_table({0.7: out})
    assert "question noise (95%)" in table and f"± {sum(by_hand) / 2:.1f} pts" in table


def _stand_in_runs(calls: list):
    """A run_variant that records its calls and returns stand-in rows: Full ahead on seeds 1, 2, level on seed 0."""
    def fake_run(variant, target, settings, work, log=print, cached_only=False):
        calls.append((variant, target, settings.seed, settings.data["mm_calib"]))
        bonus = 0.01 * settings.seed if variant == "full" else 0.0
        row = {"variant": variant, "target": target, "seed": settings.seed, "sparsity": target or 0.0, "ppl": 100.0,
               "easy_vqa": 0.5 + bonus, "fashion_mnist": 0.4 + bonus, "easy_vqa_rephrased": 0.45,
               "fashion_mnist_rephrased": 0.35 - bonus}
        if variant not in ("dense", "uniform"):  # a search: its policy and evaluations
            row.update(ratios=[target], evaluated=10, screened=0)
        return row
    return fake_run


def test_the_verdict_compares_with_the_seeds_sd_only_when_there_are_seeds(monkeypatch, tmp_path):
    import benchmarks.ablation as ablation

    notes = []
    monkeypatch.setattr(ablation, "run_variant", _stand_in_runs([]))
    monkeypatch.setattr(ablation, "write_results", lambda name, title, table, data, n: notes.append(n))
    for seeds in ("1", "0,1,2"):
        assert ablation.main(["--targets", "0.7", "--variants", "uniform,full", "--seeds", seeds, "--seed", "1",
                              "--cached-only", "--work", str(tmp_path)]) == 0
    one, three = notes
    assert "one seed: no sd to compare with" in one and "the seeds' sd" not in one
    assert "the seeds' sd" in three and "one seed" not in three


def test_cross_task_runs_each_single_set_proxy_and_pairs_the_other_sets_accuracy(monkeypatch, tmp_path):
    """--cross-task: uniform and Full per seed with the proxy of one set only; the JSON's cross_task key holds,
    per target and proxy, the other set's accuracy paired seed by seed (and only that set's)."""
    import benchmarks.ablation as ablation

    calls, written = [], {}
    monkeypatch.setattr(ablation, "run_variant", _stand_in_runs(calls))
    monkeypatch.setattr(ablation, "write_results", lambda name, title, table, data, notes: written.update(
        name=name, table=table, data=data))
    assert ablation.main(["--targets", "0.7", "--variants", "uniform,full", "--seeds", "0,1,2", "--cross-task",
                          "--cached-only", "--work", str(tmp_path)]) == 0
    proxies = {c[3] for c in calls if c[0] != "dense"}
    assert proxies == {"easy-vqa:train,fashion-mnist:train", "easy-vqa:train", "fashion-mnist:train"}
    assert sorted(c[2] for c in calls if c[3] == "easy-vqa:train") == [0, 0, 1, 1, 2, 2]  # uniform and Full per seed
    cross = written["data"]["cross_task"]["0.7"]
    assert set(cross["easy-vqa"]["paired"]) == {"fashion_mnist", "fashion_mnist_rephrased"}
    assert set(cross["fashion-mnist"]["paired"]) == {"easy_vqa", "easy_vqa_rephrased"}
    fm = cross["easy-vqa"]["paired"]["fashion_mnist"]
    assert fm["per_seed"] == pytest.approx([0.0, 1.0, 2.0]) and fm["wins"] == 2 and fm["n"] == 3
    assert cross["easy-vqa"]["paired"]["fashion_mnist_rephrased"]["wins"] == 0
    assert "Cross-task" in written["table"] and "easy-vqa → Fashion-MNIST acc" in written["table"]


def test_cross_task_pairs_every_other_search_variant_asked_for_with_uniform(monkeypatch, tmp_path):
    """An ablated variant asked for beside Full gets its own cross-task cells (`cross_task_variants`), each paired
    with uniform on the same seeds; Full's stay under `cross_task`."""
    import benchmarks.ablation as ablation

    calls, written = [], {}
    monkeypatch.setattr(ablation, "run_variant", _stand_in_runs(calls))
    monkeypatch.setattr(ablation, "write_results", lambda name, title, table, data, notes: written.update(
        table=table, data=data))
    assert ablation.main(["--targets", "0.7", "--variants", "uniform,full,no_evo", "--seeds", "0,1", "--cross-task",
                          "--cached-only", "--work", str(tmp_path)]) == 0
    both, calls_both = dict(written), list(calls)
    calls.clear()  # one proxy only: the other set's proxy is never run
    assert ablation.main(["--targets", "0.7", "--variants", "uniform,full,no_evo", "--seeds", "0,1", "--cross-task",
                          "fashion-mnist", "--cached-only", "--work", str(tmp_path)]) == 0
    assert "easy-vqa:train" not in {c[3] for c in calls} and "fashion-mnist:train" in {c[3] for c in calls}
    assert set(written["data"]["cross_task_variants"]["no_evo"]["0.7"]) == {"fashion-mnist"}
    with pytest.raises(SystemExit):
        ablation.main(["--targets", "0.7", "--cross-task", "mnist", "--cached-only", "--work", str(tmp_path)])
    written.clear()
    written.update(both)
    single = [c for c in calls_both if "," not in c[3]]
    assert sorted((c[0], c[2]) for c in single if c[3] == "easy-vqa:train") == sorted(
        [(v, s) for v in ("uniform", "full", "no_evo") for s in (0, 1)] + [("uniform", 0), ("uniform", 1)])
    cell = written["data"]["cross_task_variants"]["no_evo"]["0.7"]["fashion-mnist"]
    assert cell["paired"]["easy_vqa"]["per_seed"] == pytest.approx([0.0, 0.0])  # the stand-in no_evo = uniform
    assert written["data"]["cross_task"]["0.7"]["easy-vqa"]["paired"]["fashion_mnist"]["per_seed"] == pytest.approx(
        [0.0, 1.0])
    assert "No Evo − uniform per seed" in written["table"]


def test_a_cached_only_cross_task_cell_reports_its_finished_seeds_and_names_the_rest(monkeypatch, tmp_path):
    import benchmarks.ablation as ablation

    written, notes = {}, []
    stand_in = _stand_in_runs([])

    def run(variant, target, settings, work, log=print, cached_only=False):
        single_set = "," not in settings.data["mm_calib"]
        if single_set and variant == "full" and settings.seed == 2:  # seed 2's cross-task search not run yet
            return None
        return stand_in(variant, target, settings, work)

    monkeypatch.setattr(ablation, "run_variant", run)
    monkeypatch.setattr(ablation, "write_results", lambda name, title, table, data, n: (written.update(data),
                                                                                        notes.append(n)))
    assert ablation.main(["--targets", "0.7", "--variants", "uniform,full", "--seeds", "0,1,2", "--cross-task",
                          "--cached-only", "--work", str(tmp_path)]) == 0
    cell = written["cross_task"]["0.7"]["easy-vqa"]
    assert cell["seeds"] == [0, 1] and [r["seed"] for r in cell["uniform"]["per_seed"]] == [0, 1]
    assert cell["paired"]["fashion_mnist"]["n"] == 2
    assert "cross-task (easy-vqa proxy, Full (eta = 0.5)) at 0.7, seed(s) 2" in notes[0]
    assert "cross-task (fashion-mnist proxy, Full (eta = 0.5)) at 0.7, seed(s) 2" in notes[0]


def test_restored_rows_are_found_where_a_run_looks_for_them_and_other_settings_are_refused(tmp_path):
    """--restore-cache: a results file's rows go back under the keys `run_variant` reads (a fresh machine has
    no cache); a file written with other settings is refused, never filed under keys it does not belong to."""
    import json

    from benchmarks.ablation import restore_cache, with_proxy
    from benchmarks.variants import Settings, run_variant

    settings = Settings()
    row = lambda v, s: {"variant": v, "target": 0.7, "seed": s, "ppl": 100.0 + s}  # noqa: E731
    doc = {"settings": {**json.loads(settings.model_dump_json()), "eval_vqa": settings.heldout.vqa},
           "dense": {"variant": "dense", "seed": 0, "ppl": 20.0},
           "results": {"0.7": {v: {"per_seed": [row(v, 0), row(v, 3)]} for v in ("uniform", "full")}},
           "cross_task": {"0.7": {"easy-vqa": {v: {"per_seed": [row(v, 1)]} for v in ("uniform", "full")}}}}
    assert restore_cache(doc, settings, tmp_path) == 7
    assert restore_cache(doc, settings, tmp_path) == 0  # already there: kept
    assert run_variant("dense", None, settings, tmp_path, cached_only=True)["ppl"] == 20.0
    for v in ("uniform", "full"):
        for s in (0, 3):
            assert run_variant(v, 0.7, settings.model_copy(update={"seed": s}), tmp_path, log=lambda m: None,
                               cached_only=True) == row(v, s)
        proxied = with_proxy(settings, "easy-vqa").model_copy(update={"seed": 1})
        assert run_variant(v, 0.7, proxied, tmp_path, log=lambda m: None, cached_only=True) == row(v, 1)
    assert run_variant("full", 0.7, settings.model_copy(update={"seed": 1}), tmp_path, log=lambda m: None,
                       cached_only=True) is None  # seed 1 ran only with the easy-vqa proxy
    split = "val" if settings.heldout.split == "test" else "test"
    other = settings.model_copy(update={"heldout": settings.heldout.model_copy(update={"split": split})})
    with pytest.raises(ValueError, match="other settings"):
        restore_cache(doc, other, tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_a_restored_row_without_its_machine_names_the_machine_its_file_was_written_on(tmp_path):
    import json

    from benchmarks.ablation import restore_cache
    from benchmarks.variants import Settings, run_variant

    settings = Settings()
    doc = {"settings": json.loads(settings.model_dump_json()), "dense": {"variant": "dense", "seed": 0, "ppl": 20.0},
           "machine": {"cpu": "Intel Xeon", "isa": "AVX-512 + AMX", "commit": "19f252a"},
           "results": {"0.7": {"uniform": {"per_seed": [
               {"variant": "uniform", "target": 0.7, "seed": 0, "ppl": 300.0},
               {"variant": "uniform", "target": 0.7, "seed": 1, "ppl": 310.0, "computed_on": "AMD EPYC, AVX2"}]}}}}
    assert restore_cache(doc, settings, tmp_path) == 3
    quiet = lambda m: None  # noqa: E731
    old = run_variant("uniform", 0.7, settings, tmp_path, log=quiet, cached_only=True)
    assert old["restored_from"] == "Intel Xeon, AVX-512 + AMX (commit 19f252a)" and old["ppl"] == 300.0
    recorded = run_variant("uniform", 0.7, settings.model_copy(update={"seed": 1}), tmp_path, log=quiet,
                           cached_only=True)
    assert recorded["computed_on"] == "AMD EPYC, AVX2" and "restored_from" not in recorded


def test_the_evo_parts_run_after_full_on_every_seed_and_are_paired_with_evo_both(monkeypatch, tmp_path):
    """The Evo parts re-prune Full's run: asked alone and first, Full and evo_both (Full's recipe re-run the same way)
    are added and run before them, on every calibration seed; the JSON's evo_parts key pairs each part with evo_both
    seed by seed, evo_rounding pairs Full with evo_both."""
    import benchmarks.ablation as ablation

    calls, written = [], {}
    acc = {"full": 0.6, "evo_both": 0.58, "evo_masks_only": 0.5, "evo_answers_only": 0.55, "evo_neither": 0.45,
           "uniform": 0.4}

    def fake_run(variant, target, settings, work, log=print, cached_only=False):
        calls.append((variant, settings.seed))
        a = acc.get(variant, 0.9) + 0.01 * settings.seed * (variant == "full")
        return {"variant": variant, "target": target, "seed": settings.seed, "sparsity": target or 0.0,
                "ppl": 100.0, "easy_vqa": a, "fashion_mnist": a}

    monkeypatch.setattr(ablation, "run_variant", fake_run)
    monkeypatch.setattr(ablation, "write_results", lambda name, title, table, data, notes: written.update(
        table=table, data=data))
    assert ablation.main(["--targets", "0.7", "--variants", "evo_neither,evo_answers_only,evo_masks_only,uniform",
                          "--seeds", "0,1", "--cached-only", "--work", str(tmp_path)]) == 0
    order = [v for v, _ in calls if v != "dense"]
    assert order == (["uniform"] * 2 + ["full"] * 2 + ["evo_both"] * 2 + ["evo_masks_only"] * 2
                     + ["evo_answers_only"] * 2 + ["evo_neither"] * 2)
    parts = written["data"]["evo_parts"]
    assert set(parts) == {"evo_masks_only", "evo_answers_only", "evo_neither"}
    assert parts["evo_masks_only"]["0.7"]["easy_vqa"]["per_seed"] == pytest.approx([8.0, 8.0])  # evo_both − part
    assert parts["evo_neither"]["0.7"]["easy_vqa"]["per_seed"] == pytest.approx([13.0, 13.0])
    assert parts["evo_answers_only"]["0.7"]["easy_vqa"]["wins"] == 2
    rounding = written["data"]["evo_rounding"]["0.7"]["easy_vqa"]
    assert rounding["per_seed"] == pytest.approx([2.0, 3.0])  # Full − evo_both, seed by seed
    assert "Full − evo_both" in written["table"] and "evo_both − evo_masks_only" in written["table"]


def test_every_seed_runs_each_variant_on_each_seed_and_pairs_the_searches_with_full(monkeypatch, tmp_path):
    """--every-seed: the asked variants (and Full, which they are paired with) run on every seed; vs_full holds
    Full − variant per seed for each other search variant; uniform keeps its own pairing."""
    import benchmarks.ablation as ablation

    calls, written = [], {}
    acc = {"full": 0.6, "full_ce_fitness": 0.5, "no_evo": 0.62, "uniform": 0.4}

    def fake_run(variant, target, settings, work, log=print, cached_only=False):
        calls.append((variant, settings.seed))
        a = acc.get(variant, 0.9) + (0.01 * settings.seed if variant == "full_ce_fitness" else 0.0)
        return {"variant": variant, "target": target, "seed": settings.seed, "sparsity": target or 0.0,
                "ppl": 100.0, "easy_vqa": a, "fashion_mnist": a, "ratios": [target]}

    monkeypatch.setattr(ablation, "run_variant", fake_run)
    monkeypatch.setattr(ablation, "write_results", lambda name, title, table, data, notes: written.update(
        table=table, data=data))
    assert ablation.main(["--targets", "0.7", "--variants", "no_evo,full_ce_fitness", "--every-seed",
                          "--seeds", "0,1,2", "--cached-only", "--work", str(tmp_path)]) == 0
    assert sorted(c for c in calls if c[0] != "dense") == sorted(
        (v, s) for v in ("full", "no_evo", "full_ce_fitness") for s in (0, 1, 2))
    vs_full = written["data"]["vs_full"]
    assert set(vs_full) == {"no_evo", "full_ce_fitness"}
    assert vs_full["full_ce_fitness"]["0.7"]["easy_vqa"]["per_seed"] == pytest.approx([10.0, 9.0, 8.0])
    assert vs_full["no_evo"]["0.7"]["easy_vqa"]["wins"] == 0  # Full behind on every seed: said so
    assert "Full − full_ce_fitness" in written["table"]


def test_each_calibrated_variant_is_paired_with_uniform_per_seed(monkeypatch, tmp_path):
    """vs_uniform: every calibrated variant other than Full (whose pairing is `paired`) − uniform on the seeds both
    ran, with the question noise; a variant run on one seed is paired on that seed only."""
    import benchmarks.ablation as ablation

    written = {}
    acc = {"uniform": 0.40, "full": 0.60, "full_tr03": 0.45, "owl": 0.38}

    def fake_run(variant, target, settings, work, log=print, cached_only=False):
        a = acc.get(variant, 0.9) + 0.01 * settings.seed
        return {"variant": variant, "target": target, "seed": settings.seed, "sparsity": target or 0.0,
                "ppl": 100.0 if variant != "full_tr03" else 90.0, "easy_vqa": a, "fashion_mnist": a,
                "ratios": [target]}

    monkeypatch.setattr(ablation, "run_variant", fake_run)
    monkeypatch.setattr(ablation, "write_results", lambda name, title, table, data, notes: written.update(
        table=table, data=data))
    assert ablation.main(["--targets", "0.7", "--variants", "uniform,full,full_tr03,owl", "--seeds", "0,1",
                          "--seed", "1", "--cached-only", "--work", str(tmp_path)]) == 0
    vs = written["data"]["vs_uniform"]
    assert set(vs) == {"full_tr03", "owl"}  # Full's own pairing stays under `paired`
    tr = vs["full_tr03"]["0.7"]
    assert tr["seeds"] == [1]  # run on --seed only (not a SEEDED variant): paired on that draw
    assert tr["easy_vqa"]["per_seed"] == pytest.approx([5.0]) and tr["ppl"]["per_seed"] == pytest.approx([-10.0])
    assert tr["easy_vqa"]["wins"] == 1 and "draw_noise" in tr["easy_vqa"]
    assert vs["owl"]["0.7"]["fashion_mnist"]["wins"] == 0
    assert "Full, projector trust region 0.03 − uniform" in written["table"]


def test_cached_only_reports_the_seeds_a_variant_finished_and_names_the_rest(monkeypatch, tmp_path):
    """--cached-only with a variant finished on some seeds: its row and pairing use those seeds; the others are
    listed as not run (a variant with no finished seed is listed whole)."""
    import benchmarks.ablation as ablation

    written = {}

    def fake_run(variant, target, settings, work, log=print, cached_only=False):
        if variant == "full_tr03" and settings.seed == 2 or variant == "owl":
            return None
        return {"variant": variant, "target": target, "seed": settings.seed, "sparsity": target or 0.0,
                "ppl": 100.0, "easy_vqa": 0.5 + (0.1 if variant == "full_tr03" else 0.0), "fashion_mnist": 0.4,
                "ratios": [target]}

    monkeypatch.setattr(ablation, "run_variant", fake_run)
    monkeypatch.setattr(ablation, "write_results", lambda name, title, table, data, notes: written.update(
        table=table, data=data, notes=notes))
    assert ablation.main(["--targets", "0.7", "--variants", "uniform,full,full_tr03,owl", "--seeds", "0,1,2",
                          "--every-seed", "--cached-only", "--work", str(tmp_path)]) == 0
    tr = written["data"]["results"]["0.7"]["full_tr03"]
    assert tr["seeds"] == [0, 1] and written["data"]["vs_uniform"]["full_tr03"]["0.7"]["easy_vqa"]["n"] == 2
    assert "owl" not in written["data"]["results"]["0.7"]
    assert "Full, projector trust region 0.03 at 0.7, seed(s) 2" in written["notes"]
    assert "OWL ratios + SparseGPT at 0.7, seed(s) 0,1,2" in written["notes"]
    assert "Full vs Uniform (means over seeds [0, 1, 2])" in written["notes"]  # both finished every seed


def test_cached_only_verdict_names_each_models_seeds_when_they_differ(monkeypatch, tmp_path):
    import benchmarks.ablation as ablation

    written = {}

    def fake_run(variant, target, settings, work, log=print, cached_only=False):
        if variant == "full" and settings.seed == 1:
            return None
        return {"variant": variant, "target": target, "seed": settings.seed, "sparsity": target or 0.0,
                "ppl": 100.0, "easy_vqa": 0.5, "fashion_mnist": 0.4, "ratios": [target]}

    monkeypatch.setattr(ablation, "run_variant", fake_run)
    monkeypatch.setattr(ablation, "write_results", lambda name, title, table, data, notes: written.update(
        data=data, notes=notes))
    assert ablation.main(["--targets", "0.7", "--variants", "uniform,full", "--seeds", "0,1", "--cached-only",
                          "--work", str(tmp_path)]) == 0
    assert "(means over uniform's seeds [0, 1], Full's [0])" in written["notes"]
    assert written["data"]["paired"]["0.7"]["seeds"] == [0]  # the pairing keeps the draws both finished


def test_cross_task_only_runs_the_cross_task_cells_and_reads_the_in_distribution_rows_from_the_cache(monkeypatch,
                                                                                                      tmp_path):
    """--cross-task-only: every in-distribution row is asked of the cache only (listed as missing when absent);
    the cross-task cells run; without --cross-task the flag is refused."""
    import benchmarks.ablation as ablation

    calls, written = [], {}
    stand_in = _stand_in_runs([])

    def run(variant, target, settings, work, log=print, cached_only=False):
        calls.append((variant, settings.data["mm_calib"], cached_only))
        mixed = "," in settings.data["mm_calib"]
        return None if mixed and variant == "no_evo" else stand_in(variant, target, settings, work, log)

    monkeypatch.setattr(ablation, "ray_started", lambda settings: None)
    monkeypatch.setattr(ablation, "run_variant", run)
    monkeypatch.setattr(ablation, "write_results", lambda name, title, table, data, notes: written.update(
        data=data, notes=notes))
    assert ablation.main(["--targets", "0.7", "--variants", "uniform,no_evo", "--seeds", "0", "--cross-task",
                          "easy-vqa", "--cross-task-only", "--work", str(tmp_path)]) == 0
    in_dist = [c for c in calls if c[0] != "dense" and "," in c[1]]
    crossed = [c for c in calls if "," not in c[1]]
    assert in_dist and all(cached for _, _, cached in in_dist)
    assert crossed and not any(cached for _, _, cached in crossed)
    assert {v for v, _, _ in crossed} == {"uniform", "full", "no_evo"}
    assert "no_evo" in written["data"]["cross_task_variants"]
    assert "No Evo at 0.7" in written["notes"] and "without --cross-task-only" in written["notes"]  # not cached
    # asked of the cache alone as well, the note names both flags: dropping --cached-only alone runs nothing more
    assert ablation.main(["--targets", "0.7", "--variants", "uniform,no_evo", "--seeds", "0", "--cross-task",
                          "easy-vqa", "--cross-task-only", "--cached-only", "--work", str(tmp_path)]) == 0
    assert "without --cross-task-only and --cached-only runs them" in written["notes"]
    with pytest.raises(SystemExit):
        ablation.main(["--targets", "0.7", "--cross-task-only", "--work", str(tmp_path)])
