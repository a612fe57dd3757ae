"""Activations: property-based gradient checks (float64 and float32), limits at |x| = 1000,
known values, and softplus against logaddexp over the whole range."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from op_cases import ACTIVATION_NAMES, case_ids, cases, check_op, op_inputs
from scipy.special import expit

from scratchvae.backend import get_special
from scratchvae.ops.activations import (
    ACTIVATIONS,
    ELU_ALPHA,
    LEAKY_SLOPE,
    ActivationCache,
    get_activation,
)

EXTREMES = [-1000.0, -80.0, -30.0, -1e-8, 0.0, 1e-8, 30.0, 80.0, 1000.0]


def test_every_activation_has_a_gradient_case() -> None:
    assert set(ACTIVATIONS) == set(ACTIVATION_NAMES) == set(case_ids("activations"))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", cases("activations"), ids=case_ids("activations"))
@given(data=st.data())
def test_activation_gradient(case, dtype: str, data: st.DataObject) -> None:
    """dx from the backward == central differences of sum(f(x) * dy): float64 at rtol 1e-6;
    float32 (the training dtype) keeps its dtype and matches at h = 1e-2, rtol 1e-2."""
    check_op(case, *data.draw(op_inputs(case, dtype)))


# (value at +1000, value at -1000, derivative at +1000, derivative at -1000)
LIMITS = {
    "identity": (1000.0, -1000.0, 1.0, 1.0),
    "relu": (1000.0, 0.0, 1.0, 0.0),
    "leaky_relu": (1000.0, -1000.0 * LEAKY_SLOPE, 1.0, LEAKY_SLOPE),
    "elu": (1000.0, -ELU_ALPHA, 1.0, 0.0),
    "tanh": (1.0, -1.0, 0.0, 0.0),
    "sigmoid": (1.0, 0.0, 0.0, 0.0),
    "softplus": (1000.0, 0.0, 1.0, 0.0),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_activation_limits_at_magnitude_1000(name: str, dtype: str) -> None:
    """Finite, dtype-preserving and equal to the exact limits at x = +-1000 (and +-89, where
    a naive exp overflows float32)."""
    act = get_activation(name)
    x = np.array([1000.0, -1000.0, 89.0, -89.0], dtype=dtype)
    y, cache = act.forward(x)
    dx = act.backward(cache, np.ones_like(x))
    assert isinstance(cache, ActivationCache)
    assert y.dtype == dx.dtype == np.dtype(dtype)
    assert np.isfinite(y).all() and np.isfinite(dx).all(), (y, dx)
    y_hi, y_lo, d_hi, d_lo = LIMITS[name]
    np.testing.assert_allclose(y[:2], [y_hi, y_lo], rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(dx[:2], [d_hi, d_lo], rtol=1e-6, atol=1e-30)


@pytest.mark.parametrize(
    "name, x, y, dydx",
    [
        ("identity", -0.7, -0.7, 1.0),
        ("relu", -0.7, 0.0, 0.0),
        ("relu", 0.7, 0.7, 1.0),
        ("leaky_relu", -2.0, -2.0 * LEAKY_SLOPE, LEAKY_SLOPE),
        ("elu", -1.0, math.exp(-1.0) - 1.0, math.exp(-1.0)),
        ("elu", 2.0, 2.0, 1.0),
        ("tanh", 0.5, math.tanh(0.5), 1 - math.tanh(0.5) ** 2),
        ("sigmoid", 0.0, 0.5, 0.25),
        ("sigmoid", 2.0, 1 / (1 + math.exp(-2.0)), math.exp(-2.0) / (1 + math.exp(-2.0)) ** 2),
        ("softplus", 0.0, math.log(2.0), 0.5),
        ("softplus", -3.0, math.log1p(math.exp(-3.0)), 1 / (1 + math.exp(3.0))),
    ],
)
def test_activation_known_values(name: str, x: float, y: float, dydx: float) -> None:
    act = get_activation(name)
    out, cache = act.forward(np.array([x]))
    np.testing.assert_allclose(out, [y], rtol=1e-12)
    np.testing.assert_allclose(act.backward(cache, np.array([3.0])), [3.0 * dydx], rtol=1e-12)


def test_relu_family_takes_zero_slope_side_at_the_kink() -> None:
    """At exactly 0 the documented choice is the left derivative (0, slope, alpha)."""
    x = np.zeros(1)
    for name, expected in (("relu", 0.0), ("leaky_relu", LEAKY_SLOPE), ("elu", ELU_ALPHA)):
        act = get_activation(name)
        assert act.backward(act.forward(x)[1], np.ones(1))[0] == pytest.approx(expected)


def test_unknown_activation_error_names_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown activation 'swish'.*relu"):
        get_activation("swish")


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_workspace_buffers_receive_the_results(name: str) -> None:
    """With a workspace, y and dx are its arrays, reused by the next call of the same shape."""
    from scratchvae.params import Workspace

    act, ws = get_activation(name), Workspace()
    x = np.linspace(-2.0, 2.0, 12).reshape(3, 4)
    want_y, want_cache = act.forward(x)
    want_dx = act.backward(want_cache, 2.0 * x)
    y, cache = act.forward(x.copy(), ws)
    dx = act.backward(cache, 2.0 * x, ws)
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(dx, want_dx)
    if name != "identity":  # identity returns its input and dy themselves
        assert y is act.forward(x, ws)[0] and dx is act.backward(cache, 2.0 * x, ws)


# ------------------------------------------------------------------ softplus, the stable way
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-15), (np.float32, 1e-6)])
def test_softplus_matches_logaddexp(dtype, rtol) -> None:
    """max(x, 0) + log1p(e^-|x|) against logaddexp(0, x) in float64, relative everywhere
    (tiny values too), on a fine grid and at the extremes; its gradient is expit(x)."""
    x = np.concatenate([np.linspace(-60, 60, 4001), EXTREMES]).astype(dtype)
    y, cache = get_activation("softplus").forward(x)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, np.logaddexp(0, x.astype(np.float64)), rtol=rtol, atol=0)
    dx = get_activation("softplus").backward(cache, np.ones_like(x))
    want = expit(x.astype(np.float64))
    np.testing.assert_allclose(dx, want, rtol=10 * rtol, atol=0)


def test_softplus_out_and_infinities() -> None:
    x = np.array([-np.inf, -1.0, 0.0, 2.0, np.inf])
    out = np.empty_like(x)
    got = get_special(x).softplus(x, out=out)
    assert got is out
    np.testing.assert_array_equal(got[[0, 4]], [0.0, np.inf])
    np.testing.assert_allclose(got[1:4], np.logaddexp(0, x[1:4]), rtol=1e-15)
