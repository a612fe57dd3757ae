"""The gradient checker itself: it must be able to fail. scratchvae.gradcheck's numerical
gradients and comparisons, and the op table's check_op, which a backward off by one part in a
thousand (or by a factor of 2) does not pass."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from op_cases import OP_CASES, case_ids, check_op, make_inputs

from scratchvae.gradcheck import (
    assert_close,
    directional_derivative,
    max_rel_error,
    numerical_gradient,
    numerical_param_grads,
    numerical_vjp,
)


def test_numerical_gradient_of_a_cubic_restores_x() -> None:
    x = np.array([[0.5, -1.0], [2.0, 0.0]])
    original = x.copy()
    calls = []

    def f():
        calls.append(1)
        return (x**3).sum()

    g = numerical_gradient(f, x)
    np.testing.assert_allclose(g, 3 * original**2, rtol=1e-8, atol=1e-8)
    np.testing.assert_array_equal(x, original)  # perturbed in place, then restored exactly
    assert len(calls) == 2 * x.size


def test_numerical_gradient_divides_by_the_step_x_actually_took() -> None:
    """float32 x = 1000, h = 1e-3: x + h and x - h round to 16 ulps (0.98e-3) either side, so
    dividing by 2h gave 0.977 for the slope 1 of sum(x); the step taken gives it exactly. An h
    below x's rounding is refused, not answered with 0."""
    x = np.array([1000.0, -3.0], dtype=np.float32)
    g = numerical_gradient(lambda: x.astype(np.float64).sum(), x, h=1e-3)
    np.testing.assert_array_equal(g, [1.0, 1.0])
    with pytest.raises(ValueError, match="below the rounding of x"):
        numerical_gradient(lambda: x.sum(), x, h=1e-6)
    np.testing.assert_array_equal(x, [1000.0, -3.0])  # restored after the refusal too


def test_numerical_gradient_rejects_a_non_contiguous_view() -> None:
    x = np.zeros((3, 4))[:, :2]  # rows of 2 out of 4: no single stride, reshape copies
    with pytest.raises(ValueError, match="contiguous array"):
        numerical_gradient(lambda: x.sum(), x)


def test_numerical_vjp_is_the_transposed_jacobian_times_dout() -> None:
    A = np.array([[1.0, 2.0, 0.0], [0.0, -1.0, 3.0]])  # y = A x
    x, dout = np.array([0.3, -0.2, 0.7]), np.array([2.0, -1.0])
    before = x.copy()
    np.testing.assert_allclose(numerical_vjp(lambda v: A @ v, x, dout), A.T @ dout, rtol=1e-8)
    np.testing.assert_array_equal(x, before)


def test_numerical_param_grads_covers_every_name() -> None:
    params = {"a": np.array([1.0, 2.0]), "b": np.array([[3.0]])}
    grads = numerical_param_grads(lambda: (params["a"] ** 2).sum() * params["b"][0, 0], params)
    assert list(grads) == ["a", "b"]
    np.testing.assert_allclose(grads["a"], [6.0, 12.0], rtol=1e-8)
    np.testing.assert_allclose(grads["b"], [[5.0]], rtol=1e-8)


def test_directional_derivative_is_the_gradient_along_the_direction() -> None:
    """(f(x + h v) - f(x - h v)) / 2h == <grad f(x), v> with two calls of f, x unchanged;
    a gradient off by 1e-3 along v is told apart at float64's accuracy."""
    rng = np.random.default_rng(3)
    x, v = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    before = x.copy()
    calls = []

    def f(a):
        calls.append(1)
        return np.sum(np.sin(a) * a)

    grad = np.cos(x) * x + np.sin(x)
    got = directional_derivative(f, x, v)
    assert len(calls) == 2 and isinstance(got, float)
    np.testing.assert_array_equal(x, before)
    exact = float(np.sum(grad * v))
    assert got == pytest.approx(exact, rel=1e-8)
    assert got != pytest.approx(1.001 * exact, rel=1e-5)
    assert directional_derivative(f, x, np.zeros_like(x)) == 0.0


def test_assert_close_and_max_rel_error() -> None:
    a = np.array([1.0, 2.0, 3.0])
    assert_close(a, a.copy())
    assert max_rel_error(a, a) == 0.0
    assert max_rel_error(a, -a) == pytest.approx(1.0)
    with pytest.raises(AssertionError, match=r"dW mismatch at \(1,\)"):
        assert_close(a, a + np.array([0.0, 1e-4, 0.0]), name="dW")
    with pytest.raises(AssertionError, match="shape"):
        assert_close(a, a[:2])


def _scaled(case, factor: float):
    """``case`` with every gradient of its backward multiplied by ``factor``."""

    def backward(inputs, *douts):
        return {k: factor * v for k, v in case.backward(inputs, *douts).items()}

    return dataclasses.replace(case, backward=backward)


@pytest.mark.parametrize(
    "analytic, numerical",
    [([1.0, np.nan], [1.0, 2.0]), ([1.0, 2.0], [1.0, np.nan]), ([np.nan], [np.nan])],
)
def test_assert_close_refuses_nan(analytic, numerical) -> None:
    """A backward that returns NaN (or a loss that does, for the numerical side) is a failed
    check: |a - n| > tol is False for NaN, and assert_close passed it silently."""
    with pytest.raises(AssertionError, match="mismatch at"):
        assert_close(np.array(analytic), np.array(numerical), name="g")
    assert_close(np.array([np.inf, 1.0]), np.array([np.inf, 1.0]))  # equal infinities agree


@pytest.mark.parametrize("case", OP_CASES, ids=case_ids())
def test_every_op_check_fails_for_a_backward_off_by_one_part_in_1000(case) -> None:
    """The float64 tolerance is tight: scaling any backward by 1.001 is caught; in float32
    a factor of 2 is (the float32 check is loose, but not that loose)."""
    inputs, douts = make_inputs(case, seed=17, B=3, D=4, scale=1.0, dtype="float64")
    check_op(case, inputs, douts)  # the true backward passes
    with pytest.raises(AssertionError, match="mismatch"):
        check_op(_scaled(case, 1.001), inputs, douts)
    inputs, douts = make_inputs(case, seed=17, B=3, D=4, scale=1.0, dtype="float32")
    check_op(case, inputs, douts)
    with pytest.raises(AssertionError, match="mismatch"):
        check_op(_scaled(case, 2.0), inputs, douts)
