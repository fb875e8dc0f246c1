"""The shape of the code: dependencies point one way (search <- prune_engine <- actors), no import cycle between files,
test-only code under tests/, every module opens with a line saying what it holds. Read from the AST of every module,
so imports inside functions count too."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("search", "prune_engine", "actors")
# a package may import from the ones before it in this order, never from the ones after
LAYERS = {"search": 0, "prune_engine": 1, "actors": 2}


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules a module imports (anywhere in its body), as module names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import module` imports the module; `from module import name` the module
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` where only a.b is a module of ours
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def test_dependencies_point_one_way(graph):
    wrong = [f"{m} imports {d}" for m, deps in graph.items() for d in deps
             if LAYERS[d.split(".")[0]] > LAYERS[m.split(".")[0]]]
    assert not wrong, "; ".join(wrong)


def test_no_import_cycle_between_files(graph):
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(" -> ".join(path[path.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "; ".join(cycles)


def test_the_checker_sees_cycles_and_wrong_directions(tmp_path):
    """The two checks above can fail: a made-up package with both faults is caught."""
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "a.py").write_text('"""a."""\ndef f():\n    from search.b import g\n    from actors.x import y\n')
    (tmp_path / "search" / "b.py").write_text('"""b."""\nfrom search import a\n')
    known = {"search.a": tmp_path / "search" / "a.py", "search.b": tmp_path / "search" / "b.py",
             "actors.x": tmp_path / "x.py"}
    assert imports_of("search.a", known["search.a"], known) == {"search.b", "actors.x"}
    assert imports_of("search.b", known["search.b"], known) == {"search.a"}


def test_production_packages_hold_no_test_code():
    import re

    test_code = re.compile(r"^\s*(import pytest|from pytest|import unittest)|SIGKILL|_FAULT", re.M)
    offenders = [str(p.relative_to(ROOT)) for package in PACKAGES for p in (ROOT / package).rglob("*.py")
                 if p.stem.startswith("test") or test_code.search(p.read_text())]
    assert not offenders, offenders


def test_every_module_opens_with_a_line_saying_what_it_holds():
    missing = [str(p.relative_to(ROOT)) for p in modules().values()
               if not (ast.get_docstring(ast.parse(p.read_text())) or "").strip()]
    assert not missing, missing
