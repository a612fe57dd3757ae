"""Packaging metadata (pyproject.toml, MANIFEST.in): the licence declared in the form setuptools
keeps supporting, its texts present, and the sdist holding what the tests read."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_the_licence_is_an_spdx_expression_with_its_texts() -> None:
    """``license = {text = ...}`` is deprecated in setuptools >= 77 (an error from 2027-02-18);
    the string form and ``license-files`` need setuptools >= 77 to build."""
    meta = _pyproject()
    project = meta["project"]
    assert isinstance(project["license"], str) and "MIT" in project["license"].split()
    assert "license-files" in project
    assert all((ROOT / path).is_file() for path in project["license-files"])
    (setuptools,) = [r for r in meta["build-system"]["requires"] if r.startswith("setuptools")]
    floor = re.fullmatch(r"setuptools>=(\d+)(?:\.\d+)*", setuptools)
    assert floor and int(floor.group(1)) >= 77, setuptools


def test_the_sdist_holds_what_the_tests_read() -> None:
    """Without MANIFEST.in setuptools put the top level of tests/ alone in the sdist: no
    conftest.py, no helpers, no examples, no docs/derivations.md (tests/test_derivations.py)."""
    lines = (ROOT / "MANIFEST.in").read_text(encoding="utf-8").splitlines()
    rules = [line.split() for line in lines if line.strip() and not line.startswith("#")]
    grafted = {words[1] for words in rules if words[0] == "graft"}
    included = {path for words in rules if words[0] == "include" for path in words[1:]}
    assert {"tests", "examples"} <= grafted
    assert "docs/derivations.md" in included
