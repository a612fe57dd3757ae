"""Losses and log-densities: property-based gradient checks, stability of BCE on logits, the
two reductions, the per-example densities, the Likelihood class, and the analytic Gaussian KL
against a Monte-Carlo estimate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from op_cases import case_ids, cases, check_op, op_inputs
from scipy.stats import norm

from scratchvae.backend import Backend
from scratchvae.ops.losses import (
    LIKELIHOODS,
    LOG_2PI,
    Likelihood,
    bernoulli_log_prob,
    bernoulli_nll_backward,
    bernoulli_nll_forward,
    gaussian_kl_forward,
    gaussian_nll_backward,
    gaussian_nll_forward,
    kl_standard_normal,
    log_normal,
    log_standard_normal,
    squared_error_backward,
    squared_error_forward,
)
from scratchvae.ops.sparsity import sparsity_kl_backward, sparsity_kl_forward
from scratchvae.params import Workspace


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", cases("losses"), ids=case_ids("losses"))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_loss_gradient(case, dtype: str, kernels: bool, data: st.DataObject) -> None:
    """Every loss (reduce "mean": a scalar upstream gradient; "none": one per example), the
    per-example log-densities and each Likelihood: backward against central differences
    (float64 rtol 1e-6; float32 rtol 1e-2), with the Numba kernels on and off."""
    check_op(case, *data.draw(op_inputs(case, dtype)))


def _nll(logits, x, reduce="mean"):
    return bernoulli_nll_forward(logits, x, reduce)[0]


# ------------------------------------------------------------------ BCE on logits, stability
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bernoulli_nll_exact_at_logits_1000(dtype: str, kernels: bool) -> None:
    """softplus(l) - x l at l = +-1000: 1000 (1 - x) and 1000 x exactly; gradient s(l) - x.
    The readable op and its kernel (the pair the models train with) both."""
    x = np.array([[0.0, 1.0, 0.25, 0.0, 1.0, 0.25]], dtype=dtype)
    logits = np.array([[1000.0, 1000.0, 1000.0, -1000.0, -1000.0, -1000.0]], dtype=dtype)
    expected = [1000.0, 0.0, 750.0, 0.0, 1000.0, 250.0]  # per pixel
    per_pixel = _nll(logits.T.copy(), x.T.copy(), "none")  # 6 examples of one pixel each
    assert per_pixel.dtype == np.dtype(dtype) and np.isfinite(per_pixel).all()
    np.testing.assert_allclose(per_pixel, expected, rtol=1e-6, atol=1e-3)
    value, cache = bernoulli_nll_forward(logits, x)
    grad = bernoulli_nll_backward(cache, 1.0)
    assert grad.dtype == np.dtype(dtype) and np.isfinite(grad).all()
    np.testing.assert_allclose(grad[0], [1.0, 0.0, 0.75, 0.0, -1.0, -0.25], atol=1e-7)
    assert float(value) == pytest.approx(sum(expected), rel=1e-6)


def test_bernoulli_nll_equals_cross_entropy_of_probabilities(kernels: bool) -> None:
    bk = Backend("numpy", "float64", seed=2)
    logits, x = 3 * bk.normal((4, 7)), bk.uniform((4, 7))
    p = 1 / (1 + np.exp(-logits))
    per_example = -(x * np.log(p) + (1 - x) * np.log(1 - p)).sum(axis=1)
    assert float(_nll(logits, x)) == pytest.approx(per_example.mean(), rel=1e-12)
    np.testing.assert_allclose(_nll(logits, x, "none"), per_example, rtol=1e-12)
    np.testing.assert_allclose(bernoulli_log_prob(logits, x), -per_example, rtol=1e-12)


# ------------------------------------------------------------------ reductions
def _loss_fns():
    """name -> (forward(a, b, lv, reduce), backward(cache, dloss) -> gradient w.r.t. a)."""
    return {
        "bernoulli": (
            lambda a, b, lv, r: bernoulli_nll_forward(a, b, r),
            bernoulli_nll_backward,
        ),
        "gaussian": (
            lambda a, b, lv, r: gaussian_nll_forward(a, b, lv, r),
            lambda c, d: gaussian_nll_backward(c, d).dmean,
        ),
        "squared": (lambda a, b, lv, r: squared_error_forward(a, b, r), squared_error_backward),
    }


@pytest.mark.parametrize("name", ["bernoulli", "gaussian", "squared"])
def test_reduction_is_sum_over_features_mean_over_batch(name: str, kernels: bool) -> None:
    """ "mean" is the mean of the "none" values; repeating the batch leaves it unchanged;
    repeating the features doubles it (after the log 2 pi constant); "none" keeps (B,)."""
    bk = Backend("numpy", "float64", seed=4)
    a, b, lv = bk.normal((3, 4)), bk.uniform((3, 4)), bk.normal((3, 4))
    forward, _ = _loss_fns()[name]
    const = 0.5 * 4 * LOG_2PI if name == "gaussian" else 0.0

    def f(a, b, lv, reduce="mean"):
        return forward(a, b, lv, reduce)[0]

    v = float(f(a, b, lv))
    per_example = f(a, b, lv, "none")
    assert per_example.shape == (3,)
    assert per_example.mean() == pytest.approx(v, rel=1e-14)
    rows = [np.concatenate([t, t], axis=0) for t in (a, b, lv)]
    cols = [np.concatenate([t, t], axis=1) for t in (a, b, lv)]
    assert float(f(*rows)) == pytest.approx(v, rel=1e-12)
    assert float(f(*cols)) - 2 * const == pytest.approx(2 * (v - const), rel=1e-12)


@pytest.mark.parametrize("name", ["bernoulli", "gaussian", "squared"])
def test_per_example_gradient_with_dloss_1_over_B_is_the_mean_gradient(name, kernels) -> None:
    """backward("none" cache, dloss = 1/B each) == backward("mean" cache, 1); and a dloss
    that weights one example only gives that example's row, zero elsewhere."""
    bk = Backend("numpy", "float64", seed=9)
    a, b, lv = bk.normal((5, 3)), bk.uniform((5, 3)), bk.normal((5, 3))
    forward, backward = _loss_fns()[name]
    mean = backward(forward(a, b, lv, "mean")[1], 1.0)
    cache = forward(a, b, lv, "none")[1]
    np.testing.assert_allclose(backward(cache, np.full(5, 0.2)), mean, rtol=1e-14, atol=1e-16)
    one = backward(cache, np.array([0.0, 0.0, 3.0, 0.0, 0.0]))
    np.testing.assert_allclose(one[2], 3 * 5 * mean[2], rtol=1e-14)
    assert not one[[0, 1, 3, 4]].any()


