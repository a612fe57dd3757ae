"""Arrays: the only module that imports numpy, cupy, scipy.special and cupyx.

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
import numbers
from collections.abc import Callable
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import scipy.special as _sp_special

from .memory import host_available_memory

__all__ = [
    "Backend",
    "BackendError",
    "get_backend",
    "get_xp",
    "get_special",
    "cupy_available",
    "to_numpy",
    "import_cupy",
    "is_floating",
]

_DTYPES = {"float32": np.float32, "float64": np.float64}


def _dtype_name(dtype: Any) -> str:
    """'float32' for "float32", numpy.float32 or numpy.dtype('float32'); str(dtype) otherwise
    (None too: NumPy reads it as float64, which a default of float32 must not become)."""
    try:
        return str(dtype) if dtype is None else np.dtype(dtype).name
    except TypeError:
        return str(dtype)


class BackendError(RuntimeError):
    """A backend was asked for that cannot be provided here (one-line, user-facing message)."""


# --------------------------------------------------------------------------------------------
# Special functions, one namespace per array module.
# --------------------------------------------------------------------------------------------


def _softplus(xp: ModuleType) -> Callable[..., Any]:
    # softplus(x) = log(1 + e^x) = logaddexp(0, x)
    #             = max(x, 0) + log1p(e^{-|x|})     (e^{-|x|} <= 1: stable for |x| of 1000)
    # The second form is the one computed: same value to rounding, and much faster than
    # NumPy's logaddexp (five cheap vectorised ufuncs instead of one slow scalar loop).
    def softplus(
        x: Any, out: Any = None, work: Any = None
    ) -> Any:  # work: scratch of x's shape (else allocated)
        if xp is not np:  # on the GPU logaddexp is already one fused kernel
            return xp.logaddexp(0, x, out=out)
        t = xp.abs(x, out=out)
        xp.negative(t, out=t)
        xp.exp(t, out=t)  # e^{-|x|}, in (0, 1]
        xp.log1p(t, out=t)
        t += xp.maximum(x, 0, out=work)
        return t

    return softplus


_NUMPY_SPECIAL = SimpleNamespace(
    name="numpy",
    expit=_sp_special.expit,
    softplus=_softplus(np),
    logsumexp=_sp_special.logsumexp,
)
_CUPY_SPECIAL: SimpleNamespace | None = None
_cupy: ModuleType | None = None


def import_cupy() -> ModuleType:
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
        logsumexp=getattr(cupy_special, "logsumexp", None) or _logsumexp_fallback(cupy),
    )
    return cupy


def _logsumexp_fallback(xp: ModuleType) -> Callable[..., Any]:
    def logsumexp(a: Any, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Any:
        a_max = xp.max(a, axis=axis, keepdims=True)
        a_max = xp.where(xp.isfinite(a_max), a_max, 0)
        out = xp.log(xp.sum(xp.exp(a - a_max), axis=axis, keepdims=True)) + a_max
        return out if keepdims else xp.squeeze(out, axis=axis)

    return logsumexp


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import_cupy()
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
            return import_cupy()
    return np


def get_special(*arrays: Any) -> SimpleNamespace:
    """expit, softplus, logsumexp for the array module of ``arrays``."""
    for a in arrays:
        if _is_cupy_array(a):
            import_cupy()
            return _CUPY_SPECIAL  # type: ignore[return-value]
    return _NUMPY_SPECIAL


def is_floating(a: Any) -> bool:
    """Whether ``a`` is already a floating-point array (a list, an integer or bool array: no)."""
    return getattr(getattr(a, "dtype", None), "kind", "") == "f"


def to_numpy(a: Any) -> Any:
    """Copy a backend array (or scalar) to a NumPy array on the host. Boundaries only."""
    if _is_cupy_array(a):
        return a.get()
    return np.asarray(a)


NUMPY_ARRAY = np.ndarray  # the exact type (not a subclass) a Numba kernel takes
# What each type of argument is to the dispatch, found once per type: an array a kernel may take
# (when C-contiguous), one it may not ("other": a memmap, a matrix), a tuple to look into (a
# cache), or anything else ("skip": numbers, strings, workspaces, None).
ROLES: dict[type, str] = {np.ndarray: "numpy", tuple: "tuple", float: "skip", int: "skip"}


def array_role(t: type) -> str:
    """What an argument of type ``t`` is to the op dispatch (see the comment above)."""
    role = ROLES.get(t)
    if role is None:
        if issubclass(t, tuple):
            role = "tuple"
        elif t.__module__.startswith("cupy") and hasattr(t, "__cuda_array_interface__"):
            role = "cupy"
        elif issubclass(t, np.ndarray):
            role = "other"
        else:
            role = "skip"  # NumPy scalars included: they are values, not arrays
        ROLES[t] = role
    return role


# --------------------------------------------------------------------------------------------
# The backend object
# --------------------------------------------------------------------------------------------


def _gib(nbytes: int) -> str:
    """A byte count for people: '1,013 GiB', '3.2 GiB', '0.5 GiB'."""
    gib = nbytes / 2**30
    return f"{gib:,.0f} GiB" if gib >= 10 else f"{gib:.1f} GiB"


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
        self.xp: ModuleType = import_cupy() if name == "cupy" else np
        self.special: SimpleNamespace = _CUPY_SPECIAL if name == "cupy" else _NUMPY_SPECIAL  # type: ignore[assignment]
        self.dtype = np.dtype(_DTYPES[dtype])
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"seed must be a whole number >= 0, got {seed!r}")
        self.seed: int = int(seed)
        self.rng: Any = _generator(name, self.seed)  # NumPy's Generator, or CounterRNG on CuPy

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

    def available_memory(self) -> int | None:
        """Bytes this backend can still allocate: on CuPy the device's free memory plus what
        CuPy's memory pool holds for reuse, on NumPy Linux's MemAvailable or, in a container,
        what its memory cgroup allows if that is less (:mod:`scratchvae.backend.memory`);
        None where that cannot be read."""
        if self.name == "cupy":
            pooled = self.xp.get_default_memory_pool().free_bytes()
            return int(self.xp.cuda.runtime.memGetInfo()[0]) + int(pooled)
        return host_available_memory()

    def check_memory(self, nbytes: int, what: str) -> None:
        """Raise :class:`BackendError` when ``what`` (a phrase: "training this model (...)")
        needs more than :meth:`available_memory`: a clear refusal up front instead of a
        MemoryError traceback, or Linux's out-of-memory killer later (NumPy's zeros are only
        reserved until first written, so a too-large allocation can succeed and the process
        be killed while it fills it)."""
        free = self.available_memory()
        if free is not None and nbytes > free:
            where = "on the GPU" if self.name == "cupy" else "of memory"
            raise BackendError(
                f"{what} needs {_gib(nbytes)} and {_gib(free)} {where} is available; "
                "choose a smaller model (fewer or narrower layers)"
            )

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
        """The generator's state as a JSON string (NumPy's bit generator; CuPy's seed and draw
        counter): restoring it continues the same stream on either."""
        if self.name == "numpy":
            return json.dumps(self.rng.bit_generator.state)
        return json.dumps({"cupy": self.rng.state()})

    def set_rng_state(self, state: str, reseed_offset: int = 0) -> None:
        """Restore a state from :meth:`rng_state`. A state of the other backend's generator
        (a run resumed on another backend), and a CuPy state of the old format (the seed
        alone), reseed with ``seed + reseed_offset``: the stream does not continue. A state
        that cannot be restored here raises BackendError (one line) and leaves the generator
        as it was."""
        try:
            data = json.loads(state)
        except (TypeError, ValueError, RecursionError):
            raise BackendError("the generator state is not JSON text") from None
        if not isinstance(data, dict):
            raise BackendError("the generator state is not a JSON object")
        try:
            if self.name == "numpy" and ("cupy" in data or "cupy_seed" in data):  # a GPU run's
                self.rng = _generator("numpy", self.seed + int(reseed_offset))  # resumed here
            elif self.name == "numpy":
                words = data.get("state")  # NumPy 1 wraps a negative one round silently
                if isinstance(words, dict) and any(_negative_int(v) for v in words.values()):
                    raise ValueError("a negative number in the PCG64 state")
                # a trial first: a refused state changes nothing (mypy: a TypedDict in the stubs)
                np.random.PCG64(0).state = data  # type: ignore[assignment]
                self.rng.bit_generator.state = data
            elif "cupy" in data:
                self.rng = _generator("cupy", data["cupy"]["seed"], data["cupy"]["counter"])
            else:
                self.rng = _generator("cupy", self.seed + int(reseed_offset))
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise BackendError(f"the generator state cannot be restored ({reason})") from None

    # -- the training loop's device ------------------------------------------------------
    def fits_on_device(self, n_bytes: int) -> bool:
        """Whether ``n_bytes`` of data (a training set) should live on the GPU: a quarter of its
        free memory at most. Always False on NumPy (there is no separate device)."""
        if self.name == "numpy":
            return False
        return n_bytes <= self.xp.cuda.runtime.memGetInfo()[0] // 4

    def step_graph(self, fn: Callable[..., None]) -> Callable[..., None]:
        """``fn(x, *args)`` (a training step) as the GPU should run it: replayed as a CUDA graph
        (:class:`scratchvae.kernels.graph.StepGraph`) on CuPy with the kernels on; ``fn``
        itself otherwise."""
        from .dispatch import kernels_enabled  # noqa: PLC0415

        if self.name == "numpy" or not kernels_enabled():
            return fn
        from ..kernels.graph import StepGraph  # noqa: PLC0415 - GPU only

        return StepGraph(fn)

    # -- numeric helpers --------------------------------------------------------------------
    def is_finite(self, a: Any) -> bool:
        """Host-side check that every entry is finite (one sync on GPU)."""
        return bool(self.xp.isfinite(a).all())


def _negative_int(v: Any) -> bool:
    return isinstance(v, int) and v < 0


def _generator(name: str, seed: int, counter: int = 0) -> Any:
    """NumPy's default generator, or on CuPy the counter-based generator a CUDA graph can
    replay (:mod:`scratchvae.kernels.gpu_random`)."""
    if name == "numpy":
        return np.random.default_rng(seed)
    from ..kernels.gpu_random import CounterRNG  # noqa: PLC0415 - GPU only

    return CounterRNG(seed, counter)


def get_backend(name: str = "numpy", dtype: str = "float32", seed: int = 0) -> Backend:
    """Build a :class:`Backend`. Raises :class:`BackendError` with a one-line message."""
    return Backend(name, dtype=dtype, seed=seed)
