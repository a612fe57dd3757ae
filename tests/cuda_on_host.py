"""CuPy's ``ElementwiseKernel`` and ``ReductionKernel`` on the host, for machines without a GPU.

Each kernel's CUDA C is compiled as C++ (``g++``) into a loop over the elements, the same
statement per element that a CUDA thread runs, and called on NumPy arrays. So the arithmetic of
every CUDA kernel in :mod:`scratchvae.kernels.gpu` and :mod:`scratchvae.kernels.gpu_random` runs
in every CI run and is checked against the op it replaces, although only a GPU runs the real
launch (``pytest -m gpu``). What this cannot see: CUDA's own maths library (its ``exp`` and
``log`` are within 1-2 ulp, glibc's within 1), the fused multiply-adds NVRTC forms (so results
agree to rounding, not to the bit), the order of a reduction's sums, and anything about
launches, streams or graphs.

The subset of CuPy's kernel language used by scratchvae is supported: parameters ``T name``,
``<dtype> name`` and ``raw <dtype> name``, one type placeholder ``T``, broadcasting of the
non-raw arguments, outputs given or allocated, ``size=``, a ``preamble``, the element index
``i``, reductions over the last axis or over everything. :func:`module` returns the stand-in for
``cupy`` that the tests put where the kernels call ``import_cupy()``.
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
import types
from math import prod
from pathlib import Path
from typing import Any

import numpy as np

CXX = shutil.which("g++") or shutil.which("c++")

_C_TYPES = {
    "float32": "float",
    "float64": "double",
    "int32": "int",
    "int64": "long long",
    "uint64": "unsigned long long",
    "bool": "bool",
}

# What CUDA C offers that C++ spells differently: __device__ functions, max/min of two floats
# (fmax: the number where the other is NaN, as CUDA's), cospi.
_PRELUDE = r"""
#include <cmath>
#include <cstdint>
#define __device__
using std::exp; using std::log; using std::log1p; using std::expm1; using std::sqrt;
using std::pow; using std::fabs; using std::cos; using std::sin; using std::tanh;
static inline float max(float a, float b) { return std::fmax(a, b); }
static inline double max(double a, double b) { return std::fmax(a, b); }
static inline float min(float a, float b) { return std::fmin(a, b); }
static inline double min(double a, double b) { return std::fmin(a, b); }
static inline double cospi(double x) { return std::cos(M_PI * x); }
static inline float cospi(float x) { return (float)std::cos(M_PI * (double)x); }
"""

_LIBRARIES: dict[str, ctypes.CDLL] = {}
_CHOSEN: dict[str, Any] = {}  # "folder": where libraries are built, "compiler": its version


def _private(folder: Path) -> bool:
    """Whether ``folder`` is a real folder of this user's that nobody else can write to: a
    library found there was built by this user (a shared /tmp folder could hold a planted one,
    whose constructor would run when loaded)."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = folder.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o022


def _build_folder() -> Path:
    """$XDG_CACHE_HOME (or ~/.cache)/scratchvae-cuda-on-host where it is private (kept between
    runs: a build takes about a second a kernel), else a new temporary folder of this process."""
    if "folder" not in _CHOSEN:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        folder = cache / "scratchvae-cuda-on-host"
        if not _private(folder):  # a folder of this process's own, removed at its exit
            folder = Path(tempfile.mkdtemp(prefix="svae-"))
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
        _CHOSEN["folder"] = folder
    return _CHOSEN["folder"]


def _compiler() -> str:
    """The compiler's version line (part of each library's name: another compiler, a rebuild)."""
    if "compiler" not in _CHOSEN:
        done = subprocess.run([CXX, "--version"], capture_output=True, text=True)
        _CHOSEN["compiler"] = done.stdout.partition("\n")[0]
    return _CHOSEN["compiler"]


class Param:
    """One kernel parameter: ``raw``, its type (``T`` or a dtype name) and its name."""

    def __init__(self, text: str) -> None:
        words = text.split()
        self.raw = words[0] == "raw"
        self.type, self.name = words[-2], words[-1]

    def dtype(self, T: np.dtype | None) -> np.dtype:
        if self.type == "T":
            assert T is not None, f"{self.name}: the type placeholder T was not inferred"
            return T
        return np.dtype(self.type)


def params(text: str) -> list[Param]:
    return [Param(p) for p in text.split(",") if p.strip()]


