"""benchmarks/anytime.py on a tiny LLaVA: a search resumed generation by generation, each point scored."""
import json

import pytest

import benchmarks.common as common
from benchmarks import anytime


@pytest.fixture
def ray_stopped_after():
    """The benchmark starts a local Ray cluster in this process (ray_started): stop it, so later tests start clean."""
    yield
    import ray

    ray.shutdown()


@pytest.mark.ray
@pytest.mark.slow
def test_anytime_points_follow_one_search_and_are_cached(tiny_llava_dir, tmp_path, monkeypatch, ray_stopped_after):
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(anytime, "RESULTS", tmp_path / "results")
    args = ["--model", str(tiny_llava_dir), "--presets", "default", "--targets", "0.5",
            "--search", "{population: 3, elites: 1, generations: 2, offspring: 4}",
            "--data", "{nsamples: 4, seqlen: 32, mm_samples: 4}", "--eval-segments", "2", "--eval-seqlen", "32",
            "--eval-vqa", "4", "--actors", "1", "--work", str(tmp_path / "work")]
    assert anytime.main(args) == 0
    doc = json.loads((tmp_path / "results" / "anytime.json").read_text())
    (rows,) = doc["points"].values()
    assert [r["generation"] for r in rows] == [1, 2]
    assert 0 < rows[0]["search_s"] < rows[1]["search_s"] and 0 < rows[0]["evaluations"] < rows[1]["evaluations"]
    assert all(r["sparsity"] == pytest.approx(0.5, abs=0.011) for r in rows)
    assert (tmp_path / "results" / "anytime.png").stat().st_size > 0
    # a second run reads every point from the cache: nothing is searched again
    monkeypatch.setattr(anytime, "search_point", lambda *a, **k: pytest.fail("searched again"))
    assert anytime.main(args) == 0
    again = json.loads((tmp_path / "results" / "anytime.json").read_text())
    assert list(again["points"].values())[0] == rows


def test_a_run_past_the_asked_generation_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(anytime, "checkpoint_generation", lambda run_dir: 3)
    with pytest.raises(anytime.AnytimeError, match="at generation 3, past 2"):
        anytime.search_point(None, 0.7, tmp_path / "run", 2)


def test_a_point_the_run_is_past_is_left_out_and_said(tmp_path, monkeypatch):
    def point(settings, target, work, g, label):
        if g == 1:
            raise anytime.AnytimeError(f"run is at generation 3, past {g}")
        return {"generation": g}

    monkeypatch.setattr(anytime, "measured_point", point)
    rows, missing = anytime.measured_curve(None, 0.5, tmp_path, [1, 3, 8], "quality")
    assert [r["generation"] for r in rows] == [3, 8]
    assert missing == ["quality at 0.5, generation 1 (run is at generation 3, past 1)"]
