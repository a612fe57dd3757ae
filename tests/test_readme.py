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
