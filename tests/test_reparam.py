"""The reparameterization trick: gradients, the sampler's statistics, and the same-eps rule.

A gradient check cannot see a sampler that uses exp(logvar) as the standard deviation (its own
forward and backward would agree); the statistical test below does. A gradient check CAN see an
eps in backward that differs from forward's: the mismatch tests assert that the check fails.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import case_ids, cases, check_op, op_inputs

from scratchvae.backend import Backend
from scratchvae.gradcheck import assert_close, numerical_vjp
from scratchvae.reparam import reparam_backward, reparam_forward


@pytest.mark.parametrize("case", cases("reparam"), ids=case_ids("reparam"))
@given(data=st.data())
def test_reparam_gradient_float64(case, data: st.DataObject) -> None:
    """dmu and dlogvar against central differences, rtol 1e-6."""
    check_op(case, *data.draw(op_inputs(case)))


def test_reparam_known_values() -> None:
    mu, logvar, eps = np.array([[1.0]]), np.array([[np.log(4.0)]]), np.array([[0.5]])
    z, cache = reparam_forward(mu, logvar, eps)
    np.testing.assert_allclose(z, [[1.0 + 2.0 * 0.5]])  # sigma = sqrt(4) = 2
    dmu, dlogvar = reparam_backward(cache, np.array([[3.0]]))
    np.testing.assert_allclose(dmu, [[3.0]])
    np.testing.assert_allclose(dlogvar, [[3.0 * 0.5 * 0.5 * 2.0]])  # dz * eps * sigma / 2


def test_sampler_mean_and_variance() -> None:
    """Over N draws of eps, z has mean mu and variance exp(logvar) (6-sigma bounds).

    logvar spans [-3, 2.5]: a sampler with std exp(logvar) would give variance exp(2 logvar),
    off by a factor e^-3 .. e^2.5, far outside the bound.
    """
    bk = Backend("numpy", "float64", seed=11)
    n = 100_000
    mu = np.array([-2.0, 0.0, 0.5, 3.0, 1.0])
    logvar = np.array([-3.0, -1.0, 0.7, 2.5, 1.5])
    eps = bk.normal((n, mu.size))
    z, _ = reparam_forward(np.broadcast_to(mu, eps.shape), np.broadcast_to(logvar, eps.shape), eps)
    var = np.exp(logvar)
    assert np.all(np.abs(z.mean(axis=0) - mu) < 6 * np.sqrt(var / n))
    # the sample variance of a Gaussian has standard deviation var * sqrt(2 / (n - 1))
    assert np.all(np.abs(z.var(axis=0, ddof=1) - var) < 6 * var * np.sqrt(2 / (n - 1)))


def _mismatch_setup(seed: int):
    """mu, logvar, eps (forward's draw), eps2 (another draw), a fixed 'decoder' V and dout."""
    bk = Backend("numpy", "float64", seed=seed)
    B, L, D = 4, 3, 5
    return (
        bk.normal((B, L)),
        bk.normal((B, L)),
        bk.normal((B, L)),
        bk.normal((B, L)),
        bk.normal((L, D)),
        bk.normal((B, D)),
    )


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


def test_reparam_keeps_float32() -> None:
    bk = Backend("numpy", "float32", seed=0)
    mu, logvar, eps = bk.normal((2, 3)), bk.normal((2, 3)), bk.normal((2, 3))
    z, cache = reparam_forward(mu, logvar, eps)
    dmu, dlogvar = reparam_backward(cache, np.ones_like(z))
    assert z.dtype == dmu.dtype == dlogvar.dtype == np.float32
