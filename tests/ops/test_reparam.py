"""The reparameterization trick and the latent layer: gradients, the sampler's statistics, and
the same-eps rule.

A gradient check cannot see a sampler that uses exp(logvar) as the standard deviation (its own
forward and backward would agree); the statistical tests below do, for the plain sample and for
the latent layer (whose Numba kernel has its own copy of the formula). A gradient check CAN see
an eps in backward that differs from forward's: the mismatch tests assert that the check fails.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from op_cases import case_ids, cases, check_op, op_inputs

from scratchvae.backend import Backend
from scratchvae.gradcheck import assert_close, numerical_vjp
from scratchvae.ops.losses import gaussian_kl_backward, gaussian_kl_forward
from scratchvae.ops.reparam import (
    LatentCache,
    LatentGrads,
    ReparamCache,
    ReparamGrads,
    latent_backward,
    latent_forward,
    reparam_backward,
    reparam_forward,
    split_latent,
)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", cases("reparam"), ids=case_ids("reparam"))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_reparam_gradient(case, dtype: str, kernels: bool, data: st.DataObject) -> None:
    """reparam: dmu and dlogvar; latent: dh for the upstream pair (dz, dkl). Against central
    differences (float64 rtol 1e-6; float32 rtol 1e-2), with the Numba kernels on and off."""
    check_op(case, *data.draw(op_inputs(case, dtype)))


def test_reparam_known_values() -> None:
    mu, logvar, eps = np.array([[1.0]]), np.array([[np.log(4.0)]]), np.array([[0.5]])
    z, cache = reparam_forward(mu, logvar, eps)
    np.testing.assert_allclose(z, [[1.0 + 2.0 * 0.5]])  # sigma = sqrt(4) = 2
    assert isinstance(cache, ReparamCache) and cache.eps is eps
    np.testing.assert_allclose(cache.sigma, [[2.0]])
    grads = reparam_backward(cache, np.array([[3.0]]))
    assert isinstance(grads, ReparamGrads)
    np.testing.assert_allclose(grads.dmu, [[3.0]])
    np.testing.assert_allclose(grads.dlogvar, [[3.0 * 0.5 * 0.5 * 2.0]])  # dz * eps * sigma / 2


def test_latent_known_values(kernels: bool) -> None:
    """h = [mu | logvar] = [[1, 0 | log 4, 0]], eps = [[0.5, -1]], dz = [[3, 2]], dkl = 0.5:
    z = mu + sigma eps, KL = 0.5 sum (mu^2 + e^lv - lv - 1) (B = 1), and dh by hand."""
    lv = np.log(4.0)
    h, eps = np.array([[1.0, 0.0, lv, 0.0]]), np.array([[0.5, -1.0]])
    (z, kl), cache = latent_forward(h, eps)
    np.testing.assert_allclose(z, [[2.0, -1.0]], rtol=1e-15)
    np.testing.assert_allclose(kl, 0.5 * (1.0 + 4.0 - lv - 1.0), rtol=1e-15)
    assert isinstance(cache, LatentCache) and cache.h is h and cache.eps is eps
    np.testing.assert_allclose(cache.sigma, [[2.0, 1.0]], rtol=1e-15)
    grads = latent_backward(cache, np.array([[3.0, 2.0]]), 0.5)
    assert isinstance(grads, LatentGrads)
    # dmu = dz + dkl mu;  dlogvar = dz eps sigma / 2 + dkl (e^lv - 1) / 2
    want = [[3.0 + 0.5, 2.0, 3.0 * 0.5 * 2.0 / 2 + 0.5 * 3.0 / 2, 2.0 * -1.0 / 2]]
    np.testing.assert_allclose(grads.dh, want, rtol=1e-15)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_latent_is_reparam_plus_weighted_kl(dtype: str, kernels: bool) -> None:
    """The latent layer = the sample (reparam) and the KL (gaussian_kl) of the same h; its
    backward = the sum of theirs, the KL's weighted by dkl (kernels on and off)."""
    bk = Backend("numpy", dtype, seed=6)
    B, L = 5, 3
    h, eps, dz = 2 * bk.normal((B, 2 * L)), bk.normal((B, L)), bk.normal((B, L))
    mu, logvar = split_latent(h)
    want_z, sample = reparam_forward(mu, logvar, eps)
    want_kl, kl_cache = gaussian_kl_forward(mu, logvar)
    (z, kl), cache = latent_forward(h, eps)
    rtol = 1e-5 if dtype == "float32" else 1e-13
    assert z.dtype == np.dtype(dtype) and np.asarray(kl).dtype == np.dtype(dtype)
    np.testing.assert_allclose(z, want_z, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(kl, want_kl, rtol=rtol)
    d_sample, d_kl = reparam_backward(sample, dz), gaussian_kl_backward(kl_cache, 0.3)
    want = np.concatenate([d_sample.dmu + d_kl.dmu, d_sample.dlogvar + d_kl.dlogvar], axis=1)
    np.testing.assert_allclose(latent_backward(cache, dz, 0.3).dh, want, rtol=rtol, atol=rtol)


def test_split_latent_gives_views() -> None:
    h = np.arange(12.0).reshape(2, 6)
    mu, logvar = split_latent(h)
    np.testing.assert_array_equal(mu, [[0, 1, 2], [6, 7, 8]])
    np.testing.assert_array_equal(logvar, [[3, 4, 5], [9, 10, 11]])
    assert np.shares_memory(mu, h) and np.shares_memory(logvar, h)


# ------------------------------------------------------------------ the sampler's statistics
MU = np.array([-2.0, 0.0, 0.5, 3.0, 1.0])
LOGVAR = np.array([-3.0, -1.0, 0.7, 2.5, 1.5])


def _assert_mean_and_variance(z: np.ndarray) -> None:
    """z (n, 5) has mean MU and variance exp(LOGVAR) (6-sigma bounds). LOGVAR spans
    [-3, 2.5]: a sampler with std exp(logvar) would give variance exp(2 logvar), off by a
    factor e^-3 .. e^2.5, far outside the bound."""
    n, var = z.shape[0], np.exp(LOGVAR)
    assert np.all(np.abs(z.mean(axis=0) - MU) < 6 * np.sqrt(var / n))
    # the sample variance of a Gaussian has standard deviation var * sqrt(2 / (n - 1))
    assert np.all(np.abs(z.var(axis=0, ddof=1) - var) < 6 * var * np.sqrt(2 / (n - 1)))


def test_sampler_mean_and_variance() -> None:
    eps = Backend("numpy", "float64", seed=11).normal((100_000, MU.size))
    z, _ = reparam_forward(np.broadcast_to(MU, eps.shape), np.broadcast_to(LOGVAR, eps.shape), eps)
    _assert_mean_and_variance(z)


def test_latent_layer_sampler_mean_and_variance(kernels: bool) -> None:
    """The same statistics through latent_forward (its Numba kernel, or the readable body)."""
    eps = Backend("numpy", "float64", seed=12).normal((100_000, MU.size))
    h = np.ascontiguousarray(np.broadcast_to(np.concatenate([MU, LOGVAR]), (eps.shape[0], 10)))
    (z, _), _ = latent_forward(h, eps)
    _assert_mean_and_variance(z)


# ------------------------------------------------------------------ the same eps, both ways
def _mismatch_setup(seed: int):
    """mu, logvar, eps (forward's draw), eps2 (another draw), a fixed 'decoder' V and dout."""
    bk = Backend("numpy", "float64", seed=seed)
    B, L, D = 4, 3, 5
    return tuple(bk.normal(shape) for shape in [(B, L)] * 4 + [(L, D), (B, D)])


def _grads_through_decoder(mu, logvar, eps_backward, V, dout):
    """Backward of y = tanh(reparam(mu, logvar, eps) @ V), its cache rebuilt with eps_backward."""
    z, cache = reparam_forward(mu, logvar, eps_backward)
    y = np.tanh(z @ V)
    dz = (dout * (1 - y * y)) @ V.T  # dL/dz for L = sum(y * dout)
    return reparam_backward(cache, dz)


@pytest.mark.parametrize("use_same_eps", [True, False])
def test_mismatched_eps_fails_the_gradient_check(use_same_eps: bool) -> None:
    """The SAME eps must reach forward and backward: with forward's eps the check passes;
    with a second draw of eps in backward's cache it FAILS (for dmu and dlogvar both)."""
    mu, logvar, eps, eps2, V, dout = _mismatch_setup(seed=5)

    def forward(mu_, logvar_):
        return np.tanh(reparam_forward(mu_, logvar_, eps)[0] @ V)

    num_mu = numerical_vjp(lambda m: forward(m, logvar), mu, dout)
    num_lv = numerical_vjp(lambda lv: forward(mu, lv), logvar, dout)
    dmu, dlogvar = _grads_through_decoder(mu, logvar, eps if use_same_eps else eps2, V, dout)
    if use_same_eps:
        assert_close(dmu, num_mu, name="dmu")
        assert_close(dlogvar, num_lv, name="dlogvar")
    else:
        with pytest.raises(AssertionError, match="dmu mismatch"):
            assert_close(dmu, num_mu, name="dmu")
        with pytest.raises(AssertionError, match="dlogvar mismatch"):
            assert_close(dlogvar, num_lv, name="dlogvar")


def test_latent_backward_reads_the_eps_of_its_cache(kernels: bool) -> None:
    """The latent layer's backward uses the cache's eps: another eps there changes dlogvar
    (and only dlogvar: dmu = dz + dkl mu does not involve the noise)."""
    bk = Backend("numpy", "float64", seed=7)
    h, eps, eps2, dz = bk.normal((4, 6)), bk.normal((4, 3)), bk.normal((4, 3)), bk.normal((4, 3))
    _, cache = latent_forward(h, eps)
    right = latent_backward(cache, dz, 1.0).dh.copy()
    wrong = latent_backward(cache._replace(eps=eps2), dz, 1.0).dh
    np.testing.assert_array_equal(wrong[:, :3], right[:, :3])
    assert np.all(wrong[:, 3:] != right[:, 3:])


def test_reparam_keeps_float32() -> None:
    bk = Backend("numpy", "float32", seed=0)
    mu, logvar, eps = bk.normal((2, 3)), bk.normal((2, 3)), bk.normal((2, 3))
    z, cache = reparam_forward(mu, logvar, eps)
    dmu, dlogvar = reparam_backward(cache, np.ones_like(z))
    assert z.dtype == dmu.dtype == dlogvar.dtype == np.float32
