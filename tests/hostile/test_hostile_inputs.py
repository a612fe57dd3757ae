"""Hostile files and arguments: each ends in one ``scratchvae: error: ...`` line, exit status 2,
nothing lost, never a crash (issue: hostile files and everyday friction)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np  # numpy-boundary: writing crafted files
import pytest

from scratchvae.cli import main
from scratchvae.kernels import cpu
from scratchvae.ops.layers import DenseCache, DenseReluCache
from scratchvae.ops.reparam import LatentCache

TINY = ["--hidden", "16", "--latent", "2", "--epochs", "2", "--no-progress", "--no-figures"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hostile") / "run"
    assert main(["train", "--out", str(out), *TINY]) == 0
    return out


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _crafted(run_dir: Path, tmp_path: Path, **changes) -> Path:
    """A copy of the run folder whose checkpoint has ``changes`` (None removes an entry)."""
    arrays = {**_arrays(run_dir / "checkpoint.npz"), **changes}
    out = tmp_path / "crafted"
    out.mkdir()
    (out / "metrics.jsonl").write_bytes((run_dir / "metrics.jsonl").read_bytes())
    np.savez(out / "checkpoint.npz", **{k: v for k, v in arrays.items() if v is not None})
    return out


def _cli(*args: str, kernels: bool = True) -> subprocess.CompletedProcess:
    """The real command in a subprocess: a memory error kills it instead of the test run.
    The kernels stay on: the compiled Adam is what wrong-size moments would overrun."""
    env = {**os.environ, "SCRATCHVAE_KERNELS": "1" if kernels else "0"}
    code = "import sys; from scratchvae.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300
    )


def _assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if "error" in line.lower()]
    assert errors == lines[-1:] and errors[0].startswith("scratchvae: error: "), result.stderr
    for needle in needles:
        assert needle in errors[0]


# ------------------------------------------------------------------ defect 1: memory corruption
@pytest.mark.skipif(cpu.numba is None, reason="the crash needs the compiled Adam (numba)")
@pytest.mark.parametrize("size", [0, 10, 100_000])
def test_wrong_size_adam_moments_are_refused_before_the_compiled_update(run_dir, tmp_path, size):
    """Adam moments of the wrong size once reached the compiled update, which indexes them by
    the parameters' size: SIGSEGV or heap corruption. Now a one-line error, nothing changed."""
    bad = np.zeros(size, dtype=np.float32)
    out = _crafted(run_dir, tmp_path, **{"optim/m.flat": bad, "optim/v.flat": bad})
    before = (out / "checkpoint.npz").read_bytes()
    result = _cli("train", "--out", str(out), "--resume", *TINY[:-4], "--epochs", "3")
    _assert_one_line_error(result, "optim", "m.flat")
    assert (out / "checkpoint.npz").read_bytes() == before


@pytest.mark.parametrize(
    "changes, needle",
    [
        ({"optim/m.flat": np.zeros(4, np.float64)}, "m.flat"),  # wrong size and dtype
        ({"optim/v.flat": None}, "missing"),  # one moment only
        ({"optim/extra": np.zeros(3, np.float32)}, "unexpected"),
        ({"optim/t": np.array(-3)}, "step count"),
        ({"optim/t": np.array([1, 2])}, "step count"),
        ({"optim/t": np.array("x")}, "step count"),
    ],
    ids=["size-dtype", "missing", "extra", "negative-t", "array-t", "text-t"],
)
def test_malformed_optimizer_state_is_refused(run_dir, tmp_path, changes, needle):
    out = _crafted(run_dir, tmp_path, **changes)
    result = _cli("train", "--out", str(out), "--resume", *TINY[:-4], "--epochs", "3")
    _assert_one_line_error(result, needle)


def test_non_finite_optimizer_state_is_refused(run_dir, tmp_path):
    v = _arrays(run_dir / "checkpoint.npz")["optim/v.flat"].copy()
    v[3] = np.nan
    out = _crafted(run_dir, tmp_path, **{"optim/v.flat": v})
    result = _cli("train", "--out", str(out), "--resume", *TINY[:-4], "--epochs", "3")
    _assert_one_line_error(result, "v.flat", "NaN")


@pytest.mark.skipif(cpu.numba is None, reason="needs numba")
def test_compiled_kernels_refuse_arrays_they_would_overrun():
    """The last line of defence: no compiled kernel indexes past the arrays it is given."""
    f32 = np.float32
    p, small, one = np.zeros(8, f32), np.zeros(3, f32), np.asarray(1)
    a, W, b = np.zeros((4, 5), f32), np.zeros((5, 5), f32), np.zeros(5, f32)
    h, eps, dz = np.zeros((4, 6), f32), np.zeros((4, 3), f32), np.zeros((4, 2), f32)
    relu_cache = DenseReluCache(a, W, a.copy())
    calls = {
        "adam_update": lambda: cpu.adam_update(p, p, small, small, one, 1e-3, 0.9, 0.999, 1e-8),
        "adam_update dtype": lambda: cpu.adam_update(
            p, p.astype(np.float64), p, p, one, 1, 0.9, 0.9, 1
        ),
        "dense_relu_forward bias": lambda: cpu.dense_relu_forward(a, W, small),
        "dense_relu_forward dtype": lambda: cpu.dense_relu_forward(a, W, b.astype(np.float64)),
        "dense_relu_backward dh": lambda: cpu.dense_relu_backward(
            relu_cache, np.zeros((2, 5), f32)
        ),
        "dense_relu_backward db": lambda: cpu.dense_relu_backward(relu_cache, a, out_db=small),
        "dense_backward db": lambda: cpu.dense_backward(DenseCache(a, W), a, out_db=small),
        "bernoulli_nll_forward": lambda: cpu.bernoulli_nll_forward(a, np.zeros((2, 5), f32)),
        "bernoulli_log_prob": lambda: cpu.bernoulli_log_prob(a, np.zeros((4, 6), f32)),
        "latent_forward": lambda: cpu.latent_forward(h, np.zeros((4, 2), f32)),
        "latent_forward 1-d": lambda: cpu.latent_forward(h, small),
        "latent_backward": lambda: cpu.latent_backward(LatentCache(h, eps, eps), dz, 1.0),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match="mismatched shapes") as info:
            call()
        assert name.split()[0] in str(info.value)  # the message names the kernel