def test_unknown_reduction_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown reduction 'sum'; choose one of mean, none"):
        squared_error_forward(np.zeros((2, 2)), np.zeros((2, 2)), "sum")


def test_gaussian_nll_known_value_and_fixed_equals_learned() -> None:
    mean, x = np.array([[0.0, 1.0]]), np.array([[1.0, 1.0]])
    logvar = math.log(4.0)
    expected = 0.5 * (1 / 4 + 0 + 2 * math.log(4.0) + 2 * LOG_2PI)
    fixed, fixed_cache = gaussian_nll_forward(mean, x, logvar)
    learned, learned_cache = gaussian_nll_forward(mean, x, np.full((1, 2), logvar))
    assert float(fixed) == pytest.approx(expected, rel=1e-12)
    assert float(learned) == pytest.approx(expected, rel=1e-12)
    d_fixed = gaussian_nll_backward(fixed_cache, 1.0)
    d_learned = gaussian_nll_backward(learned_cache, 1.0)
    assert d_fixed.dlogvar is None
    np.testing.assert_allclose(d_fixed.dmean, d_learned.dmean, rtol=1e-12)
    np.testing.assert_allclose(d_fixed.dmean, [[-0.25, 0.0]], rtol=1e-12)  # (mean - x) / var
    np.testing.assert_allclose(d_learned.dlogvar, [[0.5 * (1 - 0.25), 0.5]], rtol=1e-12)


def test_fixed_variance_gaussian_keeps_float32() -> None:
    mean, x = np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32)
    value, cache = gaussian_nll_forward(mean, x, 2 * math.log(0.1))
    assert np.asarray(value).dtype == np.float32
    assert gaussian_nll_backward(cache, 1.0).dmean.dtype == np.float32


def test_kl_is_zero_at_the_prior_and_positive_elsewhere() -> None:
    assert float(gaussian_kl_forward(np.zeros((2, 3)), np.zeros((2, 3)))[0]) == 0.0
    bk = Backend("numpy", "float64", seed=8)
    assert float(gaussian_kl_forward(bk.normal((5, 3)), bk.normal((5, 3)))[0]) > 0


def test_sparsity_kl_is_zero_at_target_with_zero_gradient() -> None:
    at_target = np.log(0.2 / 0.8)  # sigmoid(a) = 0.2
    value, cache = sparsity_kl_forward(np.full((4, 3), at_target), 0.2)
    assert float(value) == pytest.approx(0.0, abs=1e-15)
    np.testing.assert_allclose(sparsity_kl_backward(cache, 1.0), 0.0, atol=1e-15)
    assert float(sparsity_kl_forward(np.full((4, 3), 0.0), 0.2)[0]) > 0  # sigmoid(0) = 0.5


