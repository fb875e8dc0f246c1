"""`--help` of every command reads cleanly in an 80-column terminal: no truncated text, no markup eaten."""
import pytest
from typer.testing import CliRunner

from actors.cli import app

COMMANDS = [[], ["prune"], ["eval"], ["eval", "ppl"], ["eval", "vqa"], ["search"], ["resume"], ["tune"], ["report"],
            ["demo"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "efficientllava")
def test_help_is_complete(command):
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "80", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    assert "…" not in result.output  # rich cuts words that do not fit a column


def test_help_keeps_brackets_and_braces():
    text = " ".join(CliRunner().invoke(app, ["prune", "--help"], env={"COLUMNS": "200"}).output.split())
    assert '{"ratios": [one ratio per block]}' in text and "in [0, 1)" in text
    assert "easy-vqa[:split]" in text


def test_demo_options_have_help():
    text = " ".join(CliRunner().invoke(app, ["demo", "--help"], env={"COLUMNS": "200"}).output.split())
    assert "Policies per generation of the search" in text and "Generations of the search" in text
