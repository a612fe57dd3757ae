"""Losses: property-based gradient checks, stability of BCE on logits, reductions, and the
analytic Gaussian KL against a Monte-Carlo estimate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import case_ids, cases, check_op, op_inputs

from scratchvae.backend import Backend
from scratchvae.losses import (
    bernoulli_nll,
    bernoulli_nll_backward,
    bernoulli_nll_backward_from_softplus,
    bernoulli_nll_with_softplus,
    gaussian_kl,
    gaussian_nll,
    gaussian_nll_backward,
    sparsity_kl,
    sparsity_kl_backward,
    squared_error,
)


@pytest.mark.parametrize("case", cases("losses"), ids=case_ids("losses"))
@given(data=st.data())
def test_loss_gradient_float64(case, data: st.DataObject) -> None:
    """Every loss's backward against central differences (a random scalar cotangent), rtol 1e-6."""
    check_op(case, *data.draw(op_inputs(case)))


# ------------------------------------------------------------------ BCE on logits, stability
def _fast_nll(logits, x):
    return bernoulli_nll_with_softplus(logits, x)[0]


def _fast_grad(logits, x):
    return bernoulli_nll_backward_from_softplus(
        logits, x, bernoulli_nll_with_softplus(logits, x)[1]
    )


@pytest.mark.parametrize(
    "nll, nll_backward",
    [(bernoulli_nll, bernoulli_nll_backward), (_fast_nll, _fast_grad)],
    ids=["readable", "fast"],
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bernoulli_nll_exact_at_logits_1000(dtype: str, nll, nll_backward) -> None:
    """softplus(l) - x l at l = +-1000: 1000 (1 - x) and 1000 x exactly; gradient s(l) - x.
    Both the readable pair and the fast pair the models train with."""
    x = np.array([[0.0, 1.0, 0.25, 0.0, 1.0, 0.25]], dtype=dtype)
    logits = np.array([[1000.0, 1000.0, 1000.0, -1000.0, -1000.0, -1000.0]], dtype=dtype)
    expected = [1000.0, 0.0, 750.0, 0.0, 1000.0, 250.0]  # per pixel
    for j in range(6):
        value = nll(logits[:, j : j + 1], x[:, j : j + 1])
        assert np.isfinite(value) and value == pytest.approx(expected[j], abs=1e-3), j
    grad = nll_backward(logits, x)
    assert grad.dtype == np.dtype(dtype) and np.isfinite(grad).all()
    np.testing.assert_allclose(grad[0], [1.0, 0.0, 0.75, 0.0, -1.0, -0.25], atol=1e-7)
    assert nll(logits, x) == pytest.approx(sum(expected), rel=1e-6)


def test_bernoulli_nll_equals_cross_entropy_of_probabilities() -> None:
    bk = Backend("numpy", "float64", seed=2)
    logits, x = 3 * bk.normal((4, 7)), bk.uniform((4, 7))
    p = 1 / (1 + np.exp(-logits))
    expected = -(x * np.log(p) + (1 - x) * np.log(1 - p)).sum() / 4
    assert bernoulli_nll(logits, x) == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------------------ reductions and known values
def test_reduction_is_sum_over_features_mean_over_batch() -> None:
    """Repeating the batch leaves every loss unchanged; repeating the features doubles it."""
    bk = Backend("numpy", "float64", seed=4)
    a, b, lv = bk.normal((3, 4)), bk.uniform((3, 4)), bk.normal((3, 4))
    fns = {
        "bernoulli": lambda a, b, lv: bernoulli_nll(a, b),
        "gaussian": lambda a, b, lv: (
            gaussian_nll(a, b, lv) - 0.5 * a.shape[1] * math.log(2 * math.pi)
        ),
        "squared": lambda a, b, lv: squared_error(a, b),
        "kl": lambda a, b, lv: gaussian_kl(a, lv),
    }
    for name, f in fns.items():
        v = f(a, b, lv)
        rows = [np.concatenate([t, t], axis=0) for t in (a, b, lv)]
        cols = [np.concatenate([t, t], axis=1) for t in (a, b, lv)]
        assert f(*rows) == pytest.approx(v, rel=1e-12), name
        assert f(*cols) == pytest.approx(2 * v, rel=1e-12), name


def test_gaussian_nll_known_value_and_fixed_equals_learned() -> None:
    mean, x = np.array([[0.0, 1.0]]), np.array([[1.0, 1.0]])
    logvar = math.log(4.0)
    expected = 0.5 * (1 / 4 + 0 + 2 * math.log(4.0) + 2 * math.log(2 * math.pi))
    assert gaussian_nll(mean, x, logvar) == pytest.approx(expected, rel=1e-12)
    assert gaussian_nll(mean, x, np.full((1, 2), logvar)) == pytest.approx(expected, rel=1e-12)
    d_fixed, none = gaussian_nll_backward(mean, x, logvar)
    d_learned, _ = gaussian_nll_backward(mean, x, np.full((1, 2), logvar))
    assert none is None
    np.testing.assert_allclose(d_fixed, d_learned, rtol=1e-12)


def test_fixed_variance_gaussian_keeps_float32() -> None:
    mean, x = np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32)
    assert gaussian_nll_backward(mean, x, 2 * math.log(0.1))[0].dtype == np.float32
    assert np.asarray(gaussian_nll(mean, x, 0.0)).dtype == np.float32


def test_kl_is_zero_at_the_prior_and_positive_elsewhere() -> None:
    assert gaussian_kl(np.zeros((2, 3)), np.zeros((2, 3))) == 0.0
    bk = Backend("numpy", "float64", seed=8)
    assert gaussian_kl(bk.normal((5, 3)), bk.normal((5, 3))) > 0


def test_sparsity_kl_is_zero_at_target_with_zero_gradient() -> None:
    h = np.full((4, 3), 0.2)
    assert sparsity_kl(h, 0.2) == pytest.approx(0.0, abs=1e-15)
    np.testing.assert_allclose(sparsity_kl_backward(h, 0.2), 0.0, atol=1e-15)
    assert sparsity_kl(np.full((4, 3), 0.5), 0.2) > 0


# ------------------------------------------------------------------ KL against Monte Carlo
def test_gaussian_kl_matches_monte_carlo() -> None:
    """KL(q || p) = E_q[log q(z) - log p(z)]: the analytic value lies within 6 standard errors
    of the mean over 200k draws z ~ q (drawn with the reparameterization, per example)."""
    bk = Backend("numpy", "float64", seed=21)
    mu = np.array([[0.5, -1.0, 2.0], [0.0, 0.3, -0.7]])  # (B=2, L=3)
    logvar = np.array([[-1.0, 0.5, 0.0], [1.2, -2.0, 0.3]])
    n = 200_000
    eps = bk.normal((n, *mu.shape))
    z = mu + np.exp(0.5 * logvar) * eps
    log_q = -0.5 * ((z - mu) ** 2 / np.exp(logvar) + logvar + math.log(2 * math.pi))
    log_p = -0.5 * (z**2 + math.log(2 * math.pi))
    per_draw = (log_q - log_p).sum(axis=2).mean(axis=1)  # sum over L, mean over B: (n,)
    estimate, stderr = per_draw.mean(), per_draw.std(ddof=1) / math.sqrt(n)
    assert abs(gaussian_kl(mu, logvar) - estimate) < 6 * stderr
    assert stderr < 0.01  # the bound is tight enough to mean something
