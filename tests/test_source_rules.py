"""Source rules, checked with `ast`:

1. Only scratchvae/backend/arrays.py imports numpy / cupy / cupyx / scipy. Anywhere else such an
   import needs the marker comment ``# numpy-boundary: <reason>`` on its line (I/O boundaries),
   and a file without any marker must not call ``np.xxx(...)`` / ``cupy.xxx(...)`` either.
2. Every test-looking function in tests/ and its folders is collected: a top-level
   ``check_*`` / ``verify_*`` function (or one full of asserts without the ``test_`` prefix)
   that nothing calls is a whole test silently never run. Test file names are unique across
   the folders (pytest imports them by base name).

Each scanner is first shown a synthetic offending source, so these tests can fail.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE, TESTS = ROOT / "scratchvae", ROOT / "tests"
BACKEND = PACKAGE / "backend" / "arrays.py"
ARRAY_MODULES = {"numpy", "cupy", "cupyx", "scipy"}
ARRAY_ALIASES = {"np", "numpy", "cp", "cupy", "cupyx", "scipy"}  # not "sp": a common local
MARKER = "# numpy-boundary:"


# ------------------------------------------------------------------ rule 1: imports
def _imported_roots(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name.split(".")[0] for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module.split(".")[0]]
    if (  # importlib.import_module("cupy") / __import__("numpy")
        isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            or (isinstance(node.func, ast.Name) and node.func.id == "__import__")
        )
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return [node.args[0].value.split(".")[0]]
    return []


def _call_root(node: ast.Call) -> str | None:
    """'np' for np.linalg.norm(...), None for calls not on a module-like name."""
    f = node.func
    if not isinstance(f, ast.Attribute):
        return None
    while isinstance(f, ast.Attribute):
        f = f.value
    return f.id if isinstance(f, ast.Name) else None


def scan_source(source: str, filename: str = "<source>") -> list[str]:
    """Violations of rule 1 in one non-backend source file, as 'file:line: what' strings."""
    lines = source.splitlines()
    has_marker = MARKER in source
    problems = []
    for node in ast.walk(ast.parse(source, filename)):
        roots = [r for r in _imported_roots(node) if r in ARRAY_MODULES]
        if roots:
            span = lines[node.lineno - 1 : node.end_lineno]
            if not any(MARKER in line for line in span):
                problems.append(f"{filename}:{node.lineno}: imports {roots[0]} without {MARKER}")
        elif isinstance(node, ast.Call) and not has_marker:
            root = _call_root(node)
            if root in ARRAY_ALIASES:
                problems.append(
                    f"{filename}:{node.lineno}: calls {root}.* in a file with no {MARKER} import"
                    " (name the module xp: get_xp(a) / Backend.xp)"
                )
    return problems


@pytest.mark.parametrize(
    "source",
    [
        "import numpy as np\n",
        "import numpy\n",
        "from numpy import exp\n",
        "from scipy import special\n",
        "import scipy.special as sp\n",
        "import cupy as cp\n",
        "import cupyx.scipy.special\n",
        "import os, numpy\n",
        "import importlib\ncp = importlib.import_module('cupy')\n",
        "np = __import__('numpy')\n",
        "def f(x, np):\n    return np.exp(x)\n",  # a bare np.* call, no marker in the file
        "def f(x, cupy):\n    return cupy.linalg.norm(x)\n",
        "import numpy as np  # numpy-boundary: ok\nimport scipy\n",  # one marker covers one line
    ],
)
def test_scanner_flags_offending_sources(source: str) -> None:
    assert scan_source(source), source


@pytest.mark.parametrize(
    "source",
    [
        "import numpy as np  # numpy-boundary: saving .npz files\nnp.savez('f', a=1)\n",
        "from .backend import get_xp\n\ndef f(x):\n    return get_xp(x).exp(x)\n",
        "import numbers\nimport scipyish\nfrom . import numpy_helpers\n",
        "def f(xp, x):\n    return xp.exp(x)\n",
    ],
)
def test_scanner_accepts_clean_sources(source: str) -> None:
    assert scan_source(source) == [], source


def test_package_imports_array_modules_only_in_backend() -> None:
    files = sorted(p for p in PACKAGE.rglob("*.py") if p != BACKEND)
    assert len(files) >= 8  # the package is really being scanned
    problems = [msg for p in files for msg in scan_source(p.read_text(), str(p.relative_to(ROOT)))]
    assert problems == [], "\n".join(problems)


def test_backend_is_where_numpy_comes_from() -> None:
    roots = {r for node in ast.walk(ast.parse(BACKEND.read_text())) for r in _imported_roots(node)}
    assert {"numpy", "scipy"} <= roots


# ------------------------------------------------------------------ rule 2: collected tests
def _names_used(tree: ast.AST) -> set[str]:
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            used.add(node.id)
        elif isinstance(node, ast.Attribute):
            used.add(node.attr)
        elif isinstance(node, ast.ImportFrom):
            used.update(alias.name for alias in node.names)
    return used


def _is_fixture(fn: ast.FunctionDef) -> bool:
    return any("fixture" in ast.unparse(d) for d in fn.decorator_list)


def uncollected_tests(sources: dict[str, str]) -> list[str]:
    """Top-level functions that look like tests, are not named test_*, and are never used."""
    trees = {name: ast.parse(src, name) for name, src in sources.items()}
    used = set().union(*(_names_used(t) for t in trees.values())) if trees else set()
    found = []
    for name, tree in trees.items():
        for fn in tree.body:
            if not isinstance(fn, ast.FunctionDef) or fn.name.startswith("test"):
                continue
            looks_like_test = fn.name.startswith(("check", "verify")) or (
                sum(isinstance(n, ast.Assert) for n in ast.walk(fn)) >= 2 and not fn.args.args
            )
            if looks_like_test and not _is_fixture(fn) and fn.name not in used:
                found.append(f"{name}: {fn.name}")
    return found


def test_uncollected_test_finder_flags_a_pseudo_test() -> None:
    sources = {
        "test_a.py": "def check_vae_gradients():\n    assert 1 == 2\n",
        "test_b.py": "def verify_all():\n    assert False\n",
        "test_c.py": "def whole_model():\n    assert 1\n    assert 2\n",
        "test_d.py": "def check_used(x):\n    assert x\n\ndef test_it():\n    check_used(1)\n",
    }
    assert uncollected_tests(sources) == [
        "test_a.py: check_vae_gradients",
        "test_b.py: verify_all",
        "test_c.py: whole_model",
    ]


def test_every_test_function_is_collected() -> None:
    files = sorted(TESTS.rglob("*.py"))  # tests/ mirrors the package: subfolders too
    assert len(files) >= 10 and any(p.parent != TESTS for p in files)
    sources = {str(p.relative_to(TESTS)): p.read_text() for p in files}
    assert uncollected_tests(sources) == []


def test_test_file_names_are_unique_across_folders() -> None:
    # pytest's default "prepend" import mode, with no __init__.py in tests/, imports each test
    # file by its base name: two tests/**/test_x.py would collide at collection
    names = [p.name for p in TESTS.rglob("test_*.py")]
    assert len(names) >= 10
    assert sorted(names) == sorted(set(names))


# ------------------------------------------------------------------ rule 3: the architecture
# The models and the MLP read like the textbook: one op call per line. An op picks its own
# implementation (scratchvae.backend.op), so these files never mention an array library, a
# kernel module or a kernel switch.
TEXTBOOK = ("models.py", "vae_weighted.py", "autoencoders.py", "mlp.py")
KERNEL_WORDS = ("cupy", "numba", "is_cupy", "is_numpy", "kernels", "compiled", "ElementwiseKernel")


def kernel_selection(source: str) -> list[str]:
    """Names and imports in ``source`` that choose an implementation (comments ignored)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name | ast.Attribute):
            name = node.id if isinstance(node, ast.Name) else node.attr
        elif isinstance(node, ast.ImportFrom):
            name = f"{node.module} {' '.join(a.name for a in node.names)}"
        elif isinstance(node, ast.Import):
            name = " ".join(a.name for a in node.names)
        else:
            continue
        found += [f"{node.lineno}: {name}" for w in KERNEL_WORDS if w in (name or "")]
    return found


