"""`report` on a synthetic finished run directory."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from efficientllava.actors.report import ReportError, write_report


def make_run(path, generations=3, population=4, blocks=5):
    rows = []
    for t in range(generations):
        for m in range(population):
            rows.append(dict(generation=t, candidate=m, policy=[(m + t + b) % 5 for b in range(blocks)],
                             mean_sparsity=0.5, projector_version=t, l_proxy=3.0 - 0.1 * t - 0.01 * m,
                             g=-0.02, fitness=-3.0 + 0.1 * t + 0.01 * m + 0.01, c_m=1 / population, seconds=1.0,
                             cached=False, log_norm_ratio=[-0.02] * blocks))
    path.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), path / "history.parquet")
    (path / "policy.json").write_text(json.dumps({
        "ratios": [0.5] * blocks, "levels": [2] * blocks, "level_values": [0.4, 0.45, 0.5, 0.55, 0.6],
        "granularity": "block", "mean_sparsity": 0.5, "target": 0.5, "fitness": -2.76, "l_proxy": 2.77,
        "g": -0.02, "eta": 0.5, "generations": generations, "projector_version": generations,
        "projector_mode": "weighted", "model": "tiny"}))
    return path


def test_report_writes_markdown_html_and_plots(tmp_path):
    run = make_run(tmp_path / "run")
    out = write_report(run, benchmarks=None)
    for name in ("report.md", "report.html", "fitness.png", "policy_heatmap.png", "neighbour_weights.png"):
        assert (out / name).stat().st_size > 0
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:4] == b"\x89PNG"
    md = (out / "report.md").read_text()
    # best fitness per generation comes from the history: -3 + 0.1 t + 0.03 + 0.01
    assert "| 2 | -2.7600 |" in md and "| 0 | -2.9600 |" in md
    html = (out / "report.html").read_text()
    assert html.count("<img") == 3 and "<table>" in html


def test_report_includes_demo_table(tmp_path):
    make_run(tmp_path / "demo" / "search")
    (tmp_path / "demo" / "demo.json").write_text(json.dumps({"rows": {
        "dense": {"sparsity": 0.0, "ppl": 16.7, "ppl_pydoc": 40.0, "easy_vqa": 0.9, "easy_vqa_rephrased": 0.6,
                  "fashion_mnist": 0.8, "fashion_mnist_rephrased": 0.5},
        "searched": {"sparsity": 0.5, "ppl": 30.1, "ppl_pydoc": 70.0, "easy_vqa": 0.85, "easy_vqa_rephrased": 0.4,
                     "fashion_mnist": 0.7, "fashion_mnist_rephrased": 0.3}}}))
    md = (write_report(tmp_path / "demo") / "report.md").read_text()
    # in-distribution and shifted columns side by side
    assert "| model | sparsity | ppl (Wikipedia) | ppl (Python docs, shifted) | easy-vqa acc |" in md
    assert "| searched | 0.5000 | 30.1000 | 70.0000 | 0.8500 | 0.4000 | 0.7000 | 0.3000 |" in md


def test_report_appends_benchmark_tables_and_plots(tmp_path):
    run = make_run(tmp_path / "run")
    results = tmp_path / "results"
    results.mkdir()
    (results / "ablation.md").write_text("# Ablation\n\n| target | variant |\n|---|---|\n| 0.5 | Full |\n\nnote\n")
    (results / "deepsparse_speed.md").write_text("# DS\n\n| sparsity | ms |\n|---|---|\n| 0.5 | 12 |\n")
    (results / "deepsparse_speed.png").write_bytes(b"\x89PNG fake")
    (results / "anytime.md").write_text("# Anytime\n\n| preset | generation |\n|---|---|\n| quality | 8 |\n")
    (results / "anytime.png").write_bytes(b"\x89PNG anytime")
    (results / "unrelated.md").write_text("| not | included |")
    out = write_report(run, benchmarks=results)
    md = (out / "report.md").read_text()
    assert "## Ablation (benchmark)" in md and "| 0.5 | Full |" in md and "| 0.5 | 12 |" in md
    assert "not | included" not in md and "# Ablation\n" not in md
    assert md.index("Ablation (benchmark)") < md.index("DeepSparse CPU speed")
    assert (out / "deepsparse_speed.png").read_bytes() == b"\x89PNG fake"
    # the anytime plot (issue 26) is one of the report's plots
    assert "## Anytime curves" in md and "| quality | 8 |" in md and "![anytime](anytime.png)" in md
    assert (out / "anytime.png").read_bytes() == b"\x89PNG anytime"
    assert (out / "report.html").read_text().count("<img") == 5


def test_report_errors_are_one_line(tmp_path):
    with pytest.raises(ReportError, match="not a directory"):
        write_report(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="no policy.json"):
        write_report(tmp_path / "empty")
    run = make_run(tmp_path / "bad")
    (run / "history.parquet").write_bytes(b"not parquet")
    with pytest.raises(ReportError) as exc:
        write_report(run)
    assert "\n" not in str(exc.value)


def add_rerank(run, export_fitness, scored_as):
    """Mark the synthetic run's rows as the search's ("full") and add a re-rank of generation 2's candidates 3 and 2
    and the uniform policy (candidate -1) with the given export fitnesses."""
    rows = pq.read_table(run / "history.parquet").to_pylist()
    for r in rows:
        r["fidelity"] = "full"
    for m, f in zip((3, 2, -1), export_fitness):
        rows.append(dict(rows[-1], candidate=m, fidelity="export", fitness=f, l_proxy=-f - 0.01, g=-0.02,
                         policy=[2] * 5 if m < 0 else rows[8 + m]["policy"]))
    pq.write_table(pa.Table.from_pylist(rows), run / "history.parquet")
    policy = json.loads((run / "policy.json").read_text())
    (run / "policy.json").write_text(json.dumps(dict(policy, rerank=2, scored_as=scored_as)))


def test_report_shows_the_rerank(tmp_path):
    run = make_run(tmp_path / "run")
    add_rerank(run, (-2.9, -2.8, -3.1), "export")
    md = (write_report(run) / "report.md").read_text()
    assert "## Re-rank of the final candidates" in md and "| re-rank / exported policy scored as | 2 / export |" in md
    # the search's F of generation 2's candidate 2 is -3 + 0.2 + 0.02 + 0.01; its export prune scored best: exported
    assert "| generation 2, candidate 2 | -2.7700 | -2.8000 | 2.7900 | -0.0200 | 0.5000 | yes |" in md
    assert "| generation 2, candidate 3 | -2.7600 | -2.9000 | 2.8900 | -0.0200 | 0.5000 |  |" in md
    assert "| uniform | nan | -3.1000 |" in md
    # the per-generation table still reads the search's rows only (the export rows are not a generation's)
    assert "| 2 | -2.7600 |" in md


def test_report_rerank_with_every_prune_broken_says_none_was_chosen(tmp_path):
    run = make_run(tmp_path / "run")
    add_rerank(run, (float("nan"),) * 3, "search")
    md = (write_report(run) / "report.md").read_text()
    assert "(none chosen: the search's own best was kept)" in md and "| yes |" not in md


def test_report_says_what_ranked_the_candidates(tmp_path):
    """Per generation: the spreads of L and eta s G and the share of pairs each term alone orders as F does;
    a history without the SRM scale (an older run) has no such section."""
    run = make_run(tmp_path / "run", generations=1, population=3, blocks=1)
    assert "What ranked the candidates" not in (write_report(run) / "report.md").read_text()
    # L 1.9 / 1.7 / 2.0, G -2.60 / -2.56 / -2.63 at eta 0.5, s 32
    rows = [dict(generation=0, candidate=m, policy=[m], mean_sparsity=0.5, projector_version=0, l_proxy=l_,
                 g=g_, fitness=-l_ - 0.5 * 32.0 * g_, srm_scale=32.0, c_m=1 / 3, seconds=1.0, cached=False,
                 log_norm_ratio=[g_]) for m, (l_, g_) in enumerate(((1.9, -2.60), (1.7, -2.56), (2.0, -2.63)))]
    pq.write_table(pa.Table.from_pylist(rows), run / "history.parquet")
    md = (write_report(run) / "report.md").read_text()
    assert "## What ranked the candidates" in md
    # spread of L 0.3, of eta s G 0.5 * 32 * 0.07 = 1.12; F orders 2 > 0 > 1, exactly as -G and against -L on
    # every pair; the best (G -2.63) has the highest L, 2.0
    assert "| 0 | 3 | 0.3000 | 1.1200 | 0.0000 | 1.0000 | 2.0000 | 1.7000 |" in md


def test_ranking_records_carry_l_text_when_the_history_has_it():
    """The best candidate's (by F) L_text and the lowest one, per generation; None without the column."""
    from efficientllava.actors.report import ranking_records

    history = {"generation": [0, 0, 0], "fidelity": ["full"] * 3, "l_proxy": [1.9, 1.7, 2.0],
               "g": [-2.60, -2.56, -2.63], "srm_scale": [32.0] * 3, "l_text": [2.8, 2.5, 3.1]}
    history["fitness"] = [-l_ - 0.5 * 32.0 * g_ for l_, g_ in zip(history["l_proxy"], history["g"])]
    (record,) = ranking_records(history, 0.5)
    assert (record["best_l"], record["best_l_text"], record["lowest_l_text"]) == (2.0, 3.1, 2.5)
    del history["l_text"]
    (record,) = ranking_records(history, 0.5)
    assert record["best_l_text"] is None and record["lowest_l_text"] is None
