"""benchmarks/space_budget.py: its grid, its checks before anything runs, and its table (issue 26)."""
import pytest

from benchmarks import space_budget


def test_the_grid_is_parsed_and_a_bad_cell_is_named():
    assert space_budget.parse_grid("block:0.1,matrix:0.2,") == [("block", 0.1), ("matrix", 0.2)]
    with pytest.raises(ValueError, match="'layer:0.1': granularity must be one of block, matrix"):
        space_budget.parse_grid("layer:0.1")
    with pytest.raises(ValueError, match="'matrix:wide': span must be a number"):
        space_budget.parse_grid("matrix:wide")
    with pytest.raises(ValueError, match="the grid is empty"):
        space_budget.parse_grid(",")


@pytest.mark.parametrize("argv, message", [
    (["--grid", "block:0.35"], "cell block:0.35: "),  # levels past 1 at target 0.7
    (["--grid", "block:0.12"], "cell block:0.12: "),  # not a multiple of the preset's step
    (["--at", "0,3"], "--at: give generations >= 1"),
    (["--grid", "row:0.1"], "granularity must be one of"),
])
def test_settings_that_cannot_run_stop_before_anything_runs(argv, message, monkeypatch, capsys):
    monkeypatch.setattr(space_budget, "ray_started", lambda s: pytest.fail("started Ray before checking settings"))
    with pytest.raises(SystemExit) as stop:
        space_budget.main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()[-1]) < 300


def test_each_cell_and_budget_is_a_row_with_its_ratio_to_uniform():
    metrics = {"ppl": 150.0, "easy_vqa": 0.5, "fashion_mnist": 0.4, "ppl_pydoc": 200.0, "easy_vqa_rephrased": 0.45,
               "fashion_mnist_rephrased": 0.35}
    uniform = {**metrics, "ppl": 300.0}
    cells = {("block", 0.1): [{**metrics, "generation": 3, "evaluations": 700, "search_s": 300.0},
                              {**metrics, "ppl": 120.0, "generation": 8, "evaluations": 1800, "search_s": 840.0}],
             ("matrix", 0.2): [{**metrics, "ppl": 330.0, "generation": 8, "evaluations": 1800, "search_s": 900.0}]}
    rows = space_budget.cell_rows(cells, uniform)
    assert [r[:5] for r in rows] == [["block", "+-0.1", 3, 700, 5.0], ["block", "+-0.1", 8, 1800, 14.0],
                                     ["matrix", "+-0.2", 8, 1800, 15.0], ["uniform", "-", "-", 0, 0]]
    assert [r[-1] for r in rows] == [0.5, 0.4, 1.1, 1.0]
    assert rows[1][5] == 120.0 and rows[-1][5] == 300.0
