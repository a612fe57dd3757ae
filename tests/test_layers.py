"""Dense and Dropout: property-based gradient checks (float64) and their documented behaviour."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import case_ids, cases, check_op, op_inputs

from scratchvae.backend import Backend
from scratchvae.layers import (
    dense_backward,
    dense_forward,
    dropout_backward,
    dropout_forward,
    dropout_mask,
)


@pytest.mark.parametrize("case", cases("layers"), ids=case_ids("layers"))
@given(data=st.data())
def test_layer_gradient_float64(case, data: st.DataObject) -> None:
    """dense: dx, dW, db; dropout (fixed mask): dx. Against central differences, rtol 1e-6."""
    check_op(case, *data.draw(op_inputs(case)))


def test_dense_known_values_and_output_buffers() -> None:
    x = np.array([[1.0, 2.0]])  # (B=1, n_in=2)
    W = np.array([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]])  # (2, 3)
    b = np.array([0.0, 1.0, 2.0])
    y, cache = dense_forward(W, b, x)
    np.testing.assert_array_equal(y, [[2.0, 5.0, 1.0]])
    out_dW, out_db = np.empty_like(W), np.empty_like(b)
    dx, dW, db = dense_backward(W, cache, np.ones((1, 3)), out_dW=out_dW, out_db=out_db)
    np.testing.assert_array_equal(dx, [[0.0, 2.5]])
    np.testing.assert_array_equal(dW, [[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]])
    np.testing.assert_array_equal(db, [1.0, 1.0, 1.0])
    assert dW is out_dW and db is out_db  # written into the caller's gradient buffers
    assert dense_backward(W, cache, np.ones((1, 3)), need_dx=False)[0] is None


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
    assert y is x and cache is None
    assert dropout_backward(None, x) is x


def test_dropout_backward_uses_the_forward_mask() -> None:
    x = np.ones((2, 2))
    mask = np.array([[0.0, 2.0], [2.0, 0.0]])
    y, cache = dropout_forward(x, mask)
    np.testing.assert_array_equal(y, mask)
    np.testing.assert_array_equal(dropout_backward(cache, np.full((2, 2), 3.0)), 3.0 * mask)
