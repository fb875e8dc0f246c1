"""benchmarks/draw_judge.py: what the judge of a calibration draw sees, what it keeps, and which draws it reads."""
from __future__ import annotations

import json

import pytest

from benchmarks import draw_judge
from benchmarks.variants import METRICS

QUESTIONS = 1000


def row(seed: int, ratios=(0.7, 0.7), cpu="cpu A", **metrics) -> dict:
    base = {"ppl": 300.0, "ppl_pydoc": 350.0, "easy_vqa": 0.40, "easy_vqa_rephrased": 0.35,
            "fashion_mnist": 0.38, "fashion_mnist_rephrased": 0.37}
    return {"seed": seed, "ratios": list(ratios), "computed_on": cpu, **base, **metrics}


def cell(rows: list[dict]) -> dict:
    return {"per_seed": rows}


def results(split: str, uniform: list[dict], full: list[dict], cross: dict | None = None) -> dict:
    return {"settings": {"heldout": {"split": split, "vqa": QUESTIONS}},
            "results": {"0.7": {"uniform": cell(uniform), "full": cell(full)}},
            "cross_task": {"0.7": cross or {}}}


def test_judge_keeps_full_only_where_it_holds_on_what_it_may_see():
    uniform = row(0)
    visible = ("ppl", "easy_vqa")
    ahead = row(0, ppl=250.0, easy_vqa=0.50, fashion_mnist=0.20)  # far behind on a column it may not see
    assert draw_judge.judge(uniform, ahead, visible, QUESTIONS, noise_aware=False) == "full"
    slightly_behind = row(0, ppl=250.0, easy_vqa=0.39)  # one point: inside 1,000 questions' noise (~4.3 points)
    assert draw_judge.judge(uniform, slightly_behind, visible, QUESTIONS, noise_aware=False) == "uniform"
    assert draw_judge.judge(uniform, slightly_behind, visible, QUESTIONS, noise_aware=True) == "full"
    far_behind = row(0, ppl=250.0, easy_vqa=0.30)
    assert draw_judge.judge(uniform, far_behind, visible, QUESTIONS, noise_aware=True) == "uniform"
    worse_text = row(0, ppl=301.0, easy_vqa=0.50)  # perplexity: any rise counts, under both rules
    assert draw_judge.judge(uniform, worse_text, visible, QUESTIONS, noise_aware=True) == "uniform"


def test_question_noise_is_the_two_accuracies_standard_error():
    u, f = row(0, easy_vqa=0.5), row(0, easy_vqa=0.5)
    assert draw_judge.question_noise(u, f, "easy_vqa", 1000) == pytest.approx(196 * (0.5 / 1000) ** 0.5)


def test_judged_draws_score_fallback_as_uniform_and_skip_other_searches_or_cpus():
    val = (cell([row(0), row(1), row(2)]),
           cell([row(0, ppl=200.0), row(1, ppl=310.0), row(2, ratios=(0.6, 0.8), ppl=200.0)]))
    test = (cell([row(0), row(1), row(2)]),
            cell([row(0, fashion_mnist=0.30), row(1, fashion_mnist=0.30), row(2, ratios=(0.7, 0.7))]))
    records, skipped = draw_judge.judged_draws("x", val, test, ("ppl",), ("fashion_mnist",), QUESTIONS)
    by_seed = {r["seed"]: r for r in records}
    assert set(by_seed) == {0, 1} and len(skipped) == 1 and "seed 2" in skipped[0]
    assert by_seed[0]["strict"] == "full" and by_seed[0]["test_strict"]["fashion_mnist"] == pytest.approx(-8.0)
    assert by_seed[1]["strict"] == "uniform" and by_seed[1]["test_strict"] == {"fashion_mnist": 0.0}
    assert by_seed[1]["test_full"]["fashion_mnist"] == pytest.approx(-8.0)  # what Full would have given

    other_cpu = (cell([row(0, cpu="cpu B")]), cell([row(0)]))
    records, skipped = draw_judge.judged_draws("x", other_cpu, (cell([row(0)]), cell([row(0)])), ("ppl",),
                                               ("ppl",), QUESTIONS)
    assert records == [] and "CPU kinds" in skipped[0]


def test_cross_task_judge_sees_text_and_the_proxy_task_only(tmp_path, monkeypatch):
    monkeypatch.setattr(draw_judge, "write_results", lambda name, title, table, data, notes="": written.update(data))
    written: dict = {}
    cross_val = {"easy-vqa": {"evaluated_on": ["fashion_mnist", "fashion_mnist_rephrased"],
                              "uniform": cell([row(0)]), "full": cell([row(0, ppl=250.0, easy_vqa=0.6)])}}
    cross_test = {"easy-vqa": {"evaluated_on": ["fashion_mnist", "fashion_mnist_rephrased"],
                               "uniform": cell([row(0)]), "full": cell([row(0, fashion_mnist=0.30)])}}
    val = tmp_path / "val.json"
    test = tmp_path / "test.json"
    val.write_text(json.dumps(results("val", [row(0)], [row(0, fashion_mnist=0.37)], cross_val)))
    test.write_text(json.dumps(results("test", [row(0)], [row(0)], cross_test)))
    assert draw_judge.main(["--val", str(val), "--test", str(test)]) == 0
    cross, mixed = written["draws"]
    assert cross["setting"] == "easy-vqa proxy" and set(cross["visible"]) == {"ppl", "ppl_pydoc", "easy_vqa",
                                                                               "easy_vqa_rephrased"}
    assert cross["strict"] == "full" and cross["test_full"]["fashion_mnist"] == pytest.approx(-8.0)
    assert mixed["setting"] == "mixed proxy" and mixed["visible"] == list(METRICS)
    assert mixed["strict"] == "uniform" and mixed["noise_aware"] == "full"  # one point behind on Fashion-MNIST


def test_refuses_a_file_of_the_wrong_split(tmp_path, capsys):
    path = tmp_path / "test.json"
    path.write_text(json.dumps(results("test", [row(0)], [row(0)])))
    with pytest.raises(SystemExit) as e:
        draw_judge.main(["--val", str(path), "--test", str(path)])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("scored on the val split")