def _compile(source: str) -> ctypes.CDLL:
    """The shared library of ``source`` (built once, cached on disk by its hash)."""
    folder = _build_folder()
    key = hashlib.sha256((_compiler() + source).encode()).hexdigest()[:20]
    if key not in _LIBRARIES:
        lib = folder / f"k{key}.so"
        if not lib.exists():
            src = folder / f"k{key}.{os.getpid()}.cpp"  # each process its own source and output
            src.write_text(source)
            tmp = folder / f"k{key}.{os.getpid()}.tmp.so"
            cmd = [CXX, "-O1", "-std=c++17", "-shared", "-fPIC", "-o", str(tmp), str(src)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"g++ failed on {src}:\n{done.stderr}")
            tmp.replace(lib)
            src.unlink()
        _LIBRARIES[key] = ctypes.CDLL(str(lib))
    return _LIBRARIES[key]


def usable() -> str | None:
    """None where kernels can be compiled and loaded here, else why not (a skip's reason)."""
    if CXX is None:
        return "needs a C++ compiler (g++)"
    try:
        _compile(_source(None, "", "(void)_n; (void)_ptr;"))
    except (OSError, RuntimeError) as err:
        return f"cannot build or load a kernel here: {str(err).splitlines()[0]}"
    return None


def _infer_T(in_p: list[Param], out_p: list[Param], args: list[Any]) -> np.dtype | None:
    """T as CuPy binds it: from the first array (0-d included) given for a T parameter, the
    outputs looked at first; scalars (Python's or NumPy's) never bind it, and T left unbound
    is an error (KeyError 'T' here)."""
    n_in = len(in_p)
    for k in [*range(n_in, len(in_p) + len(out_p)), *range(n_in)]:
        p, a = (in_p + out_p)[k], args[k]
        if p.type == "T" and isinstance(a, np.ndarray):
            return a.dtype
    if any(p.type == "T" for p in in_p + out_p):
        raise KeyError("T")
    return None


def _load(p: Param, k: int, index: str, const: bool = True) -> str:
    """The C++ line that binds parameter ``p`` (pointer ``k``) for one element."""
    ctype = "T" if p.type == "T" else _C_TYPES[p.type]
    if p.raw:
        return f"{ctype}* {p.name} = ({ctype}*)_ptr[{k}];"
    return f"{'const ' if const else ''}{ctype} {p.name} = (({ctype}*)_ptr[{k}])[{index}];"


def _source(T: np.dtype | None, preamble: str, body: str) -> str:
    typedef = f"typedef {_C_TYPES[T.name]} T;\n" if T is not None else ""
    entry = 'extern "C" void run(long long _n, void** _ptr)'
    return f"{_PRELUDE}{typedef}{preamble}\n{entry} {{\n{body}\n}}\n"


class _Call:
    """The arguments of one call, as contiguous arrays of the parameters' types (the
    broadcast shape for non-raw ones), with the outputs to copy back afterwards. CuPy's rules
    are kept where they would catch a mistake: all outputs or none, ``size=`` only without
    non-raw arrays, an array bound to a parameter of the exact dtype it names (or T's), and
    (``device``: the array type allowed) no host array where a device one is needed. Outputs
    allocated here hold NaN (CuPy's hold whatever was in memory): a kernel that reads one
    before writing it shows."""

    def __init__(self, in_p, out_p, args, size=None, device=np.ndarray):
        plist = in_p + out_p
        if len(args) not in (len(in_p), len(plist)):
            raise TypeError(
                f"Wrong number of arguments: {len(args)} for {len(in_p)} or {len(plist)}"
            )
        args = list(args) + [None] * (len(plist) - len(args))
        for a in args:
            if isinstance(a, np.ndarray) and not isinstance(a, device):
                raise TypeError(f"Unsupported type {type(a)}")  # CuPy's words
        self.T = _infer_T(in_p, out_p, args)
        self.scalar = [not isinstance(a, np.ndarray) for a in args]  # (CuPy's CScalar)
        # the loop's size: the non-raw arrays' broadcast shape, else size= (CuPy's rule)
        shapes = [a.shape for p, a in zip(plist, args) if not p.raw and isinstance(a, np.ndarray)]
        if (size is None) == (not shapes):
            raise ValueError("size= is given with arrays" if shapes else "Loop size is undecided.")
        self.shape = np.broadcast_shapes(*shapes) if shapes else (size,)
        self.outputs, self.work, self.copy_back = [], [], []
        for k, (p, a) in enumerate(zip(plist, args, strict=True)):
            dtype = p.dtype(self.T)
            if a is None:  # an output not given: allocated
                a = np.full(self.shape, np.nan if dtype.kind == "f" else 0, dtype).view(device)
            if k >= len(in_p):
                self.outputs.append(a)
            if isinstance(a, np.ndarray) and a.dtype != dtype:
                raise TypeError(
                    f"Type is mismatched: {p.name} is {a.dtype}, the kernel takes {dtype}"
                )
            if p.raw:
                assert isinstance(a, np.ndarray) and a.flags.c_contiguous
                self.work.append(a)
                continue
            w = np.ascontiguousarray(np.broadcast_to(np.asarray(a, dtype=dtype), self.shape))
            if k >= len(in_p):
                w = w.copy()
                self.copy_back.append((a, w))
            self.work.append(w)

    def pointers(self) -> Any:
        return (ctypes.c_void_p * len(self.work))(*(w.ctypes.data for w in self.work))

    def finish(self) -> Any:
        for out, w in self.copy_back:
            np.copyto(out, w)
        return self.outputs[0] if len(self.outputs) == 1 else tuple(self.outputs)


