"""Every setting's constraint is on its field (a Literal, a bound or a validator of its section's class), checked
once; the run config adds only rules across sections and the settings one section copies from another. A bad
value is one line naming the setting, the same words on `search` as from RunConfig.load, exit code 2."""
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from efficientllava.actors.cli import app
from efficientllava.actors.config import RunConfig, preset_layers
from efficientllava.prune_engine.config import DataConfig, EngineConfig
from efficientllava.prune_engine.prune import PruneJob
from efficientllava.search.config import SETTING_ERROR, ConfigError


@pytest.fixture
def short_text(tmp_path):
    (tmp_path / "short.txt").write_text("a few words")
    (tmp_path / "afile").write_text("x")
    return tmp_path


# (settings, the whole message or its start); {tmp} is the test's folder
MESSAGES = [
    ({"engine.mode": "fast"}, "invalid engine config: mode must be 'sequential' or 'database', got 'fast'"),
    ({"engine.granularity": "row"}, "invalid engine config: granularity: Input should be 'block' or 'matrix'"),
    ({"engine.granularity": "matrix"}, "invalid engine config: granularity 'matrix' differs from the search's "
                                       "'block' (set it once, in the search section)"),
    ({"engine.projector_batch": 0}, "invalid engine config: projector_batch must be a positive integer"),
    ({"engine.threads": 0}, "invalid engine config: threads must be a positive integer"),
    ({"engine.screen_nsamples": -1}, "invalid engine config: screen_nsamples must be 0 or a positive integer"),
    ({"engine.screen_mm_samples": -2}, "invalid engine config: screen_mm_samples must be 0 or a positive integer"),
    ({"engine.fitness_nsamples": -1}, "invalid engine config: fitness_nsamples must be 0 or a positive integer"),
    ({"engine.fitness_held_aside": True, "engine.fitness_nsamples": 0},
     "invalid engine config: fitness_held_aside needs fitness_nsamples (the text segments held aside from "
     "calibration to measure the fitness on)"),
    ({"engine.fitness_held_aside": True, "engine.fitness_nsamples": 32, "data.nsamples": 32},
     "invalid run config: engine.fitness_held_aside: fitness_nsamples (32) leaves none of the 32 text segments "
     "(data.nsamples) to calibrate on"),
    ({"engine.device": "tpu"}, "invalid engine config: device 'tpu' (use auto, cpu, cuda or cuda:N)"),
    ({"engine.device": "mps"}, "invalid engine config: device 'mps' (use auto, cpu, cuda or cuda:N)"),
    ({"engine.pattern": "5:4"}, "invalid engine config: pattern: N:M pattern '5:4' is invalid: need 0 < N < M"),
    ({"engine.pattern": "2:4"}, "invalid engine config: an N:M pattern (2:4) fixes the sparsity of every matrix; "
                                "the search needs unstructured pruning"),
    ({"search.offspring": 5, "engine.mode": "sequential"},
     "invalid run config: search.offspring (screening children on a slice of the proxy data) needs engine.mode "
     "database; sequential mode prunes every candidate on all the data"),
    ({"engine.offload_dir": "{tmp}/afile"},
     "invalid engine config: offload_dir {tmp}/afile: a file is in the way (expected a directory)"),
    ({"engine.model": "./nowhere"}, "invalid engine config: model: no such directory: ./nowhere"),
    ({"data.calib": "nope:x"}, "invalid data config: calib: unknown text spec 'nope:x'"),
    ({"data.calib": "{tmp}/missing.txt"}, "invalid data config: calib: text file not found: {tmp}/missing.txt"),
    ({"data.calib": "{tmp}/short.txt"}, "invalid data config: calib: {tmp}/short.txt: too little text (11 characters) "
                                        "for 32 x 256 = 8192 tokens; lower --nsamples or --seqlen"),
    ({"data.mm_calib": "easy-vqa:train,mnist"}, "invalid data config: mm_calib: unknown image-text data 'mnist' (use "
                                                "easy-vqa[:split], fashion-mnist[:split] or one of llava-bench, mmvet, "
                                                "scienceqa, vizwiz; a comma-separated mix is allowed)"),
    ({"data.seqlen": 100000}, "invalid data config: seqlen 100000 is beyond the model's context (512 positions)"),
    ({"search.elites": 20}, "invalid search config: config: elites (20) must be fewer than population (16)"),
    ({"ray.actors": 0}, "invalid ray config: actors: Input should be greater than or equal to 1"),
]