# ------------------------------------------------------------------ per-example log-densities
def test_log_densities_equal_scipy() -> None:
    """log N(z; mu, e^lv) (array or float log-variance) and log N(z; 0, I), each summed over
    the last axis and keeping the leading ones, against scipy.stats.norm."""
    bk = Backend("numpy", "float64", seed=13)
    z, mu, lv = bk.normal((3, 4, 5)), bk.normal((3, 4, 5)), bk.normal((3, 4, 5))
    want = norm.logpdf(z, mu, np.exp(0.5 * lv)).sum(axis=-1)
    np.testing.assert_allclose(log_normal(z, mu, lv), want, rtol=1e-13)
    np.testing.assert_allclose(
        log_normal(z, mu, 0.3), norm.logpdf(z, mu, math.exp(0.15)).sum(-1), rtol=1e-13
    )
    np.testing.assert_allclose(log_standard_normal(z), norm.logpdf(z).sum(-1), rtol=1e-13)
    assert log_normal(z.astype(np.float32), 0.0, 0.0).dtype == np.float32


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bernoulli_log_prob_of_samples_against_shared_data(dtype: str, kernels: bool) -> None:
    """Logits (S, B, D) against data (B, D) give (S, B): each sample's row is the log-density
    of that sample's logits, as for (B, D) logits alone (kernels on and off)."""
    bk = Backend("numpy", dtype, seed=14)
    logits, x = 5 * bk.normal((3, 4, 6)), bk.uniform((4, 6))
    got = bernoulli_log_prob(logits, x)
    assert got.shape == (3, 4) and got.dtype == np.dtype(dtype)
    rtol = 1e-5 if dtype == "float32" else 1e-13
    for s in range(3):
        want = -_nll(np.ascontiguousarray(logits[s]), x, "none")
        np.testing.assert_allclose(got[s], want, rtol=rtol)


def test_kl_per_example_is_what_the_loss_averages() -> None:
    bk = Backend("numpy", "float64", seed=15)
    mu, lv = bk.normal((6, 4)), bk.normal((6, 4))
    per_example = kl_standard_normal(mu, lv)
    assert per_example.shape == (6,)
    np.testing.assert_allclose(
        per_example, 0.5 * (mu**2 + np.exp(lv) - lv - 1).sum(axis=1), rtol=1e-14
    )
    assert float(gaussian_kl_forward(mu, lv)[0]) == pytest.approx(per_example.mean(), rel=1e-14)


def test_gaussian_kl_matches_monte_carlo() -> None:
    """KL(q || p) = E_q[log q(z) - log p(z)]: the analytic value of each example lies within
    6 standard errors of the mean over 200k draws z ~ q (drawn with the reparameterization),
    and so does the loss (their mean). The densities are written out here, independently."""
    bk = Backend("numpy", "float64", seed=21)
    mu = np.array([[0.5, -1.0, 2.0], [0.0, 0.3, -0.7]])  # (B=2, L=3)
    logvar = np.array([[-1.0, 0.5, 0.0], [1.2, -2.0, 0.3]])
    n = 200_000
    z = mu + np.exp(0.5 * logvar) * bk.normal((n, *mu.shape))
    log_q = -0.5 * ((z - mu) ** 2 / np.exp(logvar) + logvar + math.log(2 * math.pi))
    log_p = -0.5 * (z**2 + math.log(2 * math.pi))
    per_draw = (log_q - log_p).sum(axis=2)  # (n, B)
    estimate, stderr = per_draw.mean(axis=0), per_draw.std(axis=0, ddof=1) / math.sqrt(n)
    assert np.all(np.abs(kl_standard_normal(mu, logvar) - estimate) < 6 * stderr)
    mean_draw = per_draw.mean(axis=1)
    mean_stderr = mean_draw.std(ddof=1) / math.sqrt(n)
    assert abs(float(gaussian_kl_forward(mu, logvar)[0]) - mean_draw.mean()) < 6 * mean_stderr
    assert stderr.max() < 0.01  # the bound is tight enough to mean something


# ------------------------------------------------------------------ the Likelihood class
def _lik_data(kind: str, B: int = 4, D: int = 3, seed: int = 16):
    bk = Backend("numpy", "float64", seed=seed)
    lik = Likelihood(kind, std=0.7)
    out = 2 * bk.normal((B, lik.n_out(D)))
    x = bk.uniform((B, D)) if kind == "bernoulli" else bk.normal((B, D))
    return lik, out, x


@pytest.mark.parametrize("kind", LIKELIHOODS)
def test_likelihood_forward_is_its_loss_op(kind: str) -> None:
    """Each kind's forward is the loss op it names, on the right part of the output, and its
    backward has the output's shape (gaussian-learned: [dmean | dlogvar])."""
    lik, out, x = _lik_data(kind)
    nll, cache = lik.forward(out, x)
    if kind == "bernoulli":
        want = _nll(out, x)
    elif kind == "gaussian":
        want = gaussian_nll_forward(out, x, 2 * math.log(0.7))[0]
    elif kind == "gaussian-learned":
        want = gaussian_nll_forward(out[:, :3], x, out[:, 3:])[0]
    else:
        want = squared_error_forward(out, x)[0]
    assert float(nll) == pytest.approx(float(want), rel=1e-14)
    assert cache.out_shape == out.shape
    assert lik.backward(cache).shape == out.shape


