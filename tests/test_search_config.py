"""Item 7: the search config as one typed, frozen object with one-line errors."""
from __future__ import annotations

import numpy as np
import pydantic
import pytest

from efficientllava.search import ConfigError, SearchConfig, SearchDriver
from efficientllava.search.checkpoint import read_config


def _one_line_error(**kw) -> str:
    with pytest.raises(ConfigError) as info:
        SearchConfig(**kw)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("invalid search config")
    return msg


def test_defaults_follow_the_paper():
    c = SearchConfig()
    assert (c.target, c.span, c.step, c.tolerance, c.granularity) == (0.5, 0.10, 0.05, 0.01, "block")
    assert (c.population, c.elites, c.generations, c.time_budget_s) == (16, 4, 10, None)
    assert (c.eta, c.neighbours, c.temperature, c.projector_mode) == (0.5, 5, 1.0, "weighted")
    assert (c.projector_steps, c.projector_lr, c.seed, c.mutation_switches) == (4, 1e-3, 0, (1, 3))
    assert (c.projector_candidates, c.offspring, c.mm_weight, c.srm_scale) == (2, 0, 0.5, None)
    assert c.n_levels == 5
    assert issubclass(ConfigError, ValueError)


def test_frozen():
    with pytest.raises(pydantic.ValidationError):
        SearchConfig().eta = 0.0


@pytest.mark.parametrize("kw, words", [
    (dict(bogus=1), "unknown key 'bogus'"),
    (dict(population=0), "population"),
    (dict(projector_mode="sometimes"), "projector_mode"),
    (dict(granularity="row"), "granularity"),
    (dict(target=0.05), "below 0"),
    (dict(target=0.95), "not below 1"),
    (dict(target=0.6, span=0.4), "not below 1"),
    (dict(span=0.07), "not a multiple of step"),
    (dict(tolerance=-0.01), "tolerance"),
    (dict(elites=16), "elites (16) must be fewer than population (16)"),
    (dict(mutation_switches=(3, 1)), "mutation_switches"),
    (dict(temperature=0), "temperature"),
    (dict(time_budget_s=-1), "time_budget_s"),
])
def test_invalid_settings_are_one_line_errors(kw, words):
    assert words in _one_line_error(**kw)


def test_extreme_but_valid_levels():
    assert SearchConfig(target=0.1).target == 0.1  # lowest level exactly 0
    assert SearchConfig(target=0.85, span=0.10).n_levels == 5
    assert SearchConfig(span=0.0).n_levels == 1


def test_yaml_and_toml_files(tmp_path):
    (tmp_path / "c.yaml").write_text("target: 0.6\neta: 0\nmutation_switches: [1, 2]\nextra:\n  model: smollm2\n")
    (tmp_path / "c.toml").write_text('target = 0.6\neta = 0.0\nmutation_switches = [1, 2]\n[extra]\nmodel = "smollm2"\n')
    a, b = SearchConfig.from_file(tmp_path / "c.yaml"), SearchConfig.from_file(tmp_path / "c.toml")
    assert a == b and a.target == 0.6 and a.eta == 0.0 and a.mutation_switches == (1, 2)
    assert a.extra == {"model": "smollm2"}


def test_file_errors_are_one_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("population: 8\nelites: 2\nbogus: 1\n")
    (tmp_path / "broken.toml").write_text("population = = 8\n")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    for name, words in [("bad.yaml", "unknown key 'bogus'"), ("broken.toml", "cannot parse"),
                        ("list.yaml", "expected a mapping"), ("missing.yaml", "cannot read")]:
        with pytest.raises(ConfigError) as info:
            SearchConfig.from_file(tmp_path / name)
        assert words in str(info.value) and "\n" not in str(info.value)


