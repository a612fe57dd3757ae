"""Whole-VAE gradient checks of the multi-sample objectives and their estimators, property-based
over small random models (float64, kernels on and off): the ELBO over k draws and the IWAE
bound L_k for every likelihood, beta != 1, a KL warm-up weight and dropout.

pathwise is the gradient of the loss itself. stl and dreg are gradients of surrogates, checked
by central differences of the surrogate written from its definition: the decoder's gradient is
the loss's; the encoder's is the loss's with q's own parameters held where they are (only the
path z = mu + sigma eps moves) and, for dreg, the bound replaced by sum_k c_k log w_k with
c = w~ (1 - beta (1 - w~)) held at this step's weights (docs/derivations.md, section 10)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from model_cases import randomize_params
from op_cases import seeds

from scratchvae import vae_weighted  # the k log-weights step (moved out of models.py)
from scratchvae.backend import Backend
from scratchvae.gradcheck import assert_close, numerical_gradient
from scratchvae.models import VAE

H, RTOL = 1e-5, 1e-6  # as tests/test_models.py's whole-model checks; atol 1e-9 * |loss|
SMOOTH = ("identity", "tanh", "sigmoid", "softplus")  # no kink for a step h to cross


@st.composite
def vae_cases(draw: st.DrawFn, estimator: str):
    objective = "iwae" if estimator == "dreg" else draw(st.sampled_from(["elbo", "iwae"]))
    likelihood = draw(st.sampled_from(["bernoulli", "gaussian", "gaussian-learned", "mse"]))
    seed = draw(seeds)
    bk = Backend("numpy", "float64", seed=seed)
    model = VAE(
        draw(st.integers(1, 4)),
        hidden=draw(st.lists(st.integers(1, 4), max_size=2)),
        latent=draw(st.integers(1, 3)),
        beta=draw(st.sampled_from([0.5, 1.0, 1.5])),
        objective=objective,
        k=draw(st.integers(1 if estimator != "pathwise" else 2, 4)),
        estimator=estimator,
        likelihood=likelihood,
        activation=draw(st.sampled_from(SMOOTH)),
        dropout=draw(st.sampled_from([0.0, 0.3])),
        decoder_std=0.7,
        backend=bk,
    )
    randomize_params(model, seed + 1)
    B = draw(st.integers(1, 4))
    x = bk.uniform((B, model.n_features))  # grey levels
    if likelihood != "bernoulli":
        x = 2 * bk.normal((B, model.n_features))
    kl_weight = draw(st.sampled_from([None, 0.25]))
    return model, x, model.draw_noise(B), kl_weight


def _held(h0, latent):
    """iw_latent_forward with q(z|x)'s parameters held at h0 = [mu0 | logvar0]: its draws
    z = mu + sigma eps move with h, log q(z | mu0, logvar0) only through z."""
    mu0, lv0 = h0[:, :latent].copy(), h0[:, latent:].copy()

    def forward(h, eps):
        z = h[:, :latent] + np.exp(0.5 * h[:, latent:]) * eps  # (k, B, L)
        log_p = -0.5 * (z**2 + math.log(2 * math.pi)).sum(-1)
        log_q = -0.5 * ((z - mu0) ** 2 * np.exp(-lv0) + lv0 + math.log(2 * math.pi)).sum(-1)
        return (z, log_p - log_q), None

    return forward


def _held_weights(c):
    """iw_bound_forward as sum_k c_k log w_k (mean over the batch), the c held."""

    def forward(log_w, combine="logmeanexp", reduce="mean"):
        return (c * log_w).sum(axis=0).mean(), None

    return forward


# half the profile's examples (each is a whole model's numerical gradient, twice for stl and
# dreg); deadline None: the first example compiles the kernels
with_fixture = settings(
    max_examples=max(1, settings.default.max_examples // 2),
    deadline=None,
    suppress_health_check=[
        *settings.default.suppress_health_check,
        HealthCheck.function_scoped_fixture,
    ],
)


@pytest.mark.parametrize("estimator", ["pathwise", "stl", "dreg"])
@with_fixture
@given(data=st.data())
def test_vae_objective_gradient(estimator, data, kernels, monkeypatch):
    model, x, noise, kl_weight = data.draw(vae_cases(estimator))
    terms, cache = model.forward(x, noise, kl_weight=kl_weight)
    analytic = model.loss_and_grads(x, noise, kl_weight)[1].copy()
    assert float(terms["loss"]) == float(model.loss_and_grads(x, noise, kl_weight)[0]["loss"])

    def loss():
        return model.forward(x, noise, kl_weight=kl_weight)[0]["loss"]

    numerical = {n: numerical_gradient(loss, model.params[n], H) for n in model.params}
    if estimator != "pathwise":  # the encoder's gradient: its surrogate's
        with monkeypatch.context() as patch:
            patch.setattr(vae_weighted, "iw_latent_forward", _held(cache.latent.h, model.latent))
            if estimator == "dreg":
                w, beta = cache.bound.weights, cache.beta
                held = _held_weights(w * (1 - beta * (1 - w)))
                patch.setattr(vae_weighted, "iw_bound_forward", held)
            for n in model.params:
                if n.startswith("encoder."):
                    numerical[n] = numerical_gradient(loss, model.params[n], H)
    atol = 1e-9 * max(1.0, abs(float(terms["loss"])))
    for n in model.params:
        assert_close(analytic[n], numerical[n], RTOL, atol, name=f"{model.config} {n}")