@pytest.mark.parametrize("kind", ["bernoulli", "gaussian", "gaussian-learned"])
def test_likelihood_log_prob_is_minus_the_per_example_nll(kind: str) -> None:
    lik, out, x = _lik_data(kind)
    per_example = lik.forward(out, x, "none")[0]
    np.testing.assert_allclose(lik.log_prob(out, x), -per_example, rtol=1e-14)
    samples = np.stack([out, 0.5 * out])  # (S=2, B, D or 2D) against data (B, D) -> (2, B)
    np.testing.assert_allclose(lik.log_prob(samples, x)[1], lik.log_prob(0.5 * out, x))


def test_likelihood_mse_has_no_log_prob_and_bad_settings_are_errors() -> None:
    lik, out, x = _lik_data("mse")
    with pytest.raises(ValueError, match="'mse' is a squared error, not a density"):
        lik.log_prob(out, x)
    with pytest.raises(ValueError, match="unknown likelihood 'poisson'"):
        Likelihood("poisson")
    with pytest.raises(ValueError, match="decoder std must be > 0"):
        Likelihood("gaussian", std=0.0)


def test_likelihood_mean_split_and_width() -> None:
    out = np.array([[0.0, 2.0, -1.0, 3.0]])
    np.testing.assert_allclose(Likelihood("bernoulli").mean(out), 1 / (1 + np.exp(-out)))
    assert Likelihood("gaussian").mean(out) is out
    mean, logvar = Likelihood.split(out)
    np.testing.assert_array_equal(mean, [[0.0, 2.0]])
    np.testing.assert_array_equal(logvar, [[-1.0, 3.0]])
    np.testing.assert_array_equal(Likelihood("gaussian-learned").mean(out), mean)
    assert Likelihood("gaussian-learned").n_out(5) == 10 and Likelihood("mse").n_out(5) == 5


def test_likelihood_backward_writes_into_the_workspace() -> None:
    """gaussian-learned assembles [dmean | dlogvar] in the workspace's "dout" (reused)."""
    lik, out, x = _lik_data("gaussian-learned")
    ws = Workspace()
    dout = lik.backward(lik.forward(out, x)[1], 2.0, ws)
    want = lik.backward(lik.forward(out, x)[1], 1.0)
    np.testing.assert_allclose(dout, 2.0 * want, rtol=1e-15)
    assert dout is lik.backward(lik.forward(out, x)[1], 2.0, ws)


@pytest.mark.parametrize("logit", [20.0, -110.0])
def test_a_unit_saturated_on_every_row_keeps_a_finite_penalty_and_its_restoring_gradient(logit):
    """In float32 sigmoid(20) rounds to 1 (sigmoid(-110) to 0): with the penalty formed from
    h, 1 - r_j was 0 and the loss inf (NaN gradients) for a unit saturated on the whole batch
    (a batch of one, say). From the logits it is finite, and the unit's bias gets the true
    restoring gradient beta (r - rho), where h (1 - h) = 0 cancelled it."""
    from scratchvae.autoencoders import SparseAE

    model = SparseAE(4, (), 3, rho=0.05, beta=3.0, backend=Backend("numpy", "float32"))
    model.params["encoder.0.W"][...] = 0
    model.params["encoder.0.b"][...] = [logit, 0.0, 0.0]
    with np.errstate(divide="raise", over="raise", invalid="raise"):  # underflow is the point
        terms, grads = model.loss_and_grads(model.backend.uniform((8, 4)))
    assert np.isfinite(float(terms["loss"])) and np.isfinite(grads.flat).all()
    r = 1.0 if logit > 0 else 0.0  # sigmoid(logit) in float32
    assert float(grads["encoder.0.b"][0]) == pytest.approx(3.0 * (r - 0.05), rel=1e-5)
    # KL(0.05 || r) of the saturated unit: 1 - r = e^-20 at logit 20, r = e^-110 at -110
    log_r, log_1mr = (0.0, -20.0) if logit > 0 else (-110.0, 0.0)
    saturated = 0.05 * (np.log(0.05) - log_r) + 0.95 * (np.log(0.95) - log_1mr)
    at_half = 0.05 * np.log(0.05 / 0.5) + 0.95 * np.log(0.95 / 0.5)  # the two units at a = 0
    assert float(terms["sparsity"]) == pytest.approx(saturated + 2 * at_half, rel=1e-5)