class ElementwiseKernel:
    """``cupy.ElementwiseKernel``: ``operation`` once per element of the broadcast shape."""

    device: type = np.ndarray  # the arrays it takes (tests/fake_cupy.py: its device arrays)

    def __init__(self, in_params, out_params, operation, name="kernel", preamble="", **_):
        self.in_p, self.out_p = params(in_params), params(out_params)
        self.operation, self.name, self.preamble = operation, name, preamble

    def __call__(self, *args, size=None):
        call = _Call(self.in_p, self.out_p, args, size, self.device)
        n_in = len(self.in_p)
        loads = [_load(p, k, "i", k < n_in) for k, p in enumerate(self.in_p + self.out_p)]
        stores = [
            f"(({'T' if p.type == 'T' else _C_TYPES[p.type]}*)_ptr[{k}])[i] = {p.name};"
            for k, p in enumerate(self.in_p + self.out_p)
            if k >= n_in and not p.raw
        ]
        load, store = "\n".join(loads), "\n".join(stores)  # CuPy adds the ; after the operation
        body = (
            f"for (long long i = 0; i < _n; ++i) {{\n{load}\n{{\n{self.operation};\n}}\n{store}\n}}"
        )
        lib = _compile(_source(call.T, self.preamble, body))
        lib.run(ctypes.c_longlong(prod(call.shape)), call.pointers())
        return call.finish()


class ReductionKernel:
    """``cupy.ReductionKernel`` with ``axis=None`` (everything) or ``axis=-1`` (each row):
    ``a = identity``, then ``a = reduce_expr`` with b = ``map_expr`` of each element, in the
    output's type, then ``y = post_map_expr``, which (as in CuPy) sees ``a``, ``y`` and the
    scalar arguments only."""

    device: type = np.ndarray  # the arrays it takes (tests/fake_cupy.py: its device arrays)

    def __init__(self, in_params, out_params, map_expr, reduce_expr, post_map_expr, identity,
                 name="reduce", **_):  # fmt: skip
        self.in_p, self.out_p = params(in_params), params(out_params)
        self.map, self.reduce, self.post = map_expr, reduce_expr, post_map_expr
        self.identity, self.name = identity, name
        assert len(self.out_p) == 1 and not self.out_p[0].raw, name

    def __call__(self, *args, axis=None):
        assert axis in (None, -1), f"{self.name}: axis {axis}"
        call = _Call(self.in_p, [], args, device=self.device)
        shape = call.shape
        cols = prod(shape) if axis is None else shape[-1]
        out = np.empty(() if axis is None else shape[:-1], self.out_p[0].dtype(call.T))
        assert cols > 0, f"{self.name}: an empty reduction"
        y = self.out_p[0]
        ytype = "T" if y.type == "T" else _C_TYPES[y.type]
        every = "\n".join(_load(p, k, "i") for k, p in enumerate(self.in_p))
        scalars = "\n".join(_load(p, k, "0") for k, p in enumerate(self.in_p) if call.scalar[k])
        # three scopes, as CuPy's: the map sees the parameters, the reduction only a and b,
        # the post-map a (the sum), y and the scalar parameters
        body = f"""long long cols = {cols};
for (long long r = 0; r * cols < _n; ++r) {{
    {ytype} _acc = ({ytype})({self.identity});
    for (long long c = 0; c < cols; ++c) {{
        long long i = r * cols + c;
        {ytype} _b;
        {{ {every}
           _b = ({ytype})({self.map}); }}
        {{ {ytype} a = _acc, b = _b;
           _acc = {self.reduce}; }}
    }}
    {{ {scalars}
       {{ {ytype} a = _acc;
          {ytype} {y.name};
          {self.post};
          (({ytype}*)_ptr[{len(self.in_p)}])[r] = {y.name}; }} }}
}}"""
        lib = _compile(_source(call.T, "", body))
        pointers = [w.ctypes.data for w in call.work] + [out.ctypes.data]
        lib.run(ctypes.c_longlong(prod(shape)), (ctypes.c_void_p * len(pointers))(*pointers))
        return out


