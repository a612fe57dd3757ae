"""Exact references for the statistical tests of the gradient estimators: a VAE with ONE latent
unit, so that every expectation over the k draws of z is a k-dimensional Gauss-Hermite sum.

For q(z|x) = N(mu, sigma^2) and eps ~ N(0, 1), E[g(eps)] = sum_i w_i g(t_i) with the n nodes t_i
and weights w_i of the probabilists' Gauss-Hermite rule (exact for polynomials of degree < 2n).
E[L_k] (k draws) is the same sum over an n^k grid. Everything here is written out again from
the formulas (the Bernoulli density, the Gaussian log-densities, log-mean-exp): no code of the
library's ops, backward passes or estimators is used, only the model's MLPs to map x to
[mu | logvar] and z to logits. Differentiated by central differences over the model's
parameters (:func:`scratchvae.gradcheck.numerical_param_grads`), these are the gradients the
estimators claim to estimate, with an error (under 1e-6: checked against n + 20 nodes) far
below the tests' standard errors (~1e-3).
"""

from __future__ import annotations

import math

import numpy as np  # numpy-boundary: the test's own reference arithmetic
from numpy.polynomial.hermite_e import hermegauss

from scratchvae.backend import Backend
from scratchvae.models import VAE

NODES = 40  # nodes per draw (tiny_vae: E[L_k] moves by < 1e-6 from 40 to 60 nodes)


def tiny_vae(seed: int = 0, **kw) -> tuple[VAE, np.ndarray]:
    """A 4-pixel Bernoulli VAE, one tanh layer of 3, ONE latent unit, float64, and its one
    example x (1, 4). The decoder's last layer is scaled up so that the likelihood is sharp and
    q (random weights) is far from the posterior: the IWAE and ELBO gradients differ. The
    encoder's logvar for x is set to -1 (sigma 0.61): over a q as wide as sigma 2, 40 nodes
    leave errors of 1e-3 (the tanh layers saturate), so :func:`expected_bound` checks."""
    bk = Backend("numpy", "float64", seed=seed)
    model = VAE(4, hidden=(3,), latent=1, activation="tanh", backend=bk, **kw)
    model.params["decoder.1.W"][...] *= 3
    x = np.array([[1.0, 0.0, 1.0, 1.0]])
    model.params["encoder.1.b"][1] -= encoder_output(model, x)[1] + 1.0  # logvar(x) = -1
    return model, x


def _rule(n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    t, w = hermegauss(NODES if n is None else n)  # for exp(-t^2 / 2): the N(0, 1) density's
    return t, w / math.sqrt(2 * math.pi)


def _grid(values: np.ndarray, k: int) -> list[np.ndarray]:
    """k arrays of shape (n,) * k: values along axis j for draw j."""
    return np.broadcast_arrays(*np.ix_(*([values] * k)))


def _log_p_x_given_z(model: VAE, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """log p(x | z) of the Bernoulli decoder, z (n,) -> (n,): sum_d x l - softplus(l)."""
    logits = model.decoder.forward(model.params, z[:, None])[0]  # (n, D)
    return (x * logits - np.logaddexp(0.0, logits)).sum(axis=1)


def encoder_output(model: VAE, x: np.ndarray) -> np.ndarray:
    """[mu, logvar] of q(z | x) for the one example: (2,)."""
    return model.encoder.forward(model.params, x)[0][0]


def log_weights(model: VAE, x: np.ndarray, t: np.ndarray, beta: float = 1.0) -> np.ndarray:
    """log w(t) = log p(x|z) + beta (log N(z; 0, 1) - log N(z; mu, sigma^2)), z = mu + sigma t."""
    mu, logvar = encoder_output(model, x)
    z = mu + math.exp(logvar / 2) * t
    log_ratio = -0.5 * z * z + 0.5 * t * t + 0.5 * logvar  # the log 2 pi terms cancel
    return _log_p_x_given_z(model, x, z) + beta * log_ratio


def expected_bound(
    model: VAE, x: np.ndarray, k: int, beta: float = 1.0, iwae: bool = True, check: bool = False
) -> float:
    """E over k draws of log (1/k) sum_j w_j (``iwae``) or of (1/k) sum_j log w_j (the ELBO,
    whose expectation does not depend on k): by an n^k-point Gauss-Hermite sum. ``check``:
    assert that n + 20 nodes give the same value to 1e-6."""
    value = _expected_bound(model, x, k, beta, iwae, NODES)
    if check:  # converged: 20 more nodes move it by under 1e-6 (the tests' se: ~1e-3)
        finer = _expected_bound(model, x, k, beta, iwae, NODES + 20)
        assert abs(finer - value) < 1e-6, f"quadrature not converged: {value} vs {finer}"
    return value


def _expected_bound(model: VAE, x: np.ndarray, k: int, beta: float, iwae: bool, n: int) -> float:
    t, w = _rule(n)
    lw = log_weights(model, x, t, beta)
    if not iwae:
        return float((w * lw).sum())
    draws, probs = _grid(lw, k), _grid(w, k)
    top = np.maximum.reduce(draws)
    lme = top + np.log(sum(np.exp(d - top) for d in draws) / k)
    return float((np.prod(probs, axis=0) * lme).sum())


def expected_weighted_score(model: VAE, x: np.ndarray, k: int, beta: float = 1.0) -> np.ndarray:
    """E[sum_j w~_j d log q(z_j | x) / d(mu, logvar) with z_j held fixed]: (2,).

    The score terms STL leaves out of the IWAE gradient: d log q / dmu = eps / sigma,
    d log q / dlogvar = (eps^2 - 1) / 2, each weighted by w~_j = w_j / sum_i w_i."""
    t, w = _rule()
    lw = log_weights(model, x, t, beta)
    sigma = math.exp(encoder_output(model, x)[1] / 2)
    draws, eps, probs = _grid(lw, k), _grid(t, k), _grid(w, k)
    top = np.maximum.reduce(draws)
    total = sum(np.exp(d - top) for d in draws)
    norm = [np.exp(d - top) / total for d in draws]  # w~_j
    s_mu = sum(wj * e / sigma for wj, e in zip(norm, eps, strict=True))
    s_lv = sum(wj * 0.5 * (e * e - 1) for wj, e in zip(norm, eps, strict=True))
    p = np.prod(probs, axis=0)
    return np.array([(p * s_mu).sum(), (p * s_lv).sum()])


def log_evidence(model: VAE, x: np.ndarray) -> float:
    """log p(x) = log E_{z ~ N(0, 1)}[p(x | z)], by a 200-node rule over the prior."""
    t, w = _rule(200)
    lp = _log_p_x_given_z(model, x, t)
    top = lp.max()
    return float(top + math.log((w * np.exp(lp - top)).sum()))


def flat_grads(model: VAE, grads: dict) -> np.ndarray:
    """A {name: array} of the model's parameters as one vector, in the store's order."""
    return np.concatenate([np.asarray(grads[name]).ravel() for name in model.params])