def test_cli_overrides_merge_on_top_of_a_file(tmp_path):
    (tmp_path / "c.yaml").write_text("population: 8\nelites: 2\n")
    c = SearchConfig.load(tmp_path / "c.yaml", ["eta=0", "projector-mode=off", "extra.model=llava", "seed=3"])
    assert (c.population, c.elites, c.eta, c.projector_mode, c.seed) == (8, 2, 0.0, "off", 3)
    assert c.extra == {"model": "llava"}
    # unset CLI flags arrive as None and change nothing
    assert c.merge({"eta": None, "population": 12}).population == 12
    assert c.merge({"eta": None}).eta == 0.0
    with pytest.raises(ConfigError, match="unknown key 'popsize'"):
        c.merge(["popsize=4"])
    with pytest.raises(ConfigError, match="expected key=value"):
        c.merge(["eta"])
    with pytest.raises(ConfigError, match="elites"):
        c.merge({"elites": 9})


def test_round_trip_and_saved_into_run_dir(tmp_path):
    from test_search_synthetic import SyntheticEvaluator

    c = SearchConfig(population=6, elites=2, generations=1, extra={"model": "x", "actors": 2})
    (tmp_path / "c.yaml").write_text(c.to_yaml())
    assert SearchConfig.from_file(tmp_path / "c.yaml") == c
    SearchDriver(c, SyntheticEvaluator(n_blocks=4), str(tmp_path / "run")).run()
    assert SearchConfig.from_file(tmp_path / "run" / "config.yaml") == c
    assert SearchConfig.from_dict(read_config(str(tmp_path / "run"))) == c


def test_differences_ignore_resume_mutable_fields():
    c = SearchConfig()
    saved = c.to_dict()
    assert c.merge({"generations": 20, "time_budget_s": 5.0}).differences(saved) == []
    assert c.merge({"eta": 0.0, "seed": 1}).differences(saved) == ["eta", "seed"]
    assert np.isclose(c.merge({"eta": 0.25}).eta, 0.25)


def test_yaml_bare_off_means_projector_off(tmp_path):
    (tmp_path / "c.yaml").write_text("projector_mode: off\n")
    assert SearchConfig.from_file(tmp_path / "c.yaml").projector_mode == "off"
    with pytest.raises(ConfigError, match="projector_mode"):
        SearchConfig(projector_mode=True)


def test_the_paper_preset_is_algorithm_1_as_written():
    """docs/method.md "The paper preset": every departure of the engine switched off."""
    from efficientllava.actors.config import RunConfig

    run = RunConfig.load(preset="paper", overrides={"engine.model": "smol-llava",
                                                    "data.mm_calib": "easy-vqa:train,fashion-mnist:train"})
    s, e, d = run.search, run.engine, run.data
    assert (s.population, s.generations, s.elites, s.eta, s.neighbours) == (16, 10, 5, 0.5, 5)
    assert s.offspring == 0 and not s.offspring_budget  # no screening
    assert s.init == "random" and s.srm_scale == 1.0  # random first population; eta on G as written
    assert s.mm_weight == 1.0 and e.loss == "ce" and d.mm_samples == 64 and e.fitness_nsamples == 0  # task loss, 64
    assert e.mode == "sequential"  # every candidate pruned layer-sequentially
    assert s.projector_mode == "weighted" and not s.projector_guard and e.monitor_samples == 0  # no guard


def test_a_setting_added_since_a_config_was_saved_counts_as_its_default():
    """A checkpoint saved before a setting existed (e.g. survivors) resumes: the missing key is its default, the
    search it made; a saved value that differs, or a missing key set to another value now, is a difference."""
    cfg = SearchConfig(population=6, elites=2)
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("survivors", "mutation_switches")}
    assert cfg.differences(old) == []
    assert SearchConfig(population=6, elites=2, offspring=20, survivors=8).differences(old) == ["offspring",
                                                                                             "survivors"]
    assert cfg.differences({**old, "eta": 0.1}) == ["eta"]


@pytest.mark.parametrize("extra, words", [({"srm_scale": 2.0}, "fixed srm_scale"), ({"srm_sample": 4}, "srm_sample")])
def test_srm_rescale_excludes_a_fixed_or_sampled_scale(extra, words):
    with pytest.raises(ConfigError, match=f"^invalid search config: .*srm_rescale.*{words}"):
        SearchConfig(srm_rescale=True, **extra)
    assert SearchConfig(srm_rescale=True).srm_rescale and not SearchConfig().srm_rescale
