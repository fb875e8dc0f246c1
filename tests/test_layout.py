"""The shape of the code: dependencies point one way (search <- prune_engine <- actors), no import cycle between files,
test-only code under tests/, every module opens with a line saying what it holds. Read from the AST of every module,
so imports inside functions count too."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("search", "prune_engine", "actors")
IMPORT_PACKAGE = "efficientllava"  # the folders install as efficientllava.search, ... (setup.py)
# a package may import from the ones before it in this order, never from the ones after
LAYERS = {"search": 0, "prune_engine": 1, "actors": 2}
# the method stays pure: no model, no Ray
FORBIDDEN = {"search": ("torch", "ray", "transformers")}


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Module name (efficientllava.search.driver, ...) -> file, for every module of the three packages under root."""
    out = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join((IMPORT_PACKAGE,) + (parts[:-1] if parts[-1] == "__init__" else parts))
            out[name] = path
    return out


def package_of(module: str) -> str:
    return module.split(".")[1]


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


def import_graph(known: dict[str, Path]) -> dict[str, set[str]]:
    return {name: imports_of(name, path, known) for name, path in known.items()}


def wrong_directions(graph: dict[str, set[str]]) -> list[str]:
    return [f"{m} imports {d}" for m, deps in graph.items() for d in deps
            if LAYERS[package_of(d)] > LAYERS[package_of(m)]]


def import_cycles(graph: dict[str, set[str]]) -> list[str]:
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
    return cycles


def forbidden_imports(known: dict[str, Path]) -> list[str]:
    """Third-party imports a package must not make (anywhere in a module's body), as 'module imports lib'."""
    found = []
    for name, path in known.items():
        banned = FORBIDDEN.get(package_of(name), ())
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                roots = [(node.module or "").split(".")[0]]
            else:
                continue
            found += [f"{name} imports {r}" for r in roots if r in banned]
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(modules())


def test_dependencies_point_one_way(graph):
    wrong = wrong_directions(graph)
    assert not wrong, "; ".join(wrong)


def test_no_import_cycle_between_files(graph):
    cycles = import_cycles(graph)
    assert not cycles, "; ".join(cycles)


def test_search_imports_no_model_and_no_ray():
    found = forbidden_imports(modules())
    assert not found, "; ".join(found)


def test_the_checks_catch_a_made_up_bad_tree(tmp_path):
    """The checks above can fail: a made-up tree with a cycle, a wrong direction and torch/ray in search/ is caught."""
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(f'"""{package}."""\n')
    (tmp_path / "search" / "a.py").write_text(
        '"""a."""\nimport torch\ndef f():\n    from efficientllava.search.b import g\n'
        '    from efficientllava.actors.x import y\n    from ray.util import ActorPool\n')
    (tmp_path / "search" / "b.py").write_text('"""b."""\nfrom efficientllava.search import a\n')
    (tmp_path / "actors" / "x.py").write_text('"""x."""\nimport torch\nfrom ..prune_engine import y\n')
    (tmp_path / "prune_engine" / "y.py").write_text('"""y."""\nimport numpy\n')
    known = modules(tmp_path)
    graph = import_graph(known)
    assert graph["efficientllava.search.a"] == {"efficientllava.search.b", "efficientllava.actors.x"}
    assert graph["efficientllava.actors.x"] == {"efficientllava.prune_engine.y"}  # a relative import resolves
    assert wrong_directions(graph) == ["efficientllava.search.a imports efficientllava.actors.x"]
    assert import_cycles(graph) == ["efficientllava.search.a -> efficientllava.search.b -> efficientllava.search.a"]
    assert sorted(forbidden_imports(known)) == ["efficientllava.search.a imports ray",
                                                "efficientllava.search.a imports torch"]  # actors/ may use torch
    # the real tree has none of these
    (tmp_path / "search" / "a.py").write_text('"""a."""\n')
    (tmp_path / "search" / "b.py").write_text('"""b."""\nfrom efficientllava.search import a\n')
    clean = import_graph(modules(tmp_path))
    assert not wrong_directions(clean) and not import_cycles(clean) and not forbidden_imports(modules(tmp_path))


def _tree(root: Path, files: dict[str, str]) -> dict[str, Path]:
    """A made-up tree of the three packages under root, with `files` ({"search/a.py": source}) in it."""
    for package in PACKAGES:
        (root / package).mkdir(exist_ok=True)
        (root / package / "__init__.py").write_text(f'"""{package}."""\n')
    for rel, source in files.items():
        (root / rel).write_text(f'"""{rel}."""\n{source}')
    return modules(root)


def test_a_wrong_direction_is_flagged_however_it_is_written(tmp_path):
    graph = import_graph(_tree(tmp_path, {
        "search/low.py": "import efficientllava.prune_engine.mid\n",  # absolute, module level
        "prune_engine/mid.py": "def f():\n    from ..actors import top\n",  # relative, inside a function
        "actors/top.py": "from efficientllava.search import low\nfrom efficientllava.prune_engine.mid import f\n",
    }))
    assert sorted(wrong_directions(graph)) == ["efficientllava.prune_engine.mid imports efficientllava.actors.top",
                                               "efficientllava.search.low imports efficientllava.prune_engine.mid"]


def test_a_cycle_is_flagged_once_whatever_its_length(tmp_path):
    graph = import_graph(_tree(tmp_path, {
        "search/a.py": "from . import b\n", "search/b.py": "from . import c\n",
        "search/c.py": "class C:\n    def m(self):\n        from efficientllava.search.a import x\n",
        "actors/p.py": "from efficientllava.actors import q\n", "actors/q.py": "import efficientllava.actors.p\n",
        "actors/r.py": "from efficientllava.actors import p, q\n",  # imports into a cycle: not itself one
    }))
    assert import_cycles(graph) == [
        "efficientllava.actors.p -> efficientllava.actors.q -> efficientllava.actors.p",
        "efficientllava.search.a -> efficientllava.search.b -> efficientllava.search.c -> efficientllava.search.a"]
    assert not wrong_directions(graph)


def test_torch_and_ray_in_search_are_flagged_in_every_spelling(tmp_path):
    known = _tree(tmp_path, {
        "search/a.py": "import torch.nn as nn\n",
        "search/b.py": "def f():\n    from ray import remote\n",
        "search/c.py": "class C:\n    def m(self):\n        import ray.util.queue\n",
        "search/d.py": "from transformers import AutoModel\n",
        "search/ok.py": "import torchvision_free\nimport rayleigh\nfrom . import a\nimport pyarrow.fs\n",
        "actors/x.py": "import ray\nimport torch\n",  # the layers above may use them
    })
    assert sorted(forbidden_imports(known)) == ["efficientllava.search.a imports torch",
                                                "efficientllava.search.b imports ray",
                                                "efficientllava.search.c imports ray",
                                                "efficientllava.search.d imports transformers"]


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