def module() -> types.SimpleNamespace:
    """The stand-in for ``cupy`` the kernels are given: the two kernel classes on the host, and
    NumPy for the few array functions they call (``ones`` with CuPy's ``.data.ptr``, for the
    cuBLAS binding)."""
    return types.SimpleNamespace(
        ElementwiseKernel=ElementwiseKernel,
        ReductionKernel=ReductionKernel,
        empty=np.empty,
        full=np.full,
        ones=lambda n, dtype: host_array(np.ones(n, dtype)),
        broadcast_to=np.broadcast_to,
        uint64=np.uint64,
        ndarray=np.ndarray,
    )


# ------------------------------------------------------------------ cuBLAS on the host
class HostArray(np.ndarray):
    """A NumPy array with CuPy's ``a.data.ptr`` (the address of its first element)."""

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.ctypes.data)


def host_array(a: Any) -> HostArray:
    return np.ascontiguousarray(a).view(HostArray)


def _column_major(ptr: int, rows: int, cols: int, ld: int, dtype: Any) -> np.ndarray:
    """The (rows, cols) column-major matrix at address ``ptr``, leading dimension ``ld``."""
    dtype = np.dtype(dtype)
    count = ld * (cols - 1) + rows
    flat = np.frombuffer((ctypes.c_char * (count * dtype.itemsize)).from_address(ptr), dtype)
    return np.lib.stride_tricks.as_strided(
        flat, (rows, cols), (dtype.itemsize, ld * dtype.itemsize)
    )


INVALID_VALUE = 7  # CUBLAS_STATUS_INVALID_VALUE


class HostCublas:
    """The four cuBLAS functions :mod:`scratchvae.kernels.cublas` calls, with cuBLAS's
    column-major semantics and its argument checks (a leading dimension shorter than the
    stored matrix's rows is CUBLAS_STATUS_INVALID_VALUE), computed by NumPy at the addresses
    given. So the row-major to column-major mapping (operands swapped, leading dimensions,
    transposes) is checked without a GPU."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def _gemm(self, dtype, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc):
        a_rows, b_rows = (m if transa == 0 else k), (k if transb == 0 else n)
        if min(m, n, k) < 0 or lda < max(1, a_rows) or ldb < max(1, b_rows) or ldc < max(1, m):
            return INVALID_VALUE
        a = _column_major(A, a_rows, k if transa == 0 else m, lda, dtype)
        b = _column_major(B, b_rows, n if transb == 0 else k, ldb, dtype)
        c = _column_major(C, m, n, ldc, dtype)
        op_a, op_b = (a if transa == 0 else a.T), (b if transb == 0 else b.T)
        alpha, beta = alpha._obj.value, beta._obj.value
        c[...] = alpha * (op_a @ op_b) + (beta * c if beta else 0)  # beta 0: C is not read
        return 0

    def _gemv(self, dtype, trans, m, n, alpha, A, lda, x, incx, beta, y, incy):
        if min(m, n) < 0 or lda < max(1, m) or incx != 1 or incy != 1:
            return INVALID_VALUE  # (scratchvae's calls are unit-stride)
        a = _column_major(A, m, n, lda, dtype)
        op_a = a if trans == 0 else a.T
        xs = _column_major(x, op_a.shape[1], 1, max(1, op_a.shape[1]), dtype)[:, 0]
        ys = _column_major(y, op_a.shape[0], 1, max(1, op_a.shape[0]), dtype)[:, 0]
        alpha, beta = alpha._obj.value, beta._obj.value
        ys[...] = alpha * (op_a @ xs) + (beta * ys if beta else 0)
        return 0

    def cublasSgemm_v2(self, handle, *args):
        self.calls.append("sgemm")
        return self._gemm(np.float32, *args)

    def cublasDgemm_v2(self, handle, *args):
        self.calls.append("dgemm")
        return self._gemm(np.float64, *args)

    def cublasSgemv_v2(self, handle, *args):
        self.calls.append("sgemv")
        return self._gemv(np.float32, *args)

    def cublasDgemv_v2(self, handle, *args):
        self.calls.append("dgemv")
        return self._gemv(np.float64, *args)
