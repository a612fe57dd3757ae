"""Optional compiled CPU kernel (Numba) for the optimizer: Adam in one pass over all cores.

NumPy runs each ufunc as its own pass over memory on one core, so Adam is ten passes over the
parameters (:func:`scratchvae.optim.adam_chunk`, the readable reference kept next to its use).
The kernel below does the same arithmetic per element in one pass, split over the CPU's cores.
It is used only when Numba is installed (``pip install 'scratchvae[fast]'``), the arrays are
C-contiguous NumPy arrays, and ``SCRATCHVAE_NUMBA`` is not ``0``; otherwise NumPy runs.
``tests/test_compiled.py`` checks that both give the same numbers.

Only Adam is compiled because only Adam gained. A one-pass Bernoulli loss-and-gradient kernel was
measured and dropped: Numba calls a scalar ``exp``/``log1p`` per element where NumPy's are
vectorised, so it was no faster (``benchmarks/README.md`` has the figures).

The kernel compiles on first use (a second or two) and is cached on disk. Threading: Numba's
OpenMP layer busy-waits between parallel regions, as OpenBLAS does between matrix products; on a
machine with few cores the two take turns spinning on each other's cores (the step ran 2-3x
slower). Unless ``NUMBA_THREADING_LAYER`` is set, this module selects Numba's ``workqueue``
layer, whose workers sleep.
"""

from __future__ import annotations

import math
import os
from typing import Any

Array = Any

try:  # an optional dependency: everything works without it
    import numba
except ImportError:  # pragma: no cover - depends on the environment
    numba = None

# Numba present and not switched off with SCRATCHVAE_NUMBA=0. Tests flip it to run both paths.
ENABLED: bool = numba is not None and os.environ.get("SCRATCHVAE_NUMBA", "1") != "0"


def enabled() -> bool:
    """Whether the compiled kernels are used (Numba installed, not disabled)."""
    return ENABLED


def applies(*arrays: Array) -> bool:
    """True when the kernels are on and every array is a C-contiguous NumPy array."""
    if not ENABLED:
        return False
    return all(type(a).__module__ == "numpy" and a.flags.c_contiguous for a in arrays)


if numba is not None:
    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = "workqueue"

    from numba import prange

    _jit = numba.njit(parallel=True, cache=True, nogil=True)

    @_jit
    def _adam(p, g, m, v, one_minus_b1, one_minus_b2, step, eps):  # noqa: ANN001, ANN202
        # per element, as adam_chunk:  m += (1-b1)(g - m);  v += (1-b2)(g^2 - v);
        #                              p -= step * m / (sqrt(v) + eps)
        for i in prange(p.size):
            gi = g[i]
            mi = m[i] + one_minus_b1 * (gi - m[i])
            vi = v[i] + one_minus_b2 * (gi * gi - v[i])
            m[i] = mi
            v[i] = vi
            p[i] -= step * mi / (math.sqrt(vi) + eps)


def adam(
    p: Array, g: Array, m: Array, v: Array, b1: float, b2: float, step: float, eps: float
) -> None:
    """:func:`scratchvae.optim.adam_chunk` in one parallel pass (1-d arrays, in place)."""
    t = p.dtype.type  # scalars of the arrays' dtype: float32 arithmetic stays float32
    _adam(p, g, m, v, t(1 - b1), t(1 - b2), t(step), t(eps))
