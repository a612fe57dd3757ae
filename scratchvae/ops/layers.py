"""Dense layers and inverted dropout as forward/backward pairs.

``dX`` always means dL/dX for the scalar loss L. A forward returns its output and a named cache
(what its backward reads); a backward takes the cache and the upstream gradient and returns the
gradients as a named tuple whose fields say which input each belongs to (``dx``, ``dW``,
``db``). ``ws`` is the :class:`~scratchvae.params.Workspace` the results are written into (None:
allocated); ``out_dW`` / ``out_db``, when given, receive the parameter gradients (the model
passes the views of its gradient store), and ``need_dx=False`` skips dL/dx (the first layer's).

The hidden layers of an MLP are a dense layer followed by an activation. For ReLU the two are
one op, :func:`dense_relu_forward` / :func:`dense_relu_backward`: the bias, the ReLU and (in
the backward) the bias gradient are one pass over memory in its kernels.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

from ..backend import get_xp, op
from ..params import Workspace, buffer, scope
from .activations import Activation, ActivationCache, get_activation

Array = Any
WS = Workspace | None


class DenseCache(NamedTuple):
    x: Array  # (B, n_in)       the layer's input
    W: Array  # (n_in, n_out)   the weights (the parameter itself, not a copy)


class DenseGrads(NamedTuple):
    dx: Array | None  # (B, n_in), None when not asked for
    dW: Array  # (n_in, n_out)
    db: Array  # (n_out,)


# ------------------------------------------------------------------------------ dense
@op
def dense_forward(x: Array, W: Array, b: Array, ws: WS = None) -> tuple[Array, DenseCache]:
    """y = x @ W + b.   x: (B, n_in)  W: (n_in, n_out)  b: (n_out,)  ->  y: (B, n_out)."""
    y = get_xp(x).matmul(x, W, out=buffer(ws, "y", (x.shape[0], W.shape[1]), x))
    y += b
    return y, DenseCache(x, W)


@op
def dense_backward(
    cache: DenseCache,
    dy: Array,
    ws: WS = None,
    need_dx: bool = True,
    out_dW: Array | None = None,
    out_db: Array | None = None,
) -> DenseGrads:
    """Backward of y = x @ W + b.

    dL/dx = dy @ W^T        (B, n_in)
    dL/dW = x^T @ dy        (n_in, n_out)   summed over the batch by the product
    dL/db = sum_B dy        (n_out,)
    """
    xp = get_xp(dy)
    dW = xp.matmul(cache.x.T, dy, out=out_dW)
    db = xp.sum(dy, axis=0, out=out_db)
    dx = xp.matmul(dy, cache.W.T, out=buffer(ws, "dx", cache.x.shape, dy)) if need_dx else None
    return DenseGrads(dx, dW, db)


# ------------------------------------------------------------------------------ dense + ReLU
class DenseReluCache(NamedTuple):
    x: Array  # (B, n_in)      the layer's input
    W: Array  # (n_in, n_out)  the weights
    h: Array  # (B, n_out)     the output max(x W + b, 0): where it is > 0 is ReLU's derivative


@op
def dense_relu_forward(x: Array, W: Array, b: Array, ws: WS = None) -> tuple[Array, DenseReluCache]:
    """h = max(x @ W + b, 0).   x: (B, n_in)  W: (n_in, n_out)  b: (n_out,)  ->  h: (B, n_out)."""
    xp = get_xp(x)
    h = xp.matmul(x, W, out=buffer(ws, "h", (x.shape[0], W.shape[1]), x))  # a = x W
    h += b  # a + b
    xp.maximum(h, 0, out=h)  # relu(a + b), in place
    return h, DenseReluCache(x, W, h)


@op
def dense_relu_backward(
    cache: DenseReluCache,
    dh: Array,
    ws: WS = None,
    need_dx: bool = True,
    out_dW: Array | None = None,
    out_db: Array | None = None,
) -> DenseGrads:
    """Backward of h = max(x @ W + b, 0), with a = x @ W + b:

    dL/da = dh * 1[h > 0]   (B, n_out)   ReLU's derivative (0 at the kink)
    then the dense layer's backward with dy = dL/da: dx = da W^T, dW = x^T da, db = sum_B da.
    """
    da = get_xp(dh).multiply(dh, cache.h > 0, out=buffer(ws, "da", dh.shape, dh))
    return dense_backward(DenseCache(cache.x, cache.W), da, ws, need_dx, out_dW, out_db)


# ------------------------------------------------------------------------------ dense + any
class DenseActCache(NamedTuple):
    dense: DenseCache  # the dense layer's cache
    act: ActivationCache  # the activation's cache


@op
def dense_act_forward(
    x: Array, W: Array, b: Array, ws: WS = None, *, act: Activation
) -> tuple[Array, DenseActCache]:
    """h = act(x @ W + b): :func:`dense_forward`, then the activation's forward."""
    a, dense = dense_forward(x, W, b, scope(ws, "dense"))
    h, act_cache = act.forward(a, scope(ws, "act"))
    return h, DenseActCache(dense, act_cache)


@op
def dense_act_backward(
    cache: DenseActCache,
    dh: Array,
    ws: WS = None,
    need_dx: bool = True,
    out_dW: Array | None = None,
    out_db: Array | None = None,
    *,
    act: Activation,
) -> DenseGrads:
    """dL/da = act'(a) * dh (the activation's backward), then :func:`dense_backward`."""
    da = act.backward(cache.act, dh, scope(ws, "act"))
    return dense_backward(cache.dense, da, scope(ws, "dense"), need_dx, out_dW, out_db)


def hidden_layer(activation: str) -> tuple[Any, Any]:
    """(forward, backward) of a hidden layer with this activation: the fused dense + ReLU op
    for "relu", else dense then the activation. Both take (x, W, b, ws) / (cache, dh, ws,
    need_dx, out_dW, out_db)."""
    if activation == "relu":
        return dense_relu_forward, dense_relu_backward
    act = get_activation(activation)
    return partial(dense_act_forward, act=act), partial(dense_act_backward, act=act)


# ------------------------------------------------------------------------------ dropout
class DropoutCache(NamedTuple):
    mask: Array | None  # (B, n) the mask that was applied (None in evaluation)


def dropout_mask(backend: Any, shape: tuple[int, ...], p: float) -> Array:
    """An inverted-dropout mask: 1/(1-p) with probability 1-p, else 0. Drawn by the caller."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {p}")
    return backend.bernoulli(1.0 - p, shape) / (1.0 - p)


@op
def dropout_forward(x: Array, mask: Array | None, ws: WS = None) -> tuple[Array, DropoutCache]:
    """Inverted dropout: y = x * mask in training (E[y] = x), y = x in evaluation (mask None).
    The same mask must reach :func:`dropout_backward`: it is the cache."""
    if mask is None:
        return x, DropoutCache(None)
    return get_xp(x).multiply(x, mask, out=buffer(ws, "y", x.shape, x)), DropoutCache(mask)


@op
def dropout_backward(cache: DropoutCache, dy: Array, ws: WS = None) -> Array:
    """dL/dx = dy * mask  (dy itself in evaluation)."""
    if cache.mask is None:
        return dy
    return get_xp(dy).multiply(dy, cache.mask, out=buffer(ws, "dx", dy.shape, dy))