@pytest.mark.parametrize("settings, message", MESSAGES, ids=[next(iter(s)) + "=" + str(next(iter(s.values())))
                                                             for s, _ in MESSAGES])
def test_a_bad_setting_is_one_line_naming_it(tiny_llava_dir, short_text, settings, message):
    settings = {k: v.format(tmp=short_text) if isinstance(v, str) else v for k, v in settings.items()}
    with pytest.raises(ConfigError) as err:
        RunConfig.load(None, {"engine.model": str(tiny_llava_dir), **settings}, preset="none")
    assert str(err.value).startswith(message.format(tmp=short_text)) and "\n" not in str(err.value)


@pytest.mark.parametrize("flags, message", [
    (["--set", "engine.projector_batch=0"], "error: invalid engine config: projector_batch must be a positive integer"),
    (["--set", "engine.threads=0"], "error: invalid engine config: threads must be a positive integer"),
    (["--set", "engine.screen_nsamples=-1"], "error: invalid engine config: screen_nsamples must be 0 or a positive"),
    (["--set", "engine.device=tpu"], "error: invalid engine config: device 'tpu' (use auto, cpu, cuda or cuda:N)"),
    (["--mode", "sequential", "--offspring", "4"], "error: invalid run config: search.offspring (screening"),
    (["--set", "engine.granularity=matrix"], "error: invalid engine config: granularity 'matrix' differs"),
])
def test_search_flags_give_the_same_line_and_exit_2(tiny_llava_dir, tmp_path, flags, message):
    result = CliRunner().invoke(app, ["search", "--model", str(tiny_llava_dir), "--out", str(tmp_path / "o"),
                                      "--preset", "none", *flags])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith(message), result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kind, values, field", [
    (EngineConfig, {"mode": "fast"}, "mode"),
    (EngineConfig, {"granularity": "row"}, "granularity"),
    (EngineConfig, {"projector_batch": 0}, "projector_batch"),
    (EngineConfig, {"threads": 0}, "threads"),
    (EngineConfig, {"screen_mm_samples": -1}, "screen_mm_samples"),
    (EngineConfig, {"device": "cuda:x"}, "device"),
    (EngineConfig, {"pattern": "two:four"}, "pattern"),
    (DataConfig, {"calib": "nope:x"}, "calib"),
])
def test_the_constraint_is_on_the_field_itself(kind, values, field):
    """Without a run config around it: the section's class refuses the value, at the field."""
    with pytest.raises(ValidationError) as err:
        kind(**values)
    e = err.value.errors()[0]
    assert e["loc"] == (field,) and (e["type"] != SETTING_ERROR or e["msg"].startswith(field))


def test_checks_of_this_machines_files_run_only_in_a_local_context(tmp_path):
    (tmp_path / "afile").write_text("x")
    local = {"local": True}
    assert DataConfig(calib=str(tmp_path / "missing.txt")).calib.endswith("missing.txt")  # no context: not read
    with pytest.raises(ValidationError, match="text file not found"):
        DataConfig.model_validate({"calib": str(tmp_path / "missing.txt")}, context=local)
    DataConfig.model_validate({"calib": str(tmp_path / "missing.txt")}, context={"local": False})  # the cluster's
    assert EngineConfig(offload_dir=str(tmp_path / "afile")).offload_dir
    with pytest.raises(ValidationError, match="a file is in the way"):
        EngineConfig.model_validate({"offload_dir": str(tmp_path / "afile")}, context=local)
    EngineConfig.model_validate({"model": "org/remote-only"}, context=local)  # a hub id: not a local file
    with pytest.raises(ValidationError, match="no such directory"):  # a path with '.' is local wherever it runs
        EngineConfig.model_validate({"model": "./nowhere"}, context={"local": False})


