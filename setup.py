"""Build glue: the repository's folders search/, prune_engine/ and actors/ install as efficientllava.search,
efficientllava.prune_engine and efficientllava.actors (every package below them discovered, none listed by hand).
Everything else about the package is declared in pyproject.toml."""
from setuptools import find_packages, setup

ROOTS = ("search", "prune_engine", "actors")

setup(
    package_dir={f"efficientllava.{root}": root for root in ROOTS},
    packages=[f"efficientllava.{name}" for name in find_packages(include=[*ROOTS, *(f"{r}.*" for r in ROOTS)])],
)
