"""A stand-in for CuPy on the host, so the library's whole GPU code path runs without a GPU.

``installed()`` puts a module named ``cupy`` (and ``cupyx.scipy.special``) in place for the
duration of a block. Its arrays are NumPy arrays of a subclass that the library takes for CuPy
arrays (the type's module is ``cupy`` and it has ``__cuda_array_interface__``, as the op
dispatch checks; ``.get()`` copies to the host, ``.data.ptr`` is the address cuBLAS is given);
its functions are NumPy's returning that subclass (``asarray`` of a host array copies, as a
transfer does); its ``ElementwiseKernel`` and ``ReductionKernel`` compile the CUDA C on the
host (tests/cuda_on_host.py), and cuBLAS is a stand-in with its semantics. So a
``Backend("cupy")`` model runs the CUDA kernels' C, the cuBLAS binding's calls, the
counter-based generator and the step count on the "device", the trainer's data on the device
and its CUDA graph wrapper, and can be compared with the NumPy run.

What it is not: CuPy. Its functions accept what NumPy's accept (CuPy refuses some NumPy
arguments; of those the ufuncs' ``where=`` and host arrays given to a ufunc or a kernel are
refused here too), nothing runs asynchronously, and a stream capture is refused at its start
(``begin_capture`` raises), so a training step is never replayed as a graph here: the graph's
own bookkeeping is tested in tests/kernels/test_graph_on_host.py.
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import scipy.special
from cuda_on_host import ElementwiseKernel, HostCublas, ReductionKernel

from scratchvae.backend import arrays, dispatch
from scratchvae.kernels import cublas, gpu, gpu_random


class ndarray(np.ndarray):  # noqa: N801 - CuPy's name
    """A host array the library takes for a CuPy array."""

    __module__ = "cupy"

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ctypes.data, False)}

    @property
    def data(self) -> Any:
        return types.SimpleNamespace(ptr=self.ctypes.data)

    def get(self) -> np.ndarray:
        return np.array(self)  # a host copy, of the base class


def device(a: Any) -> Any:
    """``a`` as a device array (NumPy arrays and scalars; tuples of them); the rest as it is."""
    if isinstance(a, ndarray):
        return a
    if isinstance(a, np.ndarray | np.generic):
        return np.asarray(a).view(ndarray)
    if isinstance(a, tuple):
        return tuple(device(v) for v in a)
    return a


def _returning_device_arrays(fn: Any) -> Any:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        return device(fn(*args, **kwargs))

    return wrapped


def asarray(a: Any, dtype: Any = None, order: Any = None) -> ndarray:
    """A device array: a host array copied (a transfer), a device array as it is (cast)."""
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == dtype else a.astype(dtype)
    return np.array(a, dtype=dtype, order=order or "K", copy=True).view(ndarray)


class _Stream:
    def __init__(self, non_blocking: bool = False) -> None:
        self.ptr = 0

    def __enter__(self) -> _Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def synchronize(self) -> None:
        return None

    def record(self) -> object:
        return object()

    def wait_event(self, event: object) -> None:
        return None

    def begin_capture(self) -> None:
        raise RuntimeError("stream capture is not emulated on the host")


class _Pool:
    def malloc(self, size: int) -> None:
        raise AssertionError("the host stand-in allocates with NumPy")

    def free_bytes(self) -> int:
        return 0

    def used_bytes(self) -> int:
        return 0

    def total_bytes(self) -> int:
        return 0

    def free_all_blocks(self) -> None:
        return None


FREE_BYTES = 8 << 30  # what memGetInfo says is free


def _cuda() -> types.SimpleNamespace:
    runtime = types.SimpleNamespace(
        getDeviceCount=lambda: 1,
        getDevice=lambda: 0,
        memGetInfo=lambda: (FREE_BYTES, 2 * FREE_BYTES),
        getDeviceProperties=lambda device: {
            "name": b"host stand-in",
            "totalGlobalMem": 2 * FREE_BYTES,
        },
    )
    return types.SimpleNamespace(
        runtime=runtime,
        Stream=_Stream,
        MemoryPool=_Pool,
        get_current_stream=lambda: _Stream(),
        using_allocator=lambda malloc: contextlib.nullcontext(),
        device=types.SimpleNamespace(get_cublas_handle=lambda: None),
    )


class _Module(types.ModuleType):
    """``cupy``: the names above, NumPy's functions returning device arrays, its ufuncs
    without ``where=``, its types as they are."""

    def __getattr__(self, name: str) -> Any:
        return _on_the_device(getattr(np, name))


def _on_the_device(value: Any) -> Any:
    """NumPy's ``value`` as CuPy's: a ufunc without ``where=`` or host arrays, a function
    returning device arrays, a submodule (``random``, ``linalg``) of such functions."""
    if isinstance(value, np.ufunc):
        return _Ufunc(value)
    if isinstance(value, types.ModuleType):
        return _Submodule(value)
    if callable(value) and not isinstance(value, type):  # (most of NumPy 2's functions
        return _returning_device_arrays(value)  # are dispatcher objects)
    return value


class _Submodule:
    def __init__(self, module: types.ModuleType) -> None:
        self.module = module

    def __getattr__(self, name: str) -> Any:
        return _on_the_device(getattr(self.module, name))


class _Ufunc:
    """A NumPy ufunc as CuPy's: no ``where=`` (CuPy's ufuncs refuse it)."""

    def __init__(self, ufunc: np.ufunc) -> None:
        self.ufunc = ufunc

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if "where" in kwargs:
            raise TypeError(f"{self.ufunc.__name__}: CuPy's ufuncs take no where= argument")
        for a in [*args, kwargs.get("out")]:
            if isinstance(a, np.ndarray) and not isinstance(a, ndarray):
                raise TypeError(f"Unsupported type {type(a)}")  # CuPy's words: a host array
        return device(self.ufunc(*args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ufunc, name)


class _Elementwise(ElementwiseKernel):
    device = ndarray

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return device(super().__call__(*args, **kwargs))


class _Reduction(ReductionKernel):
    device = ndarray

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return device(super().__call__(*args, **kwargs))


def module() -> types.ModuleType:
    cp = _Module("cupy")
    cp.ndarray = ndarray
    cp.asarray = asarray
    cp.cuda = _cuda()
    cp.ElementwiseKernel = _Elementwise
    cp.ReductionKernel = _Reduction
    cp.get_default_memory_pool = lambda: _Pool()
    cp.ones = lambda shape, dtype=float: np.ones(shape, dtype).view(ndarray)
    return cp


def _special() -> types.ModuleType:
    special = types.ModuleType("cupyx.scipy.special")
    special.expit = _returning_device_arrays(scipy.special.expit)
    special.logsumexp = _returning_device_arrays(scipy.special.logsumexp)
    return special


def install_for_the_session() -> None:
    """The stand-in as ``cupy`` for the rest of the process (``SCRATCHVAE_FAKE_CUPY=1 pytest
    -m gpu``: the GPU tests' own logic checked on the host before a GPU run; see conftest)."""
    _SESSION.append(installed())  # kept: a context manager collected would be left
    _SESSION[-1].__enter__()  # never left: the process ends with it


_SESSION: list[Any] = []


@contextlib.contextmanager
def installed() -> Iterator[HostCublas]:
    """The stand-in as ``cupy`` (the library's caches of the real one set aside, and back
    afterwards); yields the cuBLAS stand-in, which logs its calls."""
    lib = HostCublas()
    cp, special = module(), _special()
    cupyx = types.ModuleType("cupyx")
    cupyx.scipy = types.ModuleType("cupyx.scipy")
    cupyx.scipy.special = special
    with pytest.MonkeyPatch.context() as mp:
        for name, mod in [("cupy", cp), ("cupyx", cupyx), ("cupyx.scipy", cupyx.scipy),
                          ("cupyx.scipy.special", special)]:  # fmt: skip
            mp.setitem(sys.modules, name, mod)
        mp.setattr(arrays, "_cupy", None)
        mp.setattr(arrays, "_CUPY_SPECIAL", None)
        mp.setattr(dispatch, "_TABLES", {})
        mp.setattr(gpu, "_COMPILED", {})
        mp.setattr(gpu_random, "_KERNELS", {})
        mp.setattr(cublas, "_STATE", {})
        mp.setattr(cublas, "_library", lambda: lib)
        mp.setattr(cublas, "_handle", lambda: None)
        yield lib
