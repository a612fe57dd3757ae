"""The CUDA kernels' arithmetic, run on the host and checked against the ops they replace.

``tests/kernels/test_gpu_kernels.py`` checks each CUDA kernel on a GPU (``pytest -m gpu``); most
machines that run this suite have none, and a kernel changed since the last GPU run would go
unchecked until the next. Here the same CUDA C (:mod:`scratchvae.kernels.gpu`,
:mod:`scratchvae.kernels.gpu_random`) is compiled as C++ by ``g++`` and run over NumPy arrays
(tests/cuda_on_host.py), on the inputs the Numba and GPU kernels are checked on, against the
op's readable body. The matrix products and column sums, which go to cuBLAS on a GPU, are
NumPy's in those tests; the cuBLAS binding's own arithmetic (row-major arrays handed to
column-major cuBLAS: operands swapped, leading dimensions, transposes) is checked further down
against a stand-in with cuBLAS's semantics and argument checks. Skips without a C++ compiler.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator

import numpy as np
import pytest
from cuda_on_host import HostCublas, host_array, module, usable
from hypothesis import given
from hypothesis import strategies as st
from op_cases import kernel_cases
from test_cpu_kernels import assert_same, make_args, op_of, run

from scratchvae.kernels import cublas, gpu, gpu_random

WHY_NOT = usable()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")
NAMES = sorted(gpu.KERNELS)


def _gemm(a, b, out, trans_a=False, trans_b=False):
    """cuBLAS's product, as the kernels call it: into ``out``."""
    return np.matmul(a.T if trans_a else a, b.T if trans_b else b, out=out)


@contextlib.contextmanager
def on_host() -> Iterator[None]:
    """The GPU kernels' modules with the host stand-in for CuPy, and caches of their own (so
    the real CuPy kernels of a GPU run are neither reused nor replaced)."""
    xp = module()
    sums = types.SimpleNamespace(column_sum=lambda a, out: np.sum(a, axis=0, out=out))
    with pytest.MonkeyPatch.context() as mp:
        for kernels in (gpu, gpu_random):
            mp.setattr(kernels, "import_cupy", lambda: xp)
        mp.setattr(gpu, "_COMPILED", {})
        mp.setattr(gpu_random, "_KERNELS", {})
        mp.setattr(gpu, "gemm", _gemm)
        mp.setattr(gpu, "cublas", sums)
        yield


@pytest.mark.parametrize("name", NAMES)
@kernel_cases
def test_cuda_kernel_on_the_host_equals_its_op(name, B, D, H, variant, dtype, scale, seed) -> None:
    """Same inputs: the CUDA kernel's C (on the host) and the op's body give the same results,
    in-place writes, dtypes and shapes, to rounding (float32 1e-5, float64 1e-12)."""
    spec = (name, dtype, B, D, H, variant, scale, seed)
    *want, _ = run(name, *make_args(*spec), on=False)
    args, kwargs = make_args(*spec)
    with on_host():
        result = gpu.KERNELS[name](*args, **kwargs)
    assert_same([result, args, kwargs], want, dtype, False, name)


def test_the_kernels_name_each_op() -> None:
    """Every kernel here is the fast path of an op of the same name (so the test above covers
    each CUDA kernel the dispatch can pick)."""
    assert NAMES and all(op_of(name).op_name == name for name in NAMES)


