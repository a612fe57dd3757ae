"""The array backend: the only module that imports numpy, cupy, scipy.special and cupyx.

A :class:`Backend` is chosen once (a constructor argument or the CLI's ``--backend``) and carries

* ``xp``        the array module (``numpy`` or ``cupy``);
* ``dtype``     the floating dtype (float32 for training, float64 for gradient checks);
* ``rng``       a seeded random generator of that array module (no global random state);
* ``to_numpy``  the conversion used at boundaries only (saving, plotting, printing).

Ops do not take a backend argument: they ask :func:`get_xp` / :func:`get_special` for the
functions that match the arrays they were given, so the same code runs on NumPy and CuPy.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import scipy.special as _sp_special

__all__ = [
    "Backend",
    "BackendError",
    "get_backend",
    "get_xp",
    "get_special",
    "cupy_available",
    "to_numpy",
    "is_cupy",
    "cpu_threads",
    "run_chunked",
    "cupy_kernel",
    "cupy_sum_kernel",
]

_DTYPES = {"float32": np.float32, "float64": np.float64}


def _dtype_name(dtype: Any) -> str:
    """'float32' for "float32", numpy.float32 or numpy.dtype('float32'); str(dtype) otherwise."""
    try:
        return np.dtype(dtype).name
    except TypeError:
        return str(dtype)


class BackendError(RuntimeError):
    """A backend was asked for that cannot be provided here (one-line, user-facing message)."""


# --------------------------------------------------------------------------------------------
# Special functions, one namespace per array module.
# --------------------------------------------------------------------------------------------


def _softplus(xp: ModuleType):
    # softplus(x) = log(1 + e^x) = logaddexp(0, x)
    #             = max(x, 0) + log1p(e^{-|x|})     (e^{-|x|} <= 1: stable for |x| of 1000)
    # The second form is the one computed: same value to rounding, and about 15x faster than
    # NumPy's logaddexp (five cheap vectorised ufuncs instead of one slow scalar loop).
    def softplus(x, out=None, work=None):  # work: scratch of x's shape (else allocated)
        if xp is not np:  # on the GPU logaddexp is already one fused kernel
            return xp.logaddexp(0, x, out=out)
        t = xp.abs(x, out=out)
        xp.negative(t, out=t)
        xp.exp(t, out=t)  # e^{-|x|}, in (0, 1]
        xp.log1p(t, out=t)
        t += xp.maximum(x, 0, out=work)
        return t

    return softplus


def _log_expit(xp: ModuleType):
    # log sigmoid(x) = -softplus(-x)
    softplus = _softplus(xp)

    def log_expit(x):
        return -softplus(-x)

    return log_expit


_NUMPY_SPECIAL = SimpleNamespace(
    name="numpy",
    expit=_sp_special.expit,
    softplus=_softplus(np),
    log_expit=_log_expit(np),
    logsumexp=_sp_special.logsumexp,
)
_CUPY_SPECIAL: SimpleNamespace | None = None
_cupy: ModuleType | None = None


def _import_cupy() -> ModuleType:
    """Import cupy on first use; raise BackendError (one line) when it cannot work here."""
    global _cupy, _CUPY_SPECIAL
    if _cupy is not None:
        return _cupy
    try:
        import cupy
        import cupyx.scipy.special as cupy_special
    except Exception as exc:  # ImportError, or a broken CUDA install raising on import
        raise BackendError(
            "the CuPy backend needs CuPy, which is not installed here "
            f"({type(exc).__name__}); install it with `pip install 'scratchvae[cuda12]'` "
            "(CUDA 12) or `pip install 'scratchvae[cuda13]'` (CUDA 13)"
        ) from None
    try:
        n_devices = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        raise BackendError(
            f"CuPy is installed but cannot reach a CUDA device ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); use --backend numpy, or "
            "check the NVIDIA driver and that the cupy-cudaXXx wheel matches it "
            "(extras cuda12 / cuda13)"
        ) from None
    if n_devices < 1:
        raise BackendError("CuPy is installed but no CUDA device was found; use --backend numpy")
    _cupy = cupy
    _CUPY_SPECIAL = SimpleNamespace(
        name="cupy",
        expit=cupy_special.expit,
        softplus=_softplus(cupy),
        log_expit=_log_expit(cupy),
        logsumexp=getattr(cupy_special, "logsumexp", None) or _logsumexp_fallback(cupy),
    )
    return cupy


def _logsumexp_fallback(xp: ModuleType):
    def logsumexp(a, axis=None, keepdims=False):
        a_max = xp.max(a, axis=axis, keepdims=True)
        a_max = xp.where(xp.isfinite(a_max), a_max, 0)
        out = xp.log(xp.sum(xp.exp(a - a_max), axis=axis, keepdims=True)) + a_max
        return out if keepdims else xp.squeeze(out, axis=axis)

    return logsumexp


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        _import_cupy()
    except BackendError:
        return False
    return True


def _is_cupy_array(a: Any) -> bool:
    t = type(a)
    return t is not np.ndarray and t.__module__.startswith("cupy")  # the common case first


def get_xp(*arrays: Any) -> ModuleType:
    """The array module of the given arrays: ``cupy`` if any is a CuPy array, else ``numpy``."""
    for a in arrays:
        if _is_cupy_array(a):
            return _import_cupy()
    return np


def get_special(*arrays: Any) -> SimpleNamespace:
    """expit, softplus, log_expit, logsumexp for the array module of ``arrays``."""
    for a in arrays:
        if _is_cupy_array(a):
            _import_cupy()
            return _CUPY_SPECIAL  # type: ignore[return-value]
    return _NUMPY_SPECIAL


def is_cupy(a: Any) -> bool:
    """True for a CuPy array (without importing CuPy)."""
    return _is_cupy_array(a)


def is_numpy(a: Any) -> bool:
    """True for a NumPy array (not a subclass such as a memmap or a matrix)."""
    return type(a) is np.ndarray


def to_numpy(a: Any) -> Any:
    """Copy a backend array (or scalar) to a NumPy array on the host. Boundaries only."""
    if _is_cupy_array(a):
        return a.get()
    return np.asarray(a)


# --------------------------------------------------------------------------------------------
# Speed helpers: CPU threads for elementwise work, cached CuPy kernels
# --------------------------------------------------------------------------------------------
_POOL: ThreadPoolExecutor | None = None
_KERNELS: dict[str, Any] = {}


def cpu_threads() -> int:
    """Threads for chunked elementwise work: $SCRATCHVAE_THREADS ("auto": the usable cores,
    at most 8), else 1.

    Off by default: measured inside the whole training step (2 cores, OpenBLAS), the second
    thread competes with BLAS's own worker threads, which spin for a while after each product,
    and the step got no faster (benchmarks/results). On its own the threaded Adam is ~1.6x
    faster, so try ``SCRATCHVAE_THREADS=auto`` where BLAS is single-threaded or cores are many.
    """
    env = os.environ.get("SCRATCHVAE_THREADS", "").strip()
    if not env:
        return 1
    if env == "auto":
        try:
            n = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            n = os.cpu_count() or 1
        return max(1, min(n, 8))
    try:
        return max(1, int(env))
    except ValueError:
        raise BackendError(
            f"SCRATCHVAE_THREADS must be an integer or 'auto', got {env!r}"
        ) from None


def run_chunked(fn: Callable[[slice], Any], n: int, min_chunk: int = 1 << 15) -> None:
    """Call ``fn(s)`` for contiguous slices ``s`` covering ``range(n)``, in parallel threads.

    NumPy's ufuncs release the GIL, so whole-buffer elementwise work (the optimizer's update)
    spreads over the cores that BLAS uses for the products. Small ``n`` runs inline.
    """
    global _POOL
    k = min(cpu_threads(), n // min_chunk)
    if k <= 1:
        fn(slice(0, n))
        return
    if _POOL is None or _POOL._max_workers < k:  # noqa: SLF001 - resize on demand
        _POOL = ThreadPoolExecutor(max_workers=k, thread_name_prefix="scratchvae")
    step = -(-n // k) + 63 & ~63  # ceil(n / k) rounded up to a multiple of 64 (cache lines)
    slices = [slice(i, min(i + step, n)) for i in range(0, n, step)]
    futures = [_POOL.submit(fn, s) for s in slices[1:]]
    fn(slices[0])  # this thread takes the first chunk
    for f in futures:
        f.result()  # re-raises a worker's exception here


def cupy_kernel(name: str, in_params: str, out_params: str, operation: str) -> Any:
    """A ``cupy.ElementwiseKernel``, compiled once and cached by ``name`` (GPU code paths only)."""
    if name not in _KERNELS:
        cupy = _import_cupy()
        _KERNELS[name] = cupy.ElementwiseKernel(in_params, out_params, operation, name)
    return _KERNELS[name]


def cupy_sum_kernel(name: str, in_params: str, term: str, post: str) -> Any:
    """A ``cupy.ReductionKernel`` summing ``term`` (an expression of the inputs) into ``T y``
    with ``y = post`` (``a`` the sum). Call it with ``axis=1`` on (B, D) inputs and sum the B
    results: a reduction to a single value runs in one thread block (measured on an H100: 0.9 ms
    for 2048 x 784 floats), one row per block uses the whole GPU."""
    if name not in _KERNELS:
        cupy = _import_cupy()
        _KERNELS[name] = cupy.ReductionKernel(
            in_params, "T y", term, "a + b", f"y = {post}", "0", name
        )
    return _KERNELS[name]


# --------------------------------------------------------------------------------------------
# The backend object
# --------------------------------------------------------------------------------------------


class Backend:
    """Array module + dtype + seeded generator, chosen once.

    >>> bk = Backend("numpy", dtype="float64", seed=0)
    >>> bk.normal((2, 3)).dtype
    dtype('float64')
    """

    def __init__(self, name: str = "numpy", dtype: str = "float32", seed: int = 0) -> None:
        if name not in ("numpy", "cupy"):
            raise BackendError(f"unknown backend {name!r}; choose 'numpy' or 'cupy'")
        dtype = _dtype_name(dtype)
        if dtype not in _DTYPES:
            raise BackendError(f"unknown dtype {dtype!r}; choose 'float32' or 'float64'")
        self.name = name
        self.xp: ModuleType = _import_cupy() if name == "cupy" else np
        self.special: SimpleNamespace = _CUPY_SPECIAL if name == "cupy" else _NUMPY_SPECIAL  # type: ignore[assignment]
        self.dtype = np.dtype(_DTYPES[dtype])
        self.seed = int(seed)
        self.rng = self.xp.random.default_rng(self.seed)

    def __repr__(self) -> str:
        return f"Backend({self.name!r}, dtype={self.dtype.name!r}, seed={self.seed})"

    # -- arrays ---------------------------------------------------------------------------
    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """Move ``a`` to this backend with this backend's dtype (or ``dtype``)."""
        return self.xp.asarray(a, dtype=self.dtype if dtype is None else dtype)

    def zeros(self, shape: Any, dtype: Any = None) -> Any:
        return self.xp.zeros(shape, dtype=self.dtype if dtype is None else dtype)

    def to_numpy(self, a: Any) -> Any:
        return to_numpy(a)

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on NumPy). For timing only."""
        if self.name == "cupy":
            self.xp.cuda.get_current_stream().synchronize()

    # -- randomness (always from self.rng) ------------------------------------------------
    def normal(self, shape: Any) -> Any:
        """Standard normal draws, shape ``shape``, this backend's dtype."""
        return self.rng.standard_normal(shape, dtype=self.dtype)

    def uniform(self, shape: Any) -> Any:
        """Uniform draws on [0, 1)."""
        return self.rng.random(shape, dtype=self.dtype)

    def bernoulli(self, p: Any, shape: Any = None) -> Any:
        """0/1 draws (this dtype) with P(1) = p; ``p`` a scalar or an array broadcast to shape."""
        shape = self.xp.shape(p) if shape is None else shape
        return (self.uniform(shape) < p).astype(self.dtype)

    def permutation(self, n: int) -> Any:
        """A random permutation of 0..n-1 (an index array of this array module)."""
        if self.name == "numpy":
            return self.rng.permutation(n)
        return self.xp.argsort(self.rng.random(n))

    # -- generator state, for checkpoints -------------------------------------------------
    def rng_state(self) -> str:
        """The generator's state as a JSON string (NumPy: bit-exact; CuPy: seed only)."""
        if self.name == "numpy":
            return json.dumps(self.rng.bit_generator.state)
        return json.dumps({"cupy_seed": self.seed})

    def set_rng_state(self, state: str, reseed_offset: int = 0) -> None:
        """Restore a state from :meth:`rng_state`.

        CuPy's generator state cannot be exported, so a CuPy resume reseeds with
        ``seed + reseed_offset``: reproducible, but not the same stream as an unbroken run.
        """
        data = json.loads(state)
        if self.name == "numpy":
            if "bit_generator" not in data:
                raise BackendError("checkpoint holds a CuPy generator state; resume it on cupy")
            self.rng.bit_generator.state = data
        else:
            self.rng = self.xp.random.default_rng(self.seed + int(reseed_offset))

    # -- numeric helpers --------------------------------------------------------------------
    def is_finite(self, a: Any) -> bool:
        """Host-side check that every entry is finite (one sync on GPU)."""
        return bool(self.xp.isfinite(a).all())


def get_backend(name: str = "numpy", dtype: str = "float32", seed: int = 0) -> Backend:
    """Build a :class:`Backend`. Raises :class:`BackendError` with a one-line message."""
    return Backend(name, dtype=dtype, seed=seed)
