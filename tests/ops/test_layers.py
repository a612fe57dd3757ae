"""Dense, dense + ReLU, dense + activation and dropout: property-based gradient checks
(float64 and float32, kernels on and off) and their documented behaviour."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from op_cases import ACTIVATION_NAMES, case_ids, cases, check_op, op_inputs

from scratchvae.backend import Backend
from scratchvae.ops.activations import get_activation
from scratchvae.ops.layers import (
    DenseCache,
    DenseGrads,
    DenseReluCache,
    DropoutCache,
    dense_act_backward,
    dense_act_forward,
    dense_backward,
    dense_forward,
    dense_relu_backward,
    dense_relu_forward,
    dropout_backward,
    dropout_forward,
    dropout_mask,
    hidden_layer,
)
from scratchvae.params import Workspace


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", cases("layers"), ids=case_ids("layers"))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_layer_gradient(case, dtype: str, kernels: bool, data: st.DataObject) -> None:
    """dense / dense_relu / dense_act: dx, dW, db; dropout (fixed mask): dx. Against central
    differences (float64 rtol 1e-6; float32 rtol 1e-2), with the Numba kernels on and off."""
    check_op(case, *data.draw(op_inputs(case, dtype)))


def _dense_example():
    x = np.array([[1.0, 2.0]])  # (B=1, n_in=2)
    W = np.array([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]])  # (2, 3)
    b = np.array([0.0, 1.0, -2.0])
    return x, W, b  # x W + b = [[2, 5, -3]]


def test_dense_known_values_and_output_buffers(kernels: bool) -> None:
    x, W, b = _dense_example()
    y, cache = dense_forward(x, W, b)
    np.testing.assert_array_equal(y, [[2.0, 5.0, -3.0]])
    assert isinstance(cache, DenseCache) and cache.x is x and cache.W is W
    out_dW, out_db = np.empty_like(W), np.empty_like(b)
    grads = dense_backward(cache, np.array([[1.0, 1.0, 2.0]]), out_dW=out_dW, out_db=out_db)
    assert isinstance(grads, DenseGrads)
    np.testing.assert_array_equal(grads.dx, [[-1.0, 2.5]])
    np.testing.assert_array_equal(grads.dW, [[1.0, 1.0, 2.0], [2.0, 2.0, 4.0]])
    np.testing.assert_array_equal(grads.db, [1.0, 1.0, 2.0])
    assert grads.dW is out_dW and grads.db is out_db  # written into the caller's buffers
    assert dense_backward(cache, np.ones((1, 3)), need_dx=False).dx is None


def test_dense_relu_known_values(kernels: bool) -> None:
    """h = max(x W + b, 0); dL/da = dh * 1[h > 0], then the dense layer's gradients."""
    x, W, b = _dense_example()
    h, cache = dense_relu_forward(x, W, b)
    np.testing.assert_array_equal(h, [[2.0, 5.0, 0.0]])
    assert isinstance(cache, DenseReluCache) and cache.h is h
    out_db = np.empty(3)
    dx, dW, db = dense_relu_backward(cache, np.array([[1.0, 3.0, 7.0]]), out_db=out_db)
    np.testing.assert_array_equal(db, [1.0, 3.0, 0.0])  # the ReLU stops the 7
    assert db is out_db
    np.testing.assert_array_equal(dW, [[1.0, 3.0, 0.0], [2.0, 6.0, 0.0]])
    np.testing.assert_array_equal(dx, [[1.0, 6.5]])
    assert dense_relu_backward(cache, np.ones((1, 3)), need_dx=False).dx is None


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dense_relu_equals_dense_then_relu(dtype: str, kernels: bool) -> None:
    """The fused op gives what the two ops give one after the other (kernels on and off)."""
    bk = Backend("numpy", dtype, seed=4)
    x, W, b, dh = bk.normal((7, 5)), bk.normal((5, 6)), bk.normal((6,)), bk.normal((7, 6))
    relu = get_activation("relu")
    a, dense_cache = dense_forward(x, W, b)
    want_h, relu_cache = relu.forward(a)
    want = dense_backward(dense_cache, relu.backward(relu_cache, dh))
    h, cache = dense_relu_forward(x, W, b)
    got = dense_relu_backward(cache, dh)
    rtol = 1e-6 if dtype == "float32" else 1e-14
    np.testing.assert_allclose(h, want_h, rtol=rtol, atol=rtol)
    for g, w, name in zip(got, want, DenseGrads._fields, strict=True):
        assert g.dtype == np.dtype(dtype), name
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * np.abs(w).max(), err_msg=name)


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_hidden_layer_is_dense_then_the_activation(activation: str) -> None:
    """hidden_layer("relu") is the fused op; every other activation is dense_act with it.
    Both give act(x W + b) and its gradients, and write into a workspace when given one."""
    forward, backward = hidden_layer(activation)
    if activation == "relu":
        assert (forward, backward) == (dense_relu_forward, dense_relu_backward)
    else:
        assert forward.func is dense_act_forward and backward.func is dense_act_backward
    bk = Backend("numpy", "float64", seed=5)
    x, W, b, dh = bk.normal((4, 3)), bk.normal((3, 5)), bk.normal((5,)), bk.normal((4, 5))
    act = get_activation(activation)
    a, dense_cache = dense_forward(x, W, b)
    want_h, act_cache = act.forward(a)
    want = dense_backward(dense_cache, act.backward(act_cache, dh))
    ws = Workspace()
    h, cache = forward(x, W, b, ws)
    np.testing.assert_allclose(h, want_h, rtol=1e-14)
    for g, w in zip(backward(cache, dh, ws), want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-13, atol=1e-15)
    assert len(ws) > 0  # the layer's arrays went into the workspace