# ------------------------------------------------------------------ the counter-based generator
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_counter_rng_on_the_host(dtype: str) -> None:
    """The GPU generator's draws: uniform in [0, 1) with mean 1/2 and variance 1/12, normal
    with mean 0 and variance 1 (each within 5 standard errors over 2^18 draws), a new stream
    after each draw (the counter advanced), and the same numbers from the same seed and
    counter."""
    n = 1 << 18
    with on_host():
        rng = gpu_random.CounterRNG(seed=12345)
        u, u_next = rng.random((n,), dtype), rng.random((n,), dtype)
        z = rng.standard_normal((n // 2, 2), dtype)
        assert int(rng.counter[0]) == 3
        again = gpu_random.CounterRNG(seed=12345, counter=2).standard_normal((n // 2, 2), dtype)
        other = gpu_random.CounterRNG(seed=12346).random((n,), dtype)
    assert u.dtype == z.dtype == np.dtype(dtype) and z.shape == (n // 2, 2)
    assert 0.0 <= u.min() and u.max() < 1.0
    se = 5 / np.sqrt(n)
    assert abs(u.mean() - 0.5) < se * np.sqrt(1 / 12)
    assert abs(u.var() - 1 / 12) < se * np.sqrt(1 / 180)  # var of (u - 1/2)^2: 1/180
    assert abs(z.mean()) < se and abs(z.var() - 1) < se * np.sqrt(2)
    np.testing.assert_array_equal(again, z)
    assert not np.array_equal(u, u_next) and not np.array_equal(u, other)
    assert abs(np.corrcoef(u, u_next)[0, 1]) < se and abs(np.corrcoef(u, other)[0, 1]) < se


# ------------------------------------------------------------------ the cuBLAS binding
@contextlib.contextmanager
def cublas_on_host() -> Iterator[HostCublas]:
    """:mod:`scratchvae.kernels.cublas` calling :class:`HostCublas` instead of libcublas."""
    lib = HostCublas()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cublas, "_STATE", {})
        mp.setattr(cublas, "_library", lambda: lib)
        mp.setattr(cublas, "_handle", lambda: None)
        mp.setattr(cublas, "import_cupy", module)
        yield lib


sizes = st.integers(0, 9)


@given(m=sizes, k=sizes, n=sizes, trans_a=st.booleans(), trans_b=st.booleans(),
       dtype=st.sampled_from(["float32", "float64"]), seed=st.integers(0, 2**16))  # fmt: skip
def test_cublas_gemm_on_the_host_equals_numpy(m, k, n, trans_a, trans_b, dtype, seed) -> None:
    """``gemm(a, b, out, trans_a, trans_b)`` writes op(a) @ op(b) into out through cuBLAS's
    column-major call, for every transpose pair and every size from 0 (no call: out left, or
    zeroed when k = 0); the wrong output shape is refused before any call."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    out = host_array(np.full((m, n), np.nan, dtype))
    with cublas_on_host() as lib:
        assert cublas.gemm(host_array(a), host_array(b), out, trans_a, trans_b) is out
        with pytest.raises(ValueError, match="mismatched"):
            cublas.gemm(host_array(a), host_array(b), host_array(np.empty((m, n + 1), dtype)))
    want = (a.T if trans_a else a) @ (b.T if trans_b else b)
    np.testing.assert_allclose(out, want, rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-6)
    assert lib.calls == ([{"float32": "sgemm", "float64": "dgemm"}[dtype]] if m * n * k else [])


@given(B=sizes, H=sizes, dtype=st.sampled_from(["float32", "float64"]), seed=st.integers(0, 99))
def test_cublas_column_sum_on_the_host(B, H, dtype, seed) -> None:
    """``column_sum(a, out)``: the column sums of a (B, H) by cuBLAS's GEMV on a times ones
    (zeros for B = 0), into out."""
    a = np.random.default_rng(seed).standard_normal((B, H)).astype(dtype)
    out = host_array(np.full(H, np.nan, dtype))
    with cublas_on_host() as lib:
        assert cublas.column_sum(host_array(a), out) is out
        with pytest.raises(ValueError, match="column_sum"):
            cublas.column_sum(host_array(a), host_array(np.empty(H + 1, dtype)))
    np.testing.assert_allclose(out, a.sum(axis=0), rtol=1e-5 if dtype == "float32" else 1e-12)
    assert lib.calls == ([{"float32": "sgemv", "float64": "dgemv"}[dtype]] if B * H else [])


def test_the_host_kernels_keep_cupys_rules() -> None:
    """The stand-in refuses what CuPy refuses (else a kernel passing here could fail on a GPU):
    a loop size from scalars and raw arrays alone, size= beside arrays, a dtype other than the
    parameter's, some outputs but not all; T is bound from a 0-d array, as CuPy binds it."""
    from cuda_on_host import ElementwiseKernel

    fill = ElementwiseKernel("float32 s", "raw float32 out", "out[i] = s", "fill")
    out = np.zeros(5, np.float32)
    fill(np.float32(2), out, size=5)
    np.testing.assert_array_equal(out, 2)
    with pytest.raises(ValueError, match="Loop size is undecided"):
        fill(np.float32(2), out)
    twice = ElementwiseKernel("T x", "T y", "y = x + x", "twice")
    with pytest.raises(ValueError, match="size= is given with arrays"):
        twice(np.ones(3, np.float32), size=3)
    with pytest.raises(TypeError, match="Type is mismatched"):
        fill(np.float64(2), np.zeros(5), size=5)
    both = ElementwiseKernel("T x", "T y, T z", "y = x; z = x", "both")
    with pytest.raises(TypeError, match="Wrong number of arguments"):
        both(np.ones(3), np.ones(3))
    assert twice(np.array(1.5, np.float32)).dtype == np.float32  # T from a 0-d array
