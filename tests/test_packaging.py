"""Packaging: dependency ranges (not pins) in pyproject.toml, and a wheel that carries every package and the assets."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_states_ranges_and_keeps_deepsparse_optional():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = {d.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip(): d for d in project["dependencies"]}
    assert not any("==" in d for d in project["dependencies"]), "exact pins belong in constraints.txt"
    assert deps["torch"] == "torch>=2.4" and deps["ray"].startswith("ray[tune,default]>=")
    assert "deepsparse" not in deps and "onnx" not in deps and "numpy<2" not in project["dependencies"]
    assert any(d.startswith("deepsparse") for d in project["optional-dependencies"]["deepsparse"])
    assert "<" not in project["requires-python"]
    # the tested set stays pinned, and make installs it with the extra
    constraints = (ROOT / "constraints.txt").read_text()
    assert "torch==" in constraints and "ray==" in constraints and "deepsparse==" in constraints
    assert "-c constraints.txt" in (ROOT / "Makefile").read_text() and "deepsparse]" in (ROOT / "Makefile").read_text()


@pytest.mark.slow
def test_wheel_holds_packages_assets_and_entry_point(tmp_path):
    source = tmp_path / "src"  # a copy: setuptools builds in the source tree (build/), not in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("prune_engine", "search", "actors"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             str(source), "-w", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("efficientllava-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in ("prune_engine", "prune_engine/data", "prune_engine/models", "prune_engine/evaluation", "search",
                    "actors"):
        assert f"{package}/__init__.py" in names
    assert "actors/cli.py" in names and "prune_engine/checks.py" in names
    for asset in (ROOT / "prune_engine" / "assets").iterdir():
        assert f"prune_engine/assets/{asset.name}" in names
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "Requires-Dist: torch>=2.4" in text and "Provides-Extra: deepsparse" in text
    entry_points = zipfile.ZipFile(wheel).read(metadata.replace("METADATA", "entry_points.txt")).decode()
    assert "efficientllava = actors.cli:app" in entry_points
