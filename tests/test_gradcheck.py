"""The gradient checker itself (it must be able to fail), and every op in float32."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import (
    ATOL32,
    H32,
    OP_CASES,
    RTOL32,
    case_ids,
    check_op,
    make_inputs,
    op_inputs,
)

from scratchvae.gradcheck import (
    assert_close,
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


def test_assert_close_and_max_rel_error() -> None:
    a = np.array([1.0, 2.0, 3.0])
    assert_close(a, a.copy())
    assert max_rel_error(a, a) == 0.0
    assert max_rel_error(a, -a) == pytest.approx(1.0)
    with pytest.raises(AssertionError, match=r"dW mismatch at \(1,\)"):
        assert_close(a, a + np.array([0.0, 1e-4, 0.0]), name="dW")
    with pytest.raises(AssertionError, match="shape"):
        assert_close(a, a[:2])


@pytest.mark.parametrize("case", OP_CASES, ids=case_ids())
def test_every_op_check_fails_for_a_backward_off_by_one_part_in_1000(case) -> None:
    """The float64 tolerance is tight: scaling any backward by 1.001 is caught."""
    inputs, dout = make_inputs(case, seed=17, B=3, D=4, scale=1.0, dtype="float64")
    check_op(case, inputs, dout)  # the true backward passes
    bad = dataclasses.replace(
        case, backward=lambda i, d: {k: 1.001 * v for k, v in case.backward(i, d).items()}
    )
    with pytest.raises(AssertionError, match="mismatch"):
        check_op(bad, inputs, dout)


@pytest.mark.parametrize("case", OP_CASES, ids=case_ids())
@given(data=st.data())
def test_op_gradient_float32(case, data: st.DataObject) -> None:
    """The same ops in float32 (the training dtype): outputs and gradients stay float32 and
    match central differences with h = 1e-2 at rtol 1e-2 (kinks kept 5 h away)."""
    inputs, dout = data.draw(op_inputs(case, dtype="float32", margin=5 * H32))
    y = case.forward(**inputs)
    assert np.asarray(y).dtype == np.float32
    check_op(case, inputs, dout, h=H32, rtol=RTOL32, atol=ATOL32, relative_atol=True)