def test_dense_act_without_workspace_allocates() -> None:
    x, W, b = _dense_example()
    tanh = get_activation("tanh")
    h, cache = dense_act_forward(x, W, b, act=tanh)
    np.testing.assert_allclose(h, np.tanh([[2.0, 5.0, -3.0]]), rtol=1e-15)
    grads = dense_act_backward(cache, np.ones((1, 3)), need_dx=False, act=tanh)
    assert grads.dx is None
    np.testing.assert_allclose(grads.db, 1 - np.tanh([2.0, 5.0, -3.0]) ** 2, rtol=1e-14)


# ------------------------------------------------------------------ dropout
def test_dropout_mask_is_inverted_and_unbiased() -> None:
    """Entries are 0 or 1/(1-p); the keep fraction is 1-p (6-sigma bound over 200k draws)."""
    bk = Backend("numpy", "float64", seed=3)
    p, n = 0.3, 200_000
    mask = dropout_mask(bk, (n,), p)
    assert set(np.unique(mask)) == {0.0, 1 / (1 - p)}
    keep = (mask > 0).mean()
    assert abs(keep - (1 - p)) < 6 * np.sqrt(p * (1 - p) / n)
    assert abs(mask.mean() - 1.0) < 6 * np.sqrt(p / (1 - p) / n)  # E[mask] = 1: E[y] = x


def test_dropout_mask_keeps_backend_dtype_and_rejects_bad_rates() -> None:
    bk = Backend("numpy", "float32", seed=0)
    assert dropout_mask(bk, (3, 4), 0.5).dtype == np.float32
    for p in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"dropout rate must be in \[0, 1\)"):
            dropout_mask(bk, (2, 2), p)


def test_dropout_without_mask_is_identity_both_ways() -> None:
    x = np.arange(6.0).reshape(2, 3)
    y, cache = dropout_forward(x, None)
    assert y is x and cache == DropoutCache(None)
    assert dropout_backward(cache, x) is x


def test_dropout_backward_uses_the_forward_mask() -> None:
    x = np.ones((2, 2))
    mask = np.array([[0.0, 2.0], [2.0, 0.0]])
    y, cache = dropout_forward(x, mask)
    np.testing.assert_array_equal(y, mask)
    assert cache.mask is mask
    np.testing.assert_array_equal(dropout_backward(cache, np.full((2, 2), 3.0)), 3.0 * mask)
