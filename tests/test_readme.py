"""The README's Python snippets run as written (a snippet that rots is worse than none)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    if not README.is_file():
        return []
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_the_training_step_and_the_gradient_check():
    if not README.is_file():
        pytest.skip("README.md not beside the tests (installed package)")
    blocks = _python_blocks()
    assert any("model.backward(cache)" in b and "opt.step" in b for b in blocks)
    assert any("numerical_vjp" in b for b in blocks)


@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_readme_snippet_runs(index, capsys):
    exec(compile(_python_blocks()[index], f"README.md python block {index}", "exec"), {})


def _readme_number(pattern: str) -> float:
    found = re.search(pattern, README.read_text(), flags=re.S)
    assert found, f"README.md lacks {pattern!r}"
    return float(found.group(1))


@pytest.mark.parametrize("compiled", [True, False], ids=["kernels", "numpy"])
def test_the_default_runs_numbers_reproduce(compiled, tmp_path):
    """`scratchvae train` with no arguments, then `scratchvae evaluate`: the figures the README
    prints, within its stated 0.02 nats (with the kernels: the block; NumPy alone: the note)."""
    if not README.is_file():
        pytest.skip("README.md not beside the tests (installed package)")
    from scratchvae.backend import kernels
    from scratchvae.checkpoint import load_model
    from scratchvae.cli import main
    from scratchvae.data import load_dataset
    from scratchvae.evaluate import evaluate

    number = r"(-?\d+(?:\.\d+)?)"
    if compiled:
        want_elbo = _readme_number(rf"-ELBO\s+{number}\s+\(recon")
        want_bound = _readme_number(rf"IW bound\s+log p\(x\) >= {number}")
    else:
        want_elbo = _readme_number(rf"NumPy alone[^)]*?ends at {number}")
        want_bound = _readme_number(rf"NumPy alone[^)]*?IW bound {number}")
    out = str(tmp_path / "run")
    with kernels(compiled):
        assert main(["train", "--no-progress", "--no-figures", "--out", out]) == 0
        model, _ = load_model(out)
        r = evaluate(model, load_dataset("digits", "test").x, iw_samples=1000)
    assert abs(r["neg_elbo"] - want_elbo) <= 0.02, (r["neg_elbo"], want_elbo)
    assert abs(-r["iw_nll"] - want_bound) <= 0.02, (-r["iw_nll"], want_bound)
