"""Numerical gradients by central differences, for checking hand-written backward passes.

The idea: for an op ``y = f(x)`` and a random cotangent ``dout`` (the same shape as y), the
scalar ``s(x) = sum(f(x) * dout)`` has gradient ``ds/dx = J^T dout`` - exactly what the op's
backward returns when handed ``dout``. So one scalar checks the whole Jacobian along a random
direction, and

    ds/dx_i ~ (s(x + h e_i) - s(x - h e_i)) / (2 h)        error O(h^2)

where the 2h is, in :func:`numerical_gradient`, the step x_i actually took once x_i + h and
x_i - h were rounded to x's dtype.

Use float64 (h ~ 1e-6 gives ~1e-9 relative accuracy); in float32 use h ~ 1e-2 and loose
tolerances. Example::

    x = rng.standard_normal((4, 3)); dout = rng.standard_normal((4, 3))
    num = numerical_vjp(lambda x: tanh_forward(x)[0], x, dout)
    ana = tanh_backward(tanh_forward(x)[1], dout)
    assert_close(ana, num)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .backend import get_xp, to_numpy

Array = Any


def numerical_gradient(f: Callable[[], Any], x: Array, h: float = 1e-6) -> Array:
    """d f() / d x by central differences, perturbing ``x`` IN PLACE (restored afterwards).

    ``f`` takes no arguments and returns a scalar (it reads x, e.g. a model's parameter view).
    Returns an array shaped like x. Costs 2 * x.size calls of f.
    """
    xp = get_xp(x)
    grad = xp.zeros(x.shape, dtype=x.dtype)
    flat = x.reshape(-1)  # a view: writing into it writes into x
    if flat.size and not _shares_memory(flat, x):
        raise ValueError("numerical_gradient needs a contiguous array it can perturb in place")
    g = grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i].copy()
        flat[i] = old + h
        x_plus, f_plus = float(to_numpy(flat[i])), float(to_numpy(f()))
        flat[i] = old - h
        x_minus, f_minus = float(to_numpy(flat[i])), float(to_numpy(f()))
        flat[i] = old
        # divided by the step x actually took: x +- h rounded to x's dtype is not 2h apart
        # (float32 at x = 1000, h = 1e-3: 2h is 0.2% off the step, the gradient as much)
        if x_plus == x_minus:
            raise ValueError(
                f"numerical_gradient: h={h:g} is below the rounding of x ({float(to_numpy(old))!r}"
                f" in {x.dtype}); use a larger h"
            )
        g[i] = (f_plus - f_minus) / (x_plus - x_minus)
    return grad


def _shares_memory(a: Array, b: Array) -> bool:
    xp = get_xp(a)
    return bool(xp.shares_memory(a, b)) if hasattr(xp, "shares_memory") else True


def numerical_vjp(f: Callable[[Array], Array], x: Array, dout: Array, h: float = 1e-6) -> Array:
    """J^T dout for y = f(x): the gradient of sum(f(x) * dout) with respect to x.

    ``x`` is copied, never modified. Returns an array shaped like x.
    """
    x = x.copy()
    xp = get_xp(x)
    return numerical_gradient(lambda: xp.sum(f(x) * dout), x, h)


def numerical_param_grads(
    loss: Callable[[], Any], params: Mapping[str, Array], h: float = 1e-6
) -> dict[str, Array]:
    """d loss() / d params[name] for every name, perturbing each parameter in place.

    ``loss`` must be deterministic (pass fixed noise), e.g.
    ``lambda: model.loss(x, noise, train=True)["loss"]``.
    """
    return {name: numerical_gradient(loss, p, h) for name, p in params.items()}


def max_rel_error(analytic: Array, numerical: Array, floor: float = 1e-8) -> float:
    """max |a - n| / max(|a| + |n|, floor): 0 when they agree, ~1 when unrelated."""
    a, n = to_numpy(analytic), to_numpy(numerical)
    xp = get_xp(a)
    denom = xp.maximum(xp.abs(a) + xp.abs(n), floor)
    return float(xp.max(xp.abs(a - n) / denom)) if a.size else 0.0


def assert_close(
    analytic: Array, numerical: Array, rtol: float = 1e-6, atol: float = 1e-9, name: str = ""
) -> None:
    """Raise AssertionError naming the worst entry when |a - n| > atol + rtol * |n| anywhere,
    or either side is NaN there (the first such entry; equal infinities agree)."""
    a, n = to_numpy(analytic), to_numpy(numerical)
    if a.shape != n.shape:
        raise AssertionError(f"{name}: shape {a.shape} != numerical {n.shape}")
    xp = get_xp(a)
    with xp.errstate(invalid="ignore"):  # inf - inf: NaN, an agreement when a == n
        err = xp.abs(a - n) - (atol + rtol * xp.abs(n))
    nan = xp.isnan(a) | xp.isnan(n)  # err > 0 is False for NaN: a NaN gradient passed
    err = xp.where(a == n, 0.0, xp.where(nan, xp.inf, err))
    if a.size and float(err.max()) > 0:
        i = xp.unravel_index(int(xp.argmax(err)), a.shape)
        raise AssertionError(
            f"{name or 'gradient'} mismatch at {tuple(int(j) for j in i)}: analytic {a[i]!r}, "
            f"numerical {n[i]!r} (rtol={rtol}, atol={atol}, max rel err "
            f"{max_rel_error(a, n):.2e})"
        )


def directional_derivative(
    f: Callable[[Array], Any], x: Array, direction: Array, h: float = 1e-6
) -> float:
    """d/dt f(x + t v) at t = 0 for a scalar function f, by one central difference:

        (f(x + h v) - f(x - h v)) / (2 h)        (two calls of f, whatever the size of x)

    Compared with <grad f(x), v> for a random v it checks a gradient along one direction: a
    cheap check for large arrays, where :func:`numerical_gradient` costs 2 calls per entry."""
    f_plus = float(to_numpy(f(x + h * direction)))
    f_minus = float(to_numpy(f(x - h * direction)))
    return (f_plus - f_minus) / (2 * h)
