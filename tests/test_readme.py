"""The README's Python snippets run as written (a snippet that rots is worse than none)."""

from __future__ import annotations

import re
import shlex
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
def test_the_default_runs_numbers_reproduce(compiled, tmp_path, capsys):
    """`scratchvae train` with no arguments, then `scratchvae evaluate`: the figures the README
    prints, within its stated 0.02 nats (with the kernels: the block; NumPy alone: the note),
    and with the kernels the printout's lines, as the README shows them."""
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
    if compiled:  # the printout: the README's block, line by line, its labels and its words
        capsys.readouterr()
        assert main(["evaluate", "--no-progress", out]) == 0
        printed = capsys.readouterr().out.replace(out, "runs/digits-vae").splitlines()
        block = re.search(r"```\n(checkpoint .*?)```", README.read_text(), flags=re.S)
        assert block, "README.md lacks the evaluate printout"

        def words(lines):  # the printout without its numbers (they move within 0.02)
            return [re.sub(r"-?\d[\d.,]*", "#", line).split() for line in lines]

        assert words(printed) == words(block.group(1).splitlines())


def _bash_commands() -> list[str]:
    """The `scratchvae ...` lines of the README's bash blocks, continuation lines joined."""
    text = README.read_text() if README.is_file() else ""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("scratchvae "):
                lines.append(line)
    return lines


@pytest.mark.parametrize("line", _bash_commands())
def test_readme_commands_parse(line):
    """Every `scratchvae` command the README shows is accepted by the parser as written."""
    from scratchvae.cli import build_parser

    build_parser().parse_args(shlex.split(line)[1:])  # an unknown flag or value: SystemExit


def test_readme_train_flags_exist():
    """The flags the README lists for `scratchvae train` are its options."""
    if not README.is_file():
        pytest.skip("README.md not beside the tests (installed package)")
    from scratchvae.cli import build_parser

    found = re.search(
        r"`scratchvae train` takes (.*?)\(`--help` lists them all", README.read_text(), re.S
    )
    assert found, "README.md lacks the list of `scratchvae train` flags"
    listed = set(re.findall(r"`(--[a-z-]+)", found.group(1)))
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["train"]
    options = {s for a in sub._actions for s in a.option_strings}
    assert listed and listed <= options, sorted(listed - options)


def _named_paths() -> list[str]:
    """Repository paths the README names: in backquotes, and its links and images."""
    text = README.read_text() if README.is_file() else ""
    quoted = re.findall(r"`((?:scratchvae|benchmarks|examples|docs|tests)/[\w./{},-]*)`", text)
    linked = re.findall(r"\]\(((?!https?:)[^)#\s]+)\)", text)
    paths = []
    for p in quoted + linked:
        braces = re.fullmatch(r"(.*)\{(.*)\}(.*)", p)  # results/x.{md,json}
        parts = braces.group(2).split(",") if braces else [""]
        paths += [f"{braces.group(1)}{s}{braces.group(3)}" if braces else p for s in parts]
    return sorted(set(paths))


@pytest.mark.parametrize("path", _named_paths())
def test_readme_paths_exist(path):
    assert (README.parent / path).exists(), f"README.md names {path}, which does not exist"


def test_readme_module_table_files_exist():
    """The module table's bare file names (`history.py`, `arrays.py`) are files of the package."""
    if not README.is_file():
        pytest.skip("README.md not beside the tests (installed package)")
    rows = [r for r in README.read_text().splitlines() if r.startswith("| `scratchvae/")]
    names = {n for r in rows for n in re.findall(r"`(\w+\.py)`", r)}
    package = {p.name for p in (README.parent / "scratchvae").rglob("*.py")}
    assert len(rows) > 10 and names, "README.md lacks its module table"
    assert names <= package, sorted(names - package)
