"""Matrix products on the GPU through cuBLAS itself, called with ``ctypes``.

Why not ``cupy.matmul``: CuPy refuses to call cuBLAS while a stream is being captured into a
CUDA graph (``NotImplementedError: calling cuBLAS API during stream capture is currently
unsupported``), and the training step is replayed as a graph (:mod:`scratchvae.kernels.graph`).
cuBLAS itself captures fine when its handle is bound to the capture stream and owns a fixed
workspace (``cublasSetWorkspace_v2``), so that it allocates nothing while captured. This module
is that much and no more: one handle per device, a 32 MiB workspace, and single and double
precision GEMM on C-contiguous (row-major) matrices, in cuBLAS's default math mode (true FP32,
no TF32). The same calls run outside a capture, so a captured step and a plain one compute
bit-identical products. Tests: ``tests/kernels/test_gpu_kernels.py``.

Row-major matrices seen by column-major cuBLAS are transposed, so ``out = op(a) @ op(b)`` is
computed as ``out^T = op(b)^T @ op(a)^T``: the operands swap places, nothing is copied.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

from ..backend import import_cupy

Array = Any

OP_N, OP_T = 0, 1  # cublasOperation_t
WORKSPACE_BYTES = 32 << 20  # cuBLAS's recommendation for Hopper GPUs
_STATE: dict[Any, Any] = {}
_P, _I = ctypes.c_void_p, ctypes.c_int
# handle, transa, transb, m, n, k, *alpha, A, lda, B, ldb, *beta, C, ldc
_GEMM_ARGS = [_P, _I, _I, _I, _I, _I, _P, _P, _I, _P, _I, _P, _P, _I]
# handle, trans, m, n, *alpha, A, lda, x, incx, *beta, y, incy
_GEMV_ARGS = [_P, _I, _I, _I, _P, _P, _I, _P, _I, _P, _P, _I]


class CublasError(RuntimeError):
    """A cuBLAS call returned an error status."""


def _library() -> ctypes.CDLL:
    """The libcublas CuPy already loaded (found in this process's memory map), so both use the
    same library; the system's libcublas when CuPy's cannot be found."""
    lib = _STATE.get("lib")
    if lib is not None:
        return lib
    import_cupy().cuda.device.get_cublas_handle()  # makes CuPy load libcublas
    path = None
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            for line in maps:
                name = line.rsplit(None, 1)[-1]
                if name.rsplit("/", 1)[-1].startswith("libcublas.so"):
                    path = name
                    break
    except OSError:  # not Linux
        pass
    path = path or ctypes.util.find_library("cublas")
    if path is None:
        raise CublasError("libcublas not found in this process nor on the library path")
    lib = _STATE["lib"] = ctypes.CDLL(path)
    for fn in ("cublasSgemm_v2", "cublasDgemm_v2"):
        getattr(lib, fn).argtypes = _GEMM_ARGS
    for fn in ("cublasSgemv_v2", "cublasDgemv_v2"):
        getattr(lib, fn).argtypes = _GEMV_ARGS
    return lib


def _check(status: int, what: str) -> None:
    if status != 0:
        raise CublasError(f"{what} failed with cuBLAS status {status}")


def _handle() -> ctypes.c_void_p:
    """This device's handle, bound to the current stream with the fixed workspace."""
    xp = import_cupy()
    device = xp.cuda.runtime.getDevice()
    state = _STATE.get(device)
    lib = _library()
    if state is None:
        handle = ctypes.c_void_p()
        _check(lib.cublasCreate_v2(ctypes.byref(handle)), "cublasCreate")
        workspace = xp.empty(WORKSPACE_BYTES, dtype=xp.uint8)
        state = _STATE[device] = {"handle": handle, "workspace": workspace, "stream": None}
    stream = xp.cuda.get_current_stream().ptr
    if state["stream"] != stream:  # setting the stream resets the workspace: set both
        handle, workspace = state["handle"], state["workspace"]
        _check(lib.cublasSetStream_v2(handle, ctypes.c_void_p(stream)), "cublasSetStream")
        _check(
            lib.cublasSetWorkspace_v2(
                handle, ctypes.c_void_p(workspace.data.ptr), ctypes.c_size_t(WORKSPACE_BYTES)
            ),
            "cublasSetWorkspace",
        )
        state["stream"] = stream
    return state["handle"]


def gemm(a: Array, b: Array, out: Array, trans_a: bool = False, trans_b: bool = False) -> Array:
    """``out = op(a) @ op(b)`` (op: transpose or not) for C-contiguous 2-D float32 or float64
    CuPy arrays of one dtype, written into ``out`` (m, n); returns ``out``."""
    m, n = out.shape
    k = a.shape[0] if trans_a else a.shape[1]
    a_rows = a.shape[1] if trans_a else a.shape[0]
    b_cols = b.shape[0] if trans_b else b.shape[1]
    b_rows = b.shape[1] if trans_b else b.shape[0]
    arrays = (a, b, out)
    ok = a_rows == m and b_cols == n and b_rows == k and len({x.dtype for x in arrays}) == 1
    ok = ok and out.dtype.name in ("float32", "float64")
    if not (ok and all(x.ndim == 2 and x.flags.c_contiguous for x in arrays)):
        shapes = ", ".join(f"{x.dtype.name}{list(x.shape)}" for x in arrays)
        raise ValueError(f"gemm: mismatched or non-contiguous operands ({shapes})")
    if m == 0 or n == 0:
        return out
    if k == 0:
        out.fill(0)
        return out
    scalar = ctypes.c_float if out.dtype.name == "float32" else ctypes.c_double
    fn = _library().cublasSgemm_v2 if out.dtype.name == "float32" else _library().cublasDgemm_v2
    alpha, beta = scalar(1.0), scalar(0.0)
    status = fn(
        _handle(),
        OP_T if trans_b else OP_N,
        OP_T if trans_a else OP_N,
        n,
        m,
        k,
        ctypes.byref(alpha),
        b.data.ptr,
        b.shape[1],
        a.data.ptr,
        a.shape[1],
        ctypes.byref(beta),
        out.data.ptr,
        n,
    )
    _check(status, "cublas gemm")
    return out


def _ones(n: int, dtype: Any) -> Array:
    """A vector of n ones, made once per length and dtype and kept (a graph may read it)."""
    key = ("ones", n, dtype.name)
    ones = _STATE.get(key)
    if ones is None:
        ones = _STATE[key] = import_cupy().ones(n, dtype=dtype)
    return ones


def column_sum(a: Array, out: Array) -> Array:
    """``out = sum_B a`` for a C-contiguous (B, H) float32/float64 CuPy array: the product
    a^T @ ones(B) by cuBLAS's GEMV, which reads the rows of a in order (a reduction kernel
    over the batch axis would read it a column at a time). Returns ``out`` (H,)."""
    B, H = a.shape
    ok = a.flags.c_contiguous and out.shape == (H,) and out.dtype == a.dtype
    if not (ok and out.flags.c_contiguous and a.dtype.name in ("float32", "float64")):
        raise ValueError(f"column_sum: {a.dtype.name}{list(a.shape)} into {list(out.shape)}")
    if B == 0 or H == 0:
        out.fill(0)
        return out
    scalar = ctypes.c_float if a.dtype.name == "float32" else ctypes.c_double
    fn = _library().cublasSgemv_v2 if a.dtype.name == "float32" else _library().cublasDgemv_v2
    alpha, beta, ones = scalar(1.0), scalar(0.0), _ones(B, a.dtype)
    # row-major a (B, H) is column-major (H, B) with leading dimension H: out = that @ ones
    status = fn(
        _handle(), OP_N, H, B, ctypes.byref(alpha), a.data.ptr, H, ones.data.ptr, 1,
        ctypes.byref(beta), out.data.ptr, 1,
    )  # fmt: skip
    _check(status, "cublas gemv")
    return out
