"""docs/derivations.md names real functions, and names every op of the library."""

import importlib
import inspect
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "derivations.md"
REF = re.compile(r"`((?:scratchvae|examples)/[\w/]+\.py)::([\w.]+)`")


def _doc() -> str:
    return DOC.read_text(encoding="utf-8")


def _refs() -> set[tuple[str, str]]:
    return set(REF.findall(_doc()))


def _resolve(path: str, name: str):
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    obj = module
    for part in name.split("."):
        obj = getattr(obj, part)  # AttributeError names what is missing
    return obj


def test_the_document_references_functions():
    assert len(_refs()) > 40


@pytest.mark.parametrize("path,name", sorted(r for r in _refs() if r[0].startswith("scratchvae")))
def test_every_reference_exists(path, name):
    try:
        obj = _resolve(path, name)
    except ModuleNotFoundError as exc:  # scratchvae/kernels/series.py: Numba's alone
        if exc.name != "numba":
            raise
        pytest.skip(f"{path} needs numba (scratchvae[fast])")
    assert callable(obj), f"{path}::{name} is not a function or class"


def _public_ops() -> list[tuple[str, str]]:
    ops = []
    for mod in ("activations", "layers", "reparam", "losses", "iwae"):
        module = importlib.import_module(f"scratchvae.ops.{mod}")
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if fn.__module__ != module.__name__ or name.startswith("_"):
                continue
            if name.endswith(("_forward", "_backward", "_prob", "_normal")):
                ops.append((f"scratchvae/ops/{mod}.py", name))
    return ops


def test_every_op_is_found():
    names = {n for _, n in _public_ops()}
    assert {"dense_backward", "reparam_backward", "elu_backward", "gaussian_kl_forward"} <= names
    assert {"latent_backward", "dense_relu_backward", "bernoulli_log_prob", "log_normal"} <= names
    assert "get_activation" not in names  # a lookup, not an op


@pytest.mark.parametrize("path,name", _public_ops())
def test_every_public_op_is_derived_in_the_document(path, name):
    assert (path, name) in _refs(), f"docs/derivations.md does not reference `{path}::{name}`"


@pytest.mark.parametrize("name", ["SGD", "Adam", "adam_update", "clip_by_global_norm"])
def test_optimizer_updates_are_derived(name):
    assert ("scratchvae/optim.py", name) in _refs()


def test_math_blocks_are_balanced():
    """$$ blocks open and close; inline $...$ opens and closes on one line (GitHub renders
    math that is split over two source lines as text)."""
    text = _doc()
    assert text.count("$$") % 2 == 0
    for line in re.sub(r"\$\$.*?\$\$", "", text, flags=re.S).splitlines():
        assert line.count("$") % 2 == 0, line
