"""`efficientllava search` / `resume`: bad input fails before Ray starts (one line, exit 2, nothing
written); a search with 2 actors on a local cluster that the command starts itself."""
import json

import pytest
from typer.testing import CliRunner

from efficientllava.actors.cli import app

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.mark.parametrize("flags, message", [
    (["--target", "1.5"], "target"),
    (["--target", "0.05"], "below 0"),
    (["--population", "1"], "population"),
    (["--mode", "fast"], "mode must be"),
    (["--granularity", "row"], "granularity"),
    (["--projector-mode", "sometimes"], "projector_mode"),
    (["--calib", "missing.txt"], "text file not found"),
    (["--mm-calib", "nope"], "unknown image-text data"),
    (["--gpus-per-actor", "1.5"], "at most 1"),
    (["--gpus-per-actor", "2"], "engine.offload"),
    (["--memory-per-actor-gb", "-1"], "memory_per_actor_gb"),
    (["--actors", "0"], "actors"),
    (["--set", "search.bogus=1"], "unknown key 'bogus'"),
    (["--set", "elites=2"], "expected <section>.<key>"),
    (["--config", "/nonexistent/run.yaml"], "cannot read run config"),
])
def test_bad_flags_fail_before_ray_starts(tiny_llava_dir, tmp_path, flags, message):
    import ray

    out = tmp_path / "run"
    code, output = run("search", "--model", tiny_llava_dir, "--out", out, *flags)
    assert code == 2, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], output
    assert not out.exists() and not ray.is_initialized()


def test_model_is_required_and_checked(tiny_llama_dir, tmp_path):
    code, output = run("search", "--out", tmp_path / "a")
    assert code == 2 and "missing --model" in output
    code, output = run("search", "--model", tmp_path / "nowhere", "--out", tmp_path / "b")
    assert code == 2 and "no such directory" in output
    code, output = run("search", "--model", tiny_llama_dir, "--mm-calib", "easy-vqa", "--out", tmp_path / "c")
    assert code == 2 and "needs a LLaVA model" in output
    assert not any(tmp_path.iterdir())


def test_existing_run_directory_is_refused_and_resume_needs_a_run(tiny_llava_dir, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("population: 4\n")
    code, output = run("search", "--model", tiny_llava_dir, "--out", out)
    assert code == 2 and "efficientllava resume" in output
    code, output = run("resume", tmp_path / "empty")
    assert code == 2 and output.startswith("error:") and "no search run to resume" in output
    code, output = run("resume", out)  # a config without the engine section: not made by `search`
    assert code == 2 and "no engine section" in output


def test_config_file_sections_with_flags_on_top(tiny_llava_dir, tmp_path):
    """--config holds all three sections; a flag wins over the file; a bad key in the file is one line."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"engine:\n  model: {tiny_llava_dir}\n  nsample: 4\n")
    code, output = run("search", "--config", bad, "--out", tmp_path / "run")
    assert code == 2 and "unknown key 'nsample'" in output


@pytest.mark.ray
def test_search_end_to_end_on_a_local_cluster(tiny_llava_dir, tmp_path):
    """(a) through the command line: it starts a local Ray cluster, runs 2 actors and writes the run."""
    import ray
    from transformers import LlavaForConditionalGeneration

    from ray_helpers import language_model_sparsity

    assert not ray.is_initialized()
    out = tmp_path / "run"
    code, output = run("search", "--model", tiny_llava_dir, "--target", 0.5, "--population", 4, "--generations", 2,
                       "--calib", "wiki:calib", "--mm-calib", "easy-vqa:train", "--eta", 0.5, "--out", out,
                       "--actors", 2, "--num-cpus", 2, "--nsamples", 4, "--seqlen", 32, "--mm-samples", 4,
                       "--projector-lr", 0.01, "--set", "search.elites=2", "--set", "search.projector_guard=false",
                       "--no-progress")
    # no guard: this test checks the command's plumbing (the projector steps reach the saved model); on a random
    # tiny model the guard may rightly drop every update (its behaviour: tests/test_actors_search.py)
    assert code == 0, output
    assert not ray.is_initialized()  # the command shut down the cluster it started
    assert "2 evaluator actor(s) ready" in output and "generation 2/" in output and "best F" in output
    policy = json.loads((out / "policy.json").read_text())
    assert abs(policy["mean_sparsity"] - 0.5) <= 0.01 + 1e-9 and policy["generations"] == 2
    model = LlavaForConditionalGeneration.from_pretrained(out / "model")
    dense = LlavaForConditionalGeneration.from_pretrained(tiny_llava_dir)
    assert abs(language_model_sparsity(model) - 0.5) <= 0.01 + 1e-6
    assert any((p != q).any() for p, q in zip(model.model.multi_modal_projector.parameters(),
                                             dense.model.multi_modal_projector.parameters()))
    import pyarrow.parquet as pq

    history = pq.read_table(out / "history.parquet").to_pydict()
    # the default preset: 4 policies x 2 generations on the fitness set, plus the children it screened
    assert history["fidelity"].count("full") == 8 and 0 < history["fidelity"].count("screen") <= 2 * 16
    # the saved policy feeds `efficientllava prune --policy` directly
    from efficientllava.prune_engine.prune import read_policy

    assert read_policy(out / "policy.json") == policy["ratios"]
