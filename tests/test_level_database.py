"""benchmarks/level_database.py on a tiny LLaVA: the database's measured bytes are the plan's formula."""
import json

import pytest

import benchmarks.common as common
from benchmarks import level_database


def test_measured_database_bytes_are_the_plans_formula(tiny_llava_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    args = ["--model", str(tiny_llava_dir), "--target", "0.5", "--level-sets", "0.1:0.05,0.2:0.05",
            "--nsamples", "4", "--seqlen", "32", "--mm-samples", "4"]
    assert level_database.main(args) == 0
    rows = json.loads((tmp_path / "level_database.json").read_text())["rows"]
    assert [r["levels"] for r in rows] == [5, 9]
    for r in rows:
        assert r["entries"] == 3 * 7 * r["levels"]  # 3 blocks x 7 linears x levels
        assert r["database_bytes"] == r["formula_bytes"] > 0
        assert r["log10_space_matrix"] == pytest.approx(7 * r["log10_space_block"])
    assert rows[1]["database_bytes"] * 5 == rows[0]["database_bytes"] * 9
    assert "| database GiB |" in (tmp_path / "level_database.md").read_text()


def test_a_bad_level_set_is_one_line_and_exit_2(capsys):
    assert level_database.main(["--level-sets", "0.1:0.05,0.5:0.1", "--target", "0.7"]) == 2
    err = capsys.readouterr().err
    assert "bad level set '0.5:0.1'" in err and err.count("\n") == 1
