"""The public API surface: every module's ``__all__`` names only what exists there, and each
package's ``__init__`` lists in ``__all__`` every name it exports.

Each check is first shown a synthetic offender, so it can fail.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import types
from pathlib import Path

import pytest

import scratchvae


def _modules() -> list[pkgutil.ModuleInfo]:
    found = pkgutil.walk_packages(scratchvae.__path__, "scratchvae.")
    top = pkgutil.ModuleInfo(None, "scratchvae", True)
    return [top, *found]


def _import(name: str) -> types.ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:  # an optional dependency (numba) missing here
        pytest.skip(f"{name} needs {exc.name}")


def missing_names(module: types.ModuleType) -> list[str]:
    """Names in ``module.__all__`` that it does not have, or listed twice."""
    listed = list(getattr(module, "__all__", ()))
    missing = [n for n in listed if not hasattr(module, n)]  # loads a lazy one (scratchvae)
    return missing + sorted({n for n in listed if listed.count(n) > 1})


def exported_names(source: str, package: str) -> set[str]:
    """The public names a package's ``__init__`` source exports: those it imports from its
    own modules (``from .x import *``: x's ``__all__``), defines, or (scratchvae) loads on
    first use through ``_WHERE``."""
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.ImportFrom) and node.level:
            for alias in node.names:
                if alias.name == "*":
                    names |= set(importlib.import_module(f"{package}.{node.module}").__all__)
                else:
                    names.add(alias.asname or alias.name)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
            names |= set(targets)
            if targets == ["_WHERE"]:
                names |= {k.value for k in node.value.keys}
    return {n for n in names if not n.startswith("_")}


def test_the_checks_see_a_missing_a_repeated_and_an_unlisted_name():
    fake = types.ModuleType("fake")
    fake.__all__ = ["here", "gone", "here"]
    fake.here = 1
    assert missing_names(fake) == ["gone", "here"]
    source = (
        "from .arrays import get_xp as gx, _private\nfrom .dispatch import *\n"
        "import os\nfrom typing import Any\nLIMIT = 3\n_WHERE = {'fit': 'train'}\n"
        "def _helper(): pass\n__all__ = ['gx']\n"
    )
    dispatch = importlib.import_module("scratchvae.backend.dispatch").__all__
    expected = {"gx", "LIMIT", "fit", *dispatch}
    assert exported_names(source, "scratchvae.backend") == expected


@pytest.mark.parametrize("name", [m.name for m in _modules()])
def test_every_name_in_all_exists(name):
    assert missing_names(_import(name)) == []


@pytest.mark.parametrize("name", [m.name for m in _modules() if m.ispkg])
def test_each_package_lists_every_name_it_exports(name):
    package = _import(name)
    source = Path(package.__file__).read_text()
    assert sorted(exported_names(source, name) - set(getattr(package, "__all__", ()))) == []
