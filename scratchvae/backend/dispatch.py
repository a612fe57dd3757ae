"""Op dispatch: an op picks its implementation for the arrays it is given.

Every op in :mod:`scratchvae.ops` (and the optimizer's update) is a plain function with a
readable NumPy body, decorated with :func:`op`. A call looks at the op's array arguments (also
those inside a cache): C-contiguous NumPy arrays -> the Numba kernel of the same name
(:mod:`scratchvae.kernels.cpu`), when Numba is installed and the kernels are on; CuPy arrays ->
the CuPy kernel of the same name (:mod:`scratchvae.kernels.gpu`), when there is one; anything
else -> the body itself. An empty array takes the body too; so do float16 and mixed float
dtypes on NumPy (the Numba kernels are compiled for float32 or float64 arrays of one dtype;
the CuPy kernels name their types, as the trainer's float64 sums of float32 losses need). A
kernel takes the op's arguments and returns what the body returns (tests/kernels check each
against the body). Callers never choose.

:func:`kernels` switches the kernels off and on (``SCRATCHVAE_KERNELS=0`` starts with them off);
:func:`tracing` reports every op call to a tracer (``scratchvae trace``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .arrays import NUMPY_ARRAY, ROLES, array_role

__all__ = ["compiled_kernels", "kernels", "kernels_enabled", "op", "tracing"]


_KERNELS_ON = os.environ.get("SCRATCHVAE_KERNELS", "1") != "0"
_TABLES: dict[str, dict[str, Callable[..., Any]]] = {}
_FLOATS = "fd"  # float32, float64: the dtypes the kernels are compiled for
_TRACER: Any = None  # set by tracing(): an object with .call(op, impl, label, args, kwargs)


def _table(kind: str) -> dict[str, Callable[..., Any]]:
    """The kernels for ``kind`` arrays ("numpy": Numba's, "cupy": CuPy's) by op name, imported
    on first use."""
    table = _TABLES.get(kind)
    if table is None:
        from ..kernels import cpu, gpu  # noqa: PLC0415 - imported only once an op needs them

        table = _TABLES[kind] = (cpu if kind == "numpy" else gpu).KERNELS
    return table


def _fits(a: Any, floats: str) -> str | None:
    """Whether a Numba kernel can take the NumPy array ``a`` after arrays of the float dtype
    ``floats`` ("f", "d" or "": none yet): the float dtype code from now on, or None (the
    body then)."""
    if not (a.flags.c_contiguous and a.size):
        return None
    code = a.dtype.char
    if code in _FLOATS:
        return code if floats in ("", code) else None
    return floats if a.dtype.kind in "iub" else None


def _select(name: str, args: tuple) -> tuple[Callable[..., Any] | None, str]:
    """(kernel, label) for op ``name`` on ``args`` (the positional and keyword arguments'
    values, one level into tuples); (None, "numpy"/"cupy") means the op's body."""
    floats: str | None  # the arguments' float dtype code ("": none yet); None: no kernel
    kind, floats = "numpy", ""
    for a in args:
        t = type(a)
        if t is NUMPY_ARRAY:  # the common case first: a NumPy array argument
            floats = _fits(a, floats)
            if floats is None:
                return None, "numpy"
            continue
        role = ROLES.get(t) or array_role(t)
        if role == "skip":
            continue
        for b in a if role == "tuple" else (a,):  # a cache: its arrays
            t = type(b)
            role = "numpy" if t is NUMPY_ARRAY else ROLES.get(t) or array_role(t)
            if role == "other":
                return None, "numpy"
            if role == "cupy":
                kind = "cupy"
                if not (b.flags.c_contiguous and b.size):
                    return None, kind
            elif role == "numpy":
                floats = _fits(b, floats)
                if floats is None:
                    return None, kind
    if not _KERNELS_ON:
        return None, kind
    kernel = (_TABLES.get(kind) or _table(kind)).get(name)
    return kernel, ("numba" if kind == "numpy" else "cuda") if kernel else kind


def op(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Make ``fn`` an op: a call runs the kernel registered under ``fn``'s name for its arrays,
    or ``fn`` itself. ``op_fn.reference`` is always the body. Inside :func:`tracing` every call
    is also reported to the tracer (outside it the cost is one test of a global)."""
    name = fn.__name__

    @functools.wraps(fn)
    def dispatched(*args: Any, **kwargs: Any) -> Any:
        kernel, label = _select(name, (*args, *kwargs.values()) if kwargs else args)
        impl = kernel or fn
        if _TRACER is None:
            return impl(*args, **kwargs)
        return _TRACER.call(dispatched, impl, label, args, kwargs)

    dispatched.reference = fn  # type: ignore[attr-defined]
    dispatched.op_name = name  # type: ignore[attr-defined]
    return dispatched


def kernels_enabled() -> bool:
    """Whether ops use their kernels (``SCRATCHVAE_KERNELS=0`` or :func:`kernels` turn it off)."""
    return _KERNELS_ON


def compiled_kernels() -> bool:
    """Whether ops on NumPy arrays run Numba kernels now: the kernels on and Numba installed.
    They round in the last bits otherwise than the ops' bodies, so a training run records it
    with each epoch and a resume that differs says so (:mod:`scratchvae.resume`)."""
    return _KERNELS_ON and bool(_TABLES.get("numpy") or _table("numpy"))


@contextmanager
def kernels(on: bool) -> Iterator[None]:
    """Inside the block, ops use their kernels (``on``) or only their readable bodies."""
    global _KERNELS_ON
    before, _KERNELS_ON = _KERNELS_ON, bool(on)
    try:
        yield
    finally:
        _KERNELS_ON = before


@contextmanager
def tracing(tracer: Any) -> Iterator[Any]:
    """Report every op call inside the block to ``tracer.call(op, impl, label, args, kwargs)``
    (``op`` the dispatched op, ``impl`` what it chose, ``label`` "numba", "cuda", "numpy" or
    "cupy"), which must run ``impl(*args, **kwargs)`` and return its result."""
    global _TRACER
    before, _TRACER = _TRACER, tracer
    try:
        yield tracer
    finally:
        _TRACER = before
