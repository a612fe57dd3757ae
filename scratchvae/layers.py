"""Dense and Dropout as forward/backward pairs.

``dX`` always means dL/dX for the scalar loss L. Backward functions write parameter gradients
into ``out_*`` buffers when given (the model passes views of its gradient store) and return
them either way. ``out=`` / ``out_dx=``, when given, receive the result instead of a new array
(the training step passes buffers of its :class:`~scratchvae.params.Workspace`); they must
not overlap the inputs.
"""

from __future__ import annotations

from typing import Any

from . import compiled
from .backend import get_xp

Array = Any


def dense_forward(W: Array, b: Array, x: Array, out: Array | None = None) -> tuple[Array, Array]:
    """y = x @ W + b.   x: (B, n_in)  W: (n_in, n_out)  b: (n_out,)  y: (B, n_out).  cache = x."""
    y = get_xp(x).matmul(x, W, out=out)
    y += b
    return y, x


def dense_backward(
    W: Array,
    x: Array,
    dy: Array,
    out_dW: Array | None = None,
    out_db: Array | None = None,
    need_dx: bool = True,
    out_dx: Array | None = None,
    need_db: bool = True,
) -> tuple[Array | None, Array, Array | None]:
    """Backward of y = x @ W + b. Returns (dx, dW, db); dx is None when not needed.

    dL/dx = dy @ W^T        (B, n_in)
    dL/dW = x^T @ dy        (n_in, n_out)   summed over the batch by the product
    dL/db = sum_B dy        (n_out,)
    """
    xp = get_xp(x)
    dW = xp.matmul(x.T, dy, out=out_dW)
    db = _bias_grad(dy, out_db) if need_db else None  # False: the caller summed it
    dx = xp.matmul(dy, W.T, out=out_dx) if need_dx else None
    return dx, dW, db


def _bias_grad(dy: Array, out: Array | None) -> Array:
    """sum_B dy (n_out,); with Numba, the same sum in one compiled pass (same order, same bits)."""
    if compiled.applies(dy, out):
        return compiled.column_sum(dy, out)
    return get_xp(dy).sum(dy, axis=0, out=out)


def dropout_mask(backend: Any, shape: tuple[int, ...], p: float) -> Array:
    """An inverted-dropout mask: 1/(1-p) with probability 1-p, else 0. Drawn by the caller."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {p}")
    return backend.bernoulli(1.0 - p, shape) / (1.0 - p)


def dropout_forward(
    x: Array, mask: Array | None, out: Array | None = None
) -> tuple[Array, Array | None]:
    """Inverted dropout: y = x * mask in training (E[y] = x), y = x in evaluation (mask None).

    The same mask must reach :func:`dropout_backward`; it is the cache.
    """
    if mask is None:
        return x, None
    return get_xp(x).multiply(x, mask, out=out), mask


def dropout_backward(mask: Array | None, dy: Array, out: Array | None = None) -> Array:
    """dL/dx = dy * mask  (dy itself in evaluation)."""
    return dy if mask is None else get_xp(dy).multiply(dy, mask, out=out)
