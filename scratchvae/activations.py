"""Elementwise activations as forward/backward pairs.

Each ``<name>_forward(x) -> (y, cache)`` and ``<name>_backward(cache, dy) -> dx`` with
``dx = dy * f'(x)``, the derivative written next to the code. Shapes: any; ``y``, ``dy`` and
``dx`` all have the shape of ``x``. Every one is stable for inputs of magnitude 1000.

The cache holds whatever makes the derivative cheapest: the output when ``f'`` is a function
of ``y`` (relu, sigmoid, tanh), the input otherwise.
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
def identity_forward(x: Array) -> tuple[Array, None]:
    return x, None


def identity_backward(cache: None, dy: Array) -> Array:
    return dy


# ReLU: y = max(x, 0),  dy/dx = 1[x > 0]  (= 1[y > 0]; we take 0 at the kink)
def relu_forward(x: Array) -> tuple[Array, Array]:
    y = get_xp(x).maximum(x, 0)
    return y, y


def relu_backward(y: Array, dy: Array) -> Array:
    if is_cupy(y):  # the same expression as one GPU kernel instead of two
        return cupy_kernel("scratchvae_relu_bwd", "T y, T dy", "T dx", "dx = y > 0 ? dy : T(0)")(
            y, dy
        )
    return dy * (y > 0)


# LeakyReLU: y = x if x > 0 else a*x,  dy/dx = 1 if x > 0 else a
def leaky_relu_forward(x: Array) -> tuple[Array, Array]:
    xp = get_xp(x)
    return xp.where(x > 0, x, LEAKY_SLOPE * x), x


def leaky_relu_backward(x: Array, dy: Array) -> Array:
    xp = get_xp(x)
    return xp.where(x > 0, dy, LEAKY_SLOPE * dy)


# ELU: y = x if x > 0 else a*(e^x - 1),  dy/dx = 1 if x > 0 else a*e^x = y + a
def elu_forward(x: Array) -> tuple[Array, tuple[Array, Array]]:
    xp = get_xp(x)
    y = xp.where(x > 0, x, ELU_ALPHA * xp.expm1(xp.minimum(x, 0)))  # min: no overflow at +1000
    return y, (x, y)


def elu_backward(cache: tuple[Array, Array], dy: Array) -> Array:
    x, y = cache
    return dy * get_xp(x).where(x > 0, 1, y + ELU_ALPHA)


# tanh: y = tanh(x),  dy/dx = 1 - y^2
def tanh_forward(x: Array) -> tuple[Array, Array]:
    y = get_xp(x).tanh(x)
    return y, y


def tanh_backward(y: Array, dy: Array) -> Array:
    return dy * (1 - y * y)


# sigmoid: y = 1 / (1 + e^-x)  (scipy's expit: stable both ways),  dy/dx = y (1 - y)
def sigmoid_forward(x: Array) -> tuple[Array, Array]:
    y = get_special(x).expit(x)
    return y, y


def sigmoid_backward(y: Array, dy: Array) -> Array:
    return dy * y * (1 - y)


# softplus: y = log(1 + e^x) = logaddexp(0, x),  dy/dx = sigmoid(x)
def softplus_forward(x: Array) -> tuple[Array, Array]:
    return get_special(x).softplus(x), x


def softplus_backward(x: Array, dy: Array) -> Array:
    return dy * get_special(x).expit(x)


@dataclass(frozen=True)
class Activation:
    """A named forward/backward pair, looked up with :func:`get_activation`."""

    name: str
    forward: Callable[[Array], tuple[Array, Any]]
    backward: Callable[[Any, Array], Array]


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
