"""The CUDA kernels' arithmetic, run on the host and checked against the ops they replace.

``tests/kernels/test_gpu_kernels.py`` checks each CUDA kernel on a GPU (``pytest -m gpu``); most
machines that run this suite have none, and a kernel changed since the last GPU run would go
unchecked until the next. Here the same CUDA C (:mod:`scratchvae.kernels.gpu`,
:mod:`scratchvae.kernels.gpu_random`) is compiled as C++ by ``g++`` and run over NumPy arrays
(tests/cuda_on_host.py), on the inputs the Numba and GPU kernels are checked on, against the
op's readable body. The matrix products and column sums, which go to cuBLAS on a GPU, are
NumPy's here: what is checked is everything around them. Skips without a C++ compiler.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator

import numpy as np
import pytest
from cuda_on_host import module, usable
from op_cases import kernel_cases
from test_cpu_kernels import assert_same, make_args, op_of, run

from scratchvae.kernels import gpu, gpu_random

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