def test_a_run_on_a_remote_cluster_leaves_its_paths_to_the_cluster(tiny_llava_dir, tmp_path):
    run = RunConfig.load(None, {"engine.model": "org/on-the-cluster", "ray.address": "auto",
                                "data.calib": str(tmp_path / "there.txt")})
    assert run.engine.model == "org/on-the-cluster" and run.data.calib.endswith("there.txt")


def test_settings_one_section_copies_from_its_owner(tiny_llava_dir):
    model = {"engine.model": str(tiny_llava_dir)}
    run = RunConfig.load(None, {**model, "search.granularity": "matrix", "search.seed": 7, "ray.cpus_per_actor": 3})
    assert run.engine.granularity == "matrix" and run.data.seed == 7 and run.engine.threads == 3
    run = RunConfig.load(None, {**model, "search.seed": 7, "data.seed": 2, "engine.threads": 1, "ray.cpus_per_actor": 3})
    assert run.data.seed == 2 and run.engine.threads == 1  # set in their own section: kept
    assert RunConfig.load(None, {**model, "ray.cpus_per_actor": 0.5}).engine.threads == 1


def test_preset_layers_step_aside_for_what_was_chosen():
    base = dict(preset_layers("default", {}, set(), {}))
    assert base["search.offspring"] == 250 and base["engine.mode"] == "database" and base["search.elites"] == 3
    sequential = dict(preset_layers("default", {}, set(), {"engine.mode": "sequential"}))
    assert "search.offspring" not in sequential and "engine.mode" not in sequential
    from_file = dict(preset_layers("default", {"engine": {"mode": "sequential"}}, {"engine.mode"}, {}))
    assert "search.offspring" not in from_file and "engine.mode" not in from_file
    assert dict(preset_layers("default", {}, set(), {"search.population": 4}))["search.elites"] == 3
    assert dict(preset_layers("paper", {}, set(), {"search.population": 3}))["search.elites"] == 2
    assert dict(preset_layers(None, {}, set(), {"search.population": 2}))["search.elites"] == 1
    assert "search.elites" not in dict(preset_layers(None, {}, set(), {"search.population": 3, "search.elites": 1}))
    assert dict(preset_layers("paper", {}, set(), {"search.population": 8}))["search.elites"] == 5


@pytest.mark.parametrize("options, message", [
    ({"sparsity": 0.5, "pattern": "2:4"}, "--sparsity conflicts with --pattern"),
    ({"sparsity": 0.5, "policy": "p.json"}, "--sparsity conflicts with --policy"),
    ({"pattern": "2:4", "policy": "p.json"}, "an N:M pattern fixes the sparsity"),
    ({"pattern": "2:4", "owl": 0.1}, "an N:M pattern fixes the sparsity"),
    ({"policy": "p.json", "owl": 0.1}, "--owl computes its own per-block policy"),
])
def test_a_prune_job_takes_its_ratios_from_one_place(tmp_path, options, message):
    with pytest.raises(ValidationError, match=message):
        PruneJob(model="smollm2", out=tmp_path / "o", **options)


def test_a_prune_job_with_its_default_sparsity_takes_a_pattern_or_owl(tmp_path):
    assert PruneJob(model="smollm2", out=tmp_path, pattern="2:4").sparsity == 0.5
    assert PruneJob(model="smollm2", out=tmp_path, sparsity=0.6, owl=0.1).owl == 0.1
