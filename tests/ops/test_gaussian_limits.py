"""The Gaussian likelihood at a tiny learned variance: log N(x; m, e^lv) and its gradients where
e^-lv overflows (lv < -88.7 in float32, < -709.8 in float64).

(x - m)^2 e^-lv was 0 * inf = NaN at x == m, where the formula's limit is finite: the term is 0,
the NLL 0.5 (lv + log 2 pi), d/dm 0 and d/dlv 1/2. The trainer then stopped on a "divergence"
that the model had not made. Each check runs with the kernels on and off (SCRATCHVAE_KERNELS=0
runs the readable op; both must agree)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from op_cases import OpCase, check_op

from scratchvae.backend import Backend
from scratchvae.gradcheck import numerical_vjp
from scratchvae.ops.losses import (
    LOG_2PI,
    Likelihood,
    gaussian_nll_backward,
    gaussian_nll_forward,
    log_normal,
)

# log-variances where e^-lv overflows, down to half the most negative finite number (two
# features: their sum, 2 lv, must stay finite; past that the NLL itself is not a number)
TINY = {
    "float32": [-88.8, -100.0, -177.5, -180.0, -352.5, -400.0, -1e5, -1.7e38],
    "float64": [-709.9, -800.0, -1419.6, -2836.5, -3000.0, -1e300, -8.9e307],
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nll_and_gradients_at_the_mean_are_the_limit(dtype: str, kernels: bool) -> None:
    """x == m: per feature NLL 0.5 (lv + log 2 pi), dL/dm = 0, dL/dlv = 1/2 [/ B], finite,
    for learned log-variances from where e^-lv overflows to where the NLL would."""
    lv = np.array(TINY[dtype], dtype=dtype)[:, None] * np.ones((1, 2), dtype=dtype)
    x = np.tile(np.array([[0.0, 0.375]], dtype=dtype), (len(lv), 1))
    mean = x.copy()
    want = 0.5 * (lv.astype(np.float64) + LOG_2PI).sum(axis=1)
    nll, cache = gaussian_nll_forward(mean, x, lv, "none")
    np.testing.assert_allclose(nll, want, rtol=4 * np.finfo(dtype).eps)
    np.testing.assert_allclose(-log_normal(x, mean, lv), want, rtol=4 * np.finfo(dtype).eps)
    grads = gaussian_nll_backward(cache, np.ones(len(lv), dtype=dtype))
    np.testing.assert_array_equal(grads.dmean, 0.0)
    np.testing.assert_array_equal(grads.dlogvar, 0.5)
    _, mean_cache = gaussian_nll_forward(mean, x, lv)  # reduce="mean": 1/B each
    np.testing.assert_array_equal(gaussian_nll_backward(mean_cache, 1.0).dlogvar, 0.5 / len(lv))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_learned_likelihood_at_the_mean_is_finite(dtype: str, kernels: bool) -> None:
    """The decoder's view: out = [mean | logvar] with logvar -100 (float32) or -800 (float64)
    at pixels the mean fits exactly: the loss, dL/dout and log p(x|z) are the limit's."""
    lv = -100.0 if dtype == "float32" else -800.0
    lik = Likelihood("gaussian-learned")
    x = np.array([[0.0, 0.25, 1.0], [0.5, 0.5, 0.0]], dtype=dtype)
    out = np.concatenate([x, np.full_like(x, lv)], axis=1)
    nll, cache = lik.forward(out, x)
    assert float(nll) == pytest.approx(1.5 * (lv + LOG_2PI), rel=1e-6)
    dout = lik.backward(cache)
    np.testing.assert_array_equal(dout[:, :3], 0.0)
    np.testing.assert_array_equal(dout[:, 3:], 0.25)  # 1/2 per feature, over B = 2
    np.testing.assert_allclose(lik.log_prob(out, x), -1.5 * (lv + LOG_2PI), rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fixed_tiny_variance_at_the_mean_is_finite(dtype: str, kernels: bool) -> None:
    """A fixed std of 1e-25 (float32: e^-lv = 1e50 overflows) or 1e-200 (float64)."""
    std = 1e-25 if dtype == "float32" else 1e-200
    x = np.array([[0.0, 0.5]], dtype=dtype)
    nll, cache = Likelihood("gaussian", std=std).forward(x.copy(), x)
    assert float(nll) == pytest.approx(2 * math.log(std) + LOG_2PI, rel=1e-6)
    np.testing.assert_array_equal(gaussian_nll_backward(cache.loss, 1.0).dmean, 0.0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_tiny_residuals_are_the_formula_where_it_is_finite(dtype: str, kernels: bool) -> None:
    """x - m tiny but not 0 while e^-lv overflows: (x - m)^2 underflowed to 0 before it met
    e^-lv (0 * inf again), though the product is an ordinary number. Now the NLL and both
    gradients are the formula's (reference: exact powers in Python's float / log space)."""
    if dtype == "float32":
        lv, diffs = -170.0, [1e-38, 3e-37, -2e-36, 1e-40]  # the last is subnormal
    else:
        lv, diffs = -1300.0, [1e-290, -3e-285, 1e-300, 5e-310]
    d = np.array([diffs], dtype=dtype)
    mean = np.zeros_like(d)
    logvar = np.full_like(d, lv)
    nll, cache = gaussian_nll_forward(mean, d, logvar, "none")
    grads = gaussian_nll_backward(cache, np.ones(1, dtype=dtype))
    dd = [float(v) for v in d[0]]  # the residuals as stored, exactly
    r2 = [math.exp(2 * math.log(abs(v)) - lv) for v in dd]  # (x - m)^2 e^-lv
    want_nll = 0.5 * (sum(r2) + len(dd) * (lv + LOG_2PI))
    want_dmean = [-math.copysign(math.exp(math.log(abs(v)) - lv), v) for v in dd]
    want_dlogvar = [0.5 * (1 - q) for q in r2]
    assert np.all(np.isfinite(grads.dmean)) and np.all(np.isfinite(grads.dlogvar))
    np.testing.assert_allclose(nll, [want_nll], rtol=1e-5)
    np.testing.assert_allclose(grads.dmean[0], want_dmean, rtol=1e-5)
    np.testing.assert_allclose(grads.dlogvar[0], want_dlogvar, rtol=1e-5)


def _make(bk: Backend, B: int, D: int, spread: float) -> dict:
    """Log-variances over [-spread, spread] (e^-lv from e^-40 to e^40 at the widest), residuals
    of a few standard deviations, and some features where x == mean exactly."""
    logvar = spread * (2 * bk.uniform((B, D)) - 1)
    mean = bk.normal((B, D))
    x = mean + np.exp(0.5 * logvar) * bk.normal((B, D))
    x[:, ::3] = mean[:, ::3]
    return {"mean": mean, "x": x, "logvar": logvar}


def _backward(i: dict, dloss: np.ndarray) -> dict:
    g = gaussian_nll_backward(
        gaussian_nll_forward(i["mean"], i["x"], i["logvar"], "none")[1], dloss
    )
    return {"mean": g.dmean, "logvar": g.dlogvar}


WIDE = OpCase(
    "gaussian_nll_wide_logvar",
    "losses",
    _make,
    lambda mean, x, logvar: gaussian_nll_forward(mean, x, logvar, "none")[0],
    _backward,
    ("mean", "logvar"),
)


@given(
    seed=st.integers(0, 2**32 - 1),
    B=st.integers(1, 5),
    D=st.integers(1, 7),
    spread=st.sampled_from([1.0, 10.0, 40.0]),
)
def test_gradient_check_over_wide_log_variances(seed: int, B: int, D: int, spread: float) -> None:
    """float64 central differences (rtol 1e-6, the suite's tight setting) with log-variances
    over e^+-40 and exact x == mean features: the r = (x - m) e^(-lv/2) form is the formula."""
    bk = Backend("numpy", "float64", seed=seed)
    inputs = _make(bk, B, D, spread)
    check_op(WIDE, inputs, (bk.normal((B,)),))


def test_one_log_variance_for_every_feature_counts_once_per_feature() -> None:
    """A log-variance broadcast along the features ((B, 1), 0-d, a NumPy scalar) is each
    feature's: -0.5 D lv, not -0.5 lv once (its sum over a last axis of 1)."""
    bk = Backend("numpy", "float64", seed=21)
    z, mu = bk.normal((2, 3)), bk.normal((2, 3))
    want = log_normal(z, mu, np.full((2, 3), -1.0))
    for lv in (np.full((2, 1), -1.0), np.asarray(-1.0), np.float64(-1.0), np.full(3, -1.0)):
        np.testing.assert_allclose(log_normal(z, mu, lv), want, rtol=1e-14)


ONE = np.asarray(1.0)  # dL/dnll: the gradient of the mean NLL itself


def test_a_broadcast_log_variance_gets_its_own_shape_of_gradient() -> None:
    """dL/dlogvar of a (B, 1) or 0-d log-variance has that shape, the sum over the features it
    stood for (was (B, D), the per-feature terms): central differences in float64."""
    bk = Backend("numpy", "float64", seed=22)
    mean, x = bk.normal((3, 4)), bk.normal((3, 4))
    for lv in (np.full((3, 1), -0.7), np.asarray(0.3)):
        nll, cache = gaussian_nll_forward(mean, x, lv, "mean")
        dlogvar = gaussian_nll_backward(cache, 1.0).dlogvar
        assert dlogvar.shape == lv.shape
        want = numerical_vjp(lambda v: gaussian_nll_forward(mean, x, v, "mean")[0], lv, ONE)
        np.testing.assert_allclose(dlogvar, want, rtol=1e-7)


def test_a_float32_log_variance_beside_float64_data_is_capped_in_float64() -> None:
    """The cap was float32's (e^88) when the log-variance was float32 and the data float64: at
    logvar -400 the NLL came out finite and e^48 too small (1.9e147 for 1.3e168)."""
    mean, x = np.zeros((1, 2)), np.array([[1e-3, 2e-3]])
    lv = np.full((1, 2), -400.0, np.float32)
    nll, cache = gaussian_nll_forward(mean, x, lv, "none")
    r2 = x**2 * np.exp(400.0)  # float64: e^400 is finite
    want = 0.5 * (r2.sum() + lv.astype(np.float64).sum() + 2 * math.log(2 * math.pi))
    np.testing.assert_allclose(nll, [want], rtol=1e-12)
    np.testing.assert_allclose(gaussian_nll_backward(cache, 1.0).dmean, -x * np.exp(400.0),
                               rtol=1e-12)  # fmt: skip


def test_a_broadcast_mean_gets_its_own_shape_of_gradient() -> None:
    """A mean (B, D) against K draws of x (K, B, D): dL/dmean is (B, D), the sum over the
    draws (was (K, B, D)); central differences in float64, learned and fixed variance."""
    bk = Backend("numpy", "float64", seed=23)
    mean, x = bk.normal((3, 4)), bk.normal((2, 3, 4))
    for lv in (bk.normal((2, 3, 4)), -0.4):
        _, cache = gaussian_nll_forward(mean, x, lv, "mean")
        dmean = gaussian_nll_backward(cache, 1.0).dmean
        assert dmean.shape == mean.shape
        want = numerical_vjp(lambda m: gaussian_nll_forward(m, x, lv, "mean")[0], mean, ONE)
        np.testing.assert_allclose(dmean, want, rtol=1e-6, atol=1e-8)
