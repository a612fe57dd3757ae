"""The AE variants' whole-loss gradients over the settings test_models.py holds fixed there:
every likelihood (not only Bernoulli), the denoising AE's noise level, the sparse AE's rho and
beta (beta 0 included: the plain AE's gradient), with hidden depth 0 to 2, every activation,
batches of 1 to 5, dropout on and off, kernels on and off. float64 against central differences;
the corruption and dropout are drawn once (``draw_noise``) and held fixed for the check."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from model_cases import ModelCase, randomize_params
from op_cases import ACTIVATION_NAMES, batch_sizes, seeds
from reference import reference_loss

from scratchvae.autoencoders import DenoisingAE, SparseAE
from scratchvae.backend import Backend
from scratchvae.gradcheck import assert_close, numerical_param_grads
from scratchvae.models import AE

LIKELIHOODS = ("bernoulli", "mse", "gaussian", "gaussian-learned")
H, RTOL = 1e-5, 1e-6  # as test_models.py's whole-model check
with_fixture = settings(
    suppress_health_check=[
        *settings.default.suppress_health_check,
        HealthCheck.function_scoped_fixture,
    ]
)


@st.composite
def variant_cases(draw: st.DrawFn, kind: str) -> ModelCase:
    """A small denoising or sparse AE with every setting drawn, a batch, its fixed noise."""
    seed = draw(seeds)
    bk = Backend("numpy", "float64", seed=seed)
    likelihood = draw(st.sampled_from(LIKELIHOODS))
    common = dict(
        n_features=draw(st.integers(1, 5)),
        hidden=tuple(draw(st.lists(st.integers(1, 4), max_size=2))),
        latent=draw(st.integers(1, 3)),
        activation=draw(st.sampled_from(ACTIVATION_NAMES)),
        likelihood=likelihood,
        decoder_std=draw(st.sampled_from([0.3, 1.0, 2.0])),
        dropout=draw(st.sampled_from([0.0, 0.3])),
        backend=bk,
    )
    if kind == "dae":
        noise = draw(st.sampled_from(["gaussian", "mask"]))
        top = 2.0 if noise == "gaussian" else 0.9
        level = draw(st.sampled_from([0.0, 0.1, 0.5, top]))
        model: AE = DenoisingAE(noise=noise, noise_level=level, **common)
    else:
        rho = draw(st.sampled_from([0.01, 0.05, 0.3, 0.7]))
        beta = draw(st.sampled_from([0.0, 0.5, 3.0]))
        model = SparseAE(rho=rho, beta=beta, **common)
    randomize_params(model, seed + 1)
    B = draw(batch_sizes)
    x = bk.uniform((B, model.n_features))
    if likelihood != "bernoulli":
        x = 2 * bk.normal((B, model.n_features))
    return ModelCase(model, x, model.draw_noise(B))


@pytest.mark.parametrize("kind", ["dae", "sae"])
@with_fixture
@given(data=st.data())
def test_variant_gradient_float64(kind: str, data: st.DataObject, kernels: bool) -> None:
    case = data.draw(variant_cases(kind))
    model, x, noise = case.model, case.x, case.noise
    ref, margin = reference_loss(case)
    assume(margin > 1e-4 and abs(ref) < 1e3)  # clear of ReLU kinks; a bounded region
    terms, grads = model.loss_and_grads(x, noise)
    assert float(terms["loss"]) == pytest.approx(ref, rel=1e-10, abs=1e-12)
    analytic = grads.copy()
    numerical = numerical_param_grads(
        lambda: model.forward(x, noise, train=True)[0]["loss"], model.params, H
    )
    atol = 1e-9 * max(1.0, abs(float(terms["loss"])))
    for name in model.params:
        assert_close(analytic[name], numerical[name], RTOL, atol, name=name)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_sparse_ae_with_beta_zero_is_the_plain_ae(likelihood: str) -> None:
    """beta = 0: the penalty is reported, but the loss and every gradient are the AE's whose
    code is sigmoid(encoder(x)) (here checked against a SparseAE with beta 3 minus its
    penalty's part, which must then be non-zero)."""
    bk = Backend("numpy", "float64", seed=11)
    model = SparseAE(5, (4,), 3, rho=0.05, beta=0.0, likelihood=likelihood, backend=bk)
    randomize_params(model, 12)
    x = bk.uniform((6, 5))
    terms, grads = model.loss_and_grads(x)
    assert float(terms["loss"]) == float(terms["recon"]) and float(terms["sparsity"]) > 0
    g0 = grads.flat.copy()
    model.beta = 3.0
    g3 = model.loss_and_grads(x)[1].flat.copy()
    n_dec = sum(model.params[k].size for k in model.params if k.startswith("decoder"))
    np.testing.assert_array_equal(g3[-n_dec:], g0[-n_dec:])  # the penalty is on the code
    assert np.abs(g3[:-n_dec] - g0[:-n_dec]).max() > 1e-3  # ... and reaches the encoder