def test_kernel_selection_finder_flags_a_model_that_chooses() -> None:
    assert kernel_selection("if is_cupy(x):\n    y = 1\n")
    assert kernel_selection("from .kernels import cpu\n")
    assert kernel_selection("from . import compiled\nif compiled.applies(x): pass\n")
    assert kernel_selection("import cupy\n")
    assert kernel_selection("h = dense_relu_forward(x, W, b)  # numba inside\n") == []


@pytest.mark.parametrize("name", TEXTBOOK)
def test_models_and_mlp_do_not_choose_kernels(name: str) -> None:
    assert kernel_selection((PACKAGE / name).read_text()) == []


def test_no_module_over_400_lines() -> None:
    """The package's modules, and the examples' and benchmarks' scripts, which users read too."""
    files = [*PACKAGE.rglob("*.py"), *(ROOT / "examples").glob("*.py")]
    files += (ROOT / "benchmarks").glob("*.py")
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in files}
    assert len(sizes) >= 40
    assert {name: n for name, n in sizes.items() if n > 400} == {}


def test_a_vae_step_reads_in_six_files() -> None:
    """From the trainer's step to the optimizer's update, the functions a VAE step executes
    (its readable path: kernels off) live in at most six files, besides the op dispatch and the
    buffers (backend/, params.py), which a reader does not need to open to follow the math."""
    import sys

    from scratchvae.backend import Backend, kernels
    from scratchvae.models import VAE
    from scratchvae.optim import Adam

    bk = Backend("numpy", "float64", seed=0)
    model, opt = VAE(12, hidden=[8], latent=2, backend=bk), Adam(1e-3)
    x, noise = bk.uniform((4, 12)), model.draw_noise(4)
    files: set[str] = set()

    def record(frame, event, arg):  # noqa: ANN001, ANN202
        path = frame.f_code.co_filename
        if event == "call" and str(PACKAGE) in path:
            files.add(str(Path(path).relative_to(PACKAGE)))

    with kernels(False):
        sys.setprofile(record)
        try:
            _, grads = model.loss_and_grads(x, noise, kl_weight=0.5)
            opt.step(model.params, grads)
        finally:
            sys.setprofile(None)
    step_files = {f for f in files if not f.startswith("backend/")} - {"params.py"}
    assert step_files == {
        "models.py",
        "mlp.py",
        "ops/layers.py",
        "ops/reparam.py",
        "ops/losses.py",
        "optim.py",
    }
