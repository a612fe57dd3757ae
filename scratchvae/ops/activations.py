"""Elementwise activations as forward/backward pairs.

Each ``<name>_forward(x, ws=None) -> (y, cache)`` and ``<name>_backward(cache, dy, ws=None) ->
dx`` with ``dx = dy * f'(x)``, the derivative written next to the code. Shapes: any; ``y``,
``dy`` and ``dx`` all have the shape of ``x``. Every one is stable for inputs of magnitude 1000.

The cache (:class:`ActivationCache`) holds whatever makes the derivative cheapest: the output
when ``f'`` is a function of ``y`` (relu, sigmoid, tanh), the input otherwise (leaky_relu,
softplus), both for ELU (x picks the branch, y + alpha is the slope). ``ws``: a
:class:`~scratchvae.params.Workspace` whose arrays receive the results (the training step's
reused buffers), or None to allocate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..backend import get_special, get_xp, op
from ..params import Workspace, buffer

Array = Any
WS = Workspace | None

LEAKY_SLOPE = 0.01  # LeakyReLU's slope for x < 0
ELU_ALPHA = 1.0  # ELU saturates at -alpha for x -> -inf


class ActivationCache(NamedTuple):
    """What the backward pass reads: the input x, the output y, or both (the other None)."""

    x: Array = None  # (Array, not Array | None: each op reads the one it kept)
    y: Array = None


def _y(ws: WS, x: Array) -> Array:
    return buffer(ws, "y", x.shape, x)


def _dx(ws: WS, dy: Array) -> Array:
    return buffer(ws, "dx", dy.shape, dy)


# identity: y = x,  dy/dx = 1
@op
def identity_forward(x: Array, ws: WS = None) -> tuple[Array, ActivationCache]:
    return x, ActivationCache()


@op
def identity_backward(cache: ActivationCache, dy: Array, ws: WS = None) -> Array:
    return dy


# ReLU: y = max(x, 0),  dy/dx = 1[x > 0]  (= 1[y > 0]; we take 0 at the kink)
@op
def relu_forward(x: Array, ws: WS = None) -> tuple[Array, ActivationCache]:
    y = get_xp(x).maximum(x, 0, out=_y(ws, x))
    return y, ActivationCache(y=y)


@op
def relu_backward(cache: ActivationCache, dy: Array, ws: WS = None) -> Array:
    return get_xp(dy).multiply(dy, cache.y > 0, out=_dx(ws, dy))


# LeakyReLU: y = x if x > 0 else a*x,  dy/dx = 1 if x > 0 else a
@op
def leaky_relu_forward(x: Array, ws: WS = None) -> tuple[Array, ActivationCache]:
    y = _y(ws, x)
    y[...] = get_xp(x).where(x > 0, x, LEAKY_SLOPE * x)
    return y, ActivationCache(x=x)


@op
def leaky_relu_backward(cache: ActivationCache, dy: Array, ws: WS = None) -> Array:
    dx = _dx(ws, dy)
    dx[...] = get_xp(dy).where(cache.x > 0, dy, LEAKY_SLOPE * dy)
    return dx


# ELU: y = x if x > 0 else a*(e^x - 1),  dy/dx = 1 if x > 0 else a*e^x = y + a
@op
def elu_forward(x: Array, ws: WS = None) -> tuple[Array, ActivationCache]:
    xp = get_xp(x)
    y = _y(ws, x)
    y[...] = xp.where(x > 0, x, ELU_ALPHA * xp.expm1(xp.minimum(x, 0)))  # min: no overflow
    return y, ActivationCache(x=x, y=y)


@op
def elu_backward(cache: ActivationCache, dy: Array, ws: WS = None) -> Array:
    dx = _dx(ws, dy)
    dx[...] = dy * get_xp(dy).where(cache.x > 0, 1, cache.y + ELU_ALPHA)
    return dx


# tanh: y = tanh(x),  dy/dx = 1 - y^2
@op
def tanh_forward(x: Array, ws: WS = None) -> tuple[Array, ActivationCache]:
    y = get_xp(x).tanh(x, out=_y(ws, x))
    return y, ActivationCache(y=y)


@op
def tanh_backward(cache: ActivationCache, dy: Array, ws: WS = None) -> Array:
    xp = get_xp(dy)
    dx = xp.multiply(cache.y, cache.y, out=_dx(ws, dy))  # y^2
    xp.subtract(1, dx, out=dx)  # 1 - y^2
    dx *= dy
    return dx


# sigmoid: y = 1 / (1 + e^-x)  (scipy's expit: stable both ways),  dy/dx = y (1 - y)
@op
def sigmoid_forward(x: Array, ws: WS = None) -> tuple[Array, ActivationCache]:
    y = get_special(x).expit(x, out=_y(ws, x))
    return y, ActivationCache(y=y)


@op
def sigmoid_backward(cache: ActivationCache, dy: Array, ws: WS = None) -> Array:
    dx = get_xp(dy).subtract(1, cache.y, out=_dx(ws, dy))  # 1 - y
    dx *= cache.y
    dx *= dy
    return dx


# softplus: y = log(1 + e^x) = logaddexp(0, x),  dy/dx = sigmoid(x)
# (on NumPy the backend computes max(x, 0) + log1p(e^-|x|): e^-|x| <= 1 cannot overflow)
@op
def softplus_forward(x: Array, ws: WS = None) -> tuple[Array, ActivationCache]:
    return get_special(x).softplus(x, out=_y(ws, x)), ActivationCache(x=x)


@op
def softplus_backward(cache: ActivationCache, dy: Array, ws: WS = None) -> Array:
    dx = get_special(dy).expit(cache.x, out=_dx(ws, dy))
    dx *= dy
    return dx


@dataclass(frozen=True)
class Activation:
    """A named forward/backward pair, looked up with :func:`get_activation`."""

    name: str
    forward: Callable[..., tuple[Array, ActivationCache]]  # (x, ws=None) -> (y, cache)
    backward: Callable[..., Array]  # (cache, dy, ws=None) -> dx


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("identity", identity_forward, identity_backward),
        Activation("relu", relu_forward, relu_backward),
        Activation("leaky_relu", leaky_relu_forward, leaky_relu_backward),
        Activation("elu", elu_forward, elu_backward),
        Activation("tanh", tanh_forward, tanh_backward),
        Activation("sigmoid", sigmoid_forward, sigmoid_backward),
        Activation("softplus", softplus_forward, softplus_backward),
    )
}


def get_activation(name: str) -> Activation:
    """The activation called ``name`` (one of :data:`ACTIVATIONS`)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}"
        ) from None
