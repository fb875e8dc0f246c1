"""`--help` of every command reads cleanly in an 80-column terminal: no truncated text, no markup eaten."""
import pytest
from typer.testing import CliRunner

from efficientllava.actors.cli import app

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


def _options(command: str) -> dict[str, str]:
    import typer

    group = typer.main.get_command(app)
    return {opt: param.help for param in group.commands[command].params for opt in param.opts if opt.startswith("--")}


def test_search_tune_and_demo_share_one_declaration_of_the_run_options():
    from efficientllava.actors.options import RUN, SETTINGS

    search, tune, demo = _options("search"), _options("tune"), _options("demo")
    flags = {SETTINGS[k].flags[0] for k in RUN}
    assert flags <= set(search) and flags - {"--eta"} <= set(tune) and flags <= set(demo)
    assert "--eta" in tune and tune["--eta"] != search["--eta"]  # tune's own: the list of eta values it sweeps
    for flag in flags - {"--eta"}:
        assert search[flag] == tune[flag], flag  # the same words, from the same declaration
    assert search["--population"].startswith("Policies per generation") and "paper preset: 16" in search["--population"]
    assert "(default: smol-llava)" in demo["--model"] and "(default: 150)" in demo["--eval-vqa"]
    # the defaults shown come from the config classes: prune shows DataConfig's, search the default preset's
    assert "(default: 32)" in _options("prune")["--nsamples"] and "(default: 64)" in _options("prune")["--mm-samples"]
    assert "(default: 8; paper preset: 16)" in search["--population"]
