"""Elementwise activations as forward/backward pairs.

Each ``<name>_forward(x) -> (y, cache)`` and ``<name>_backward(cache, dy) -> dx`` with
``dx = dy * f'(x)``, the derivative written next to the code. Shapes: any; ``y``, ``dy`` and
``dx`` all have the shape of ``x``. Every one is stable for inputs of magnitude 1000.

The cache holds whatever makes the derivative cheapest: the output when ``f'`` is a function
of ``y`` (relu, sigmoid, tanh), the input otherwise.

Every function takes ``out=``: an array of the result's shape that receives the result (the
training step passes reused buffers). It must not be an input. ReLU, tanh, sigmoid and softplus
write into it directly; LeakyReLU and ELU compute with temporaries and copy the result in;
identity returns its input and ignores it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .backend import cupy_kernel, get_special, get_xp, is_cupy

Array = Any

LEAKY_SLOPE = 0.01  # LeakyReLU's slope for x < 0
ELU_ALPHA = 1.0  # ELU saturates at -alpha for x -> -inf


# identity: y = x,  dy/dx = 1
def identity_forward(x: Array, out: Array | None = None) -> tuple[Array, None]:
    return x, None


def identity_backward(cache: None, dy: Array, out: Array | None = None) -> Array:
    return dy


def _into(out: Array | None, value: Array) -> Array:
    """``value``, copied into ``out`` when one is given."""
    if out is None:
        return value
    out[...] = value
    return out


# ReLU: y = max(x, 0),  dy/dx = 1[x > 0]  (= 1[y > 0]; we take 0 at the kink)
def relu_forward(x: Array, out: Array | None = None) -> tuple[Array, Array]:
    y = get_xp(x).maximum(x, 0, out=out)
    return y, y


def relu_backward(y: Array, dy: Array, out: Array | None = None) -> Array:
    if is_cupy(y):  # the same expression as one GPU kernel instead of two
        kernel = cupy_kernel("scratchvae_relu_bwd", "T y, T dy", "T dx", "dx = y > 0 ? dy : T(0)")
        return kernel(y, dy) if out is None else kernel(y, dy, out)
    return get_xp(y).multiply(dy, y > 0, out=out)


# LeakyReLU: y = x if x > 0 else a*x,  dy/dx = 1 if x > 0 else a
def leaky_relu_forward(x: Array, out: Array | None = None) -> tuple[Array, Array]:
    xp = get_xp(x)
    return _into(out, xp.where(x > 0, x, LEAKY_SLOPE * x)), x


def leaky_relu_backward(x: Array, dy: Array, out: Array | None = None) -> Array:
    xp = get_xp(x)
    return _into(out, xp.where(x > 0, dy, LEAKY_SLOPE * dy))


# ELU: y = x if x > 0 else a*(e^x - 1),  dy/dx = 1 if x > 0 else a*e^x = y + a
def elu_forward(x: Array, out: Array | None = None) -> tuple[Array, tuple[Array, Array]]:
    xp = get_xp(x)
    y = xp.where(x > 0, x, ELU_ALPHA * xp.expm1(xp.minimum(x, 0)))  # min: no overflow at +1000
    y = _into(out, y)
    return y, (x, y)


def elu_backward(cache: tuple[Array, Array], dy: Array, out: Array | None = None) -> Array:
    x, y = cache
    return _into(out, dy * get_xp(x).where(x > 0, 1, y + ELU_ALPHA))


# tanh: y = tanh(x),  dy/dx = 1 - y^2
def tanh_forward(x: Array, out: Array | None = None) -> tuple[Array, Array]:
    y = get_xp(x).tanh(x, out=out)
    return y, y


def tanh_backward(y: Array, dy: Array, out: Array | None = None) -> Array:
    xp = get_xp(y)
    dx = xp.multiply(y, y, out=out)  # y^2
    xp.subtract(1, dx, out=dx)  # 1 - y^2
    dx *= dy
    return dx


# sigmoid: y = 1 / (1 + e^-x)  (scipy's expit: stable both ways),  dy/dx = y (1 - y)
def sigmoid_forward(x: Array, out: Array | None = None) -> tuple[Array, Array]:
    y = get_special(x).expit(x, out=out)
    return y, y


def sigmoid_backward(y: Array, dy: Array, out: Array | None = None) -> Array:
    xp = get_xp(y)
    dx = xp.subtract(1, y, out=out)  # 1 - y
    dx *= y
    dx *= dy
    return dx


# softplus: y = log(1 + e^x) = logaddexp(0, x),  dy/dx = sigmoid(x)
def softplus_forward(x: Array, out: Array | None = None) -> tuple[Array, Array]:
    return get_special(x).softplus(x, out=out), x


def softplus_backward(x: Array, dy: Array, out: Array | None = None) -> Array:
    dx = get_special(x).expit(x, out=out)
    dx *= dy
    return dx


@dataclass(frozen=True)
class Activation:
    """A named forward/backward pair, looked up with :func:`get_activation`."""

    name: str
    forward: Callable[..., tuple[Array, Any]]  # (x, out=None) -> (y, cache)
    backward: Callable[..., Array]  # (cache, dy, out=None) -> dx


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
