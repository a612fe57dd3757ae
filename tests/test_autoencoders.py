"""The AE variants of scratchvae.autoencoders: the denoising AE (corruption in training only,
the clean target) and the sparse AE (a sigmoid code, the sparsity penalty). Their whole-loss
gradients are checked with every other model's in test_models.py."""

from __future__ import annotations

import numpy as np
import pytest
from model_cases import ModelCase, randomize_params
from reference import reference_loss

from scratchvae.autoencoders import DenoisingAE, SparseAE
from scratchvae.backend import Backend
from scratchvae.gradcheck import assert_close, numerical_param_grads
from scratchvae.models import AE, build_model


# ------------------------------------------------------------------ denoising AE
@pytest.mark.parametrize("noise_kind", ["gaussian", "mask"])
def test_dae_corrupts_only_in_training(noise_kind: str) -> None:
    """train=False scores the clean input (= a plain AE with the same parameters); in training
    the corruption changes the loss; the target is the clean x either way."""
    bk = Backend("numpy", "float64", seed=4)
    dae = DenoisingAE(6, (5,), 3, noise=noise_kind, noise_level=0.5, backend=bk)
    ae = AE(6, (5,), 3, backend=Backend("numpy", "float64", seed=9))
    ae.params.flat[...] = dae.params.flat
    x = bk.uniform((8, 6))
    noise = dae.draw_noise(8)
    clean = float(dae.loss(x, noise, train=False)["loss"])
    assert clean == float(ae.loss(x)["loss"])
    assert clean == float(dae.loss(x, None, train=False)["loss"])
    noisy = float(dae.loss(x, noise, train=True)["loss"])
    assert noisy != clean
    case = ModelCase(dae, x, noise)
    assert noisy == pytest.approx(reference_loss(case, train=True)[0], rel=1e-12)


def test_dae_noise_is_drawn_for_training_only() -> None:
    gauss = DenoisingAE(6, (5,), 3, noise="gaussian", backend=Backend("numpy", "float64"))
    assert set(gauss.draw_noise(4)) == {"input_noise"}
    assert gauss.draw_noise(4)["input_noise"].shape == (4, 6)
    assert gauss.draw_noise(4, train=False) == {}
    mask = DenoisingAE(6, (5,), 3, noise="mask", noise_level=0.25, dropout=0.1)
    noise = mask.draw_noise(20_000)
    assert set(noise) == {"input_mask", "encoder.0.dropout", "decoder.0.dropout"}
    m = noise["input_mask"]
    assert set(np.unique(m)) == {0.0, 1.0}  # no rescaling of the kept pixels
    # P(kept) = 1 - p; 6-sigma bound: sd of the mean sqrt(0.75 * 0.25 / m.size) ~ 0.00125
    assert abs(float(m.mean()) - 0.75) < 6 * np.sqrt(0.75 * 0.25 / m.size)


def test_dae_corrupt_applies_the_noise_formula() -> None:
    """x~ = x + sigma n (gaussian) or x * m (mask); corrupt() draws fresh noise each call."""
    bk = Backend("numpy", "float64", seed=2)
    x = bk.uniform((5, 4))
    gauss = DenoisingAE(4, (3,), 2, noise="gaussian", noise_level=0.3, backend=bk)
    noise = gauss.draw_noise(5)
    np.testing.assert_allclose(gauss._corrupt(x, noise), x + 0.3 * noise["input_noise"])
    mask = DenoisingAE(4, (3,), 2, noise="mask", noise_level=0.5, backend=bk)
    noise = mask.draw_noise(5)
    np.testing.assert_array_equal(mask._corrupt(x, noise), x * noise["input_mask"])
    a, b = gauss.corrupt(x), gauss.corrupt(x)
    assert a.shape == x.shape and not np.array_equal(a, b)


def test_dae_gradient_with_mask_corruption_and_relu(kernels: bool) -> None:
    """The encoder sees x~, the loss compares with x: a fixed case, kernels on and off."""
    bk = Backend("numpy", "float64", seed=7)
    model = DenoisingAE(5, (4,), 3, noise="mask", noise_level=0.4, activation="relu", backend=bk)
    randomize_params(model, 8)
    model.params["encoder.0.b"] = 0.5 + bk.uniform((4,))
    model.params["decoder.0.b"] = 0.5 + bk.uniform((4,))
    x, noise = bk.uniform((6, 5)), model.draw_noise(6)
    _, margin = reference_loss(ModelCase(model, x, noise))
    assert margin > 1e-3
    analytic = model.loss_and_grads(x, noise)[1].copy()
    numerical = numerical_param_grads(
        lambda: model.loss(x, noise, train=True)["loss"], model.params, 1e-5
    )
    for name in model.params:
        assert_close(analytic[name], numerical[name], 1e-6, 1e-9, name=name)


def test_dae_config_round_trip() -> None:
    dae = DenoisingAE(6, (5,), 3, noise="mask", noise_level=0.2)
    assert dae.config["noise"] == "mask" and dae.config["noise_level"] == 0.2
    clone = build_model(dae.config)
    assert isinstance(clone, DenoisingAE) and clone.config == dae.config


def test_dae_bad_settings_raise() -> None:
    with pytest.raises(ValueError, match="unknown noise 'salt'"):
        DenoisingAE(4, noise="salt")
    with pytest.raises(ValueError, match=r"masking fraction must be in \[0, 1\)"):
        DenoisingAE(4, noise="mask", noise_level=1.0)
    with pytest.raises(ValueError, match="noise level must be >= 0"):
        DenoisingAE(4, noise="gaussian", noise_level=-0.1)


# ------------------------------------------------------------------ sparse AE
def test_sparse_ae_terms() -> None:
    bk = Backend("numpy", "float64", seed=5)
    model = SparseAE(6, (), 4, rho=0.1, beta=3.0, backend=bk)
    x = bk.uniform((5, 6))
    terms = model.loss(x)
    assert set(terms) == {"loss", "recon", "sparsity"}
    assert float(terms["loss"]) == pytest.approx(float(terms["recon"] + 3.0 * terms["sparsity"]))
    assert float(terms["sparsity"]) > 0
    h = model.encode(x)  # the sparsity penalty of the code itself
    r = h.mean(axis=0)
    penalty = (0.1 * np.log(0.1 / r) + 0.9 * np.log(0.9 / (1 - r))).sum()
    assert float(terms["sparsity"]) == pytest.approx(penalty, rel=1e-12)


def test_sparse_ae_code_is_the_sigmoid_of_the_encoder() -> None:
    bk = Backend("numpy", "float64", seed=6)
    model = SparseAE(6, (5,), 4, activation="tanh", backend=bk)
    randomize_params(model, 7, scale=2.0)
    x = bk.uniform((9, 6))
    h = model.encode(x)
    a = np.tanh(x @ model.params["encoder.0.W"] + model.params["encoder.0.b"])
    a = a @ model.params["encoder.1.W"] + model.params["encoder.1.b"]
    np.testing.assert_allclose(h, 1 / (1 + np.exp(-a)), rtol=1e-13)
    assert ((h > 0) & (h < 1)).all()


def test_sparse_ae_penalty_is_zero_at_the_target_and_pulls_towards_it() -> None:
    """Biases set so every unit's mean activation is rho: penalty 0. Away from it the
    penalty's gradient, times beta, is added to the encoder's."""
    bk = Backend("numpy", "float64", seed=3)
    rho = 0.2
    model = SparseAE(4, (), 3, rho=rho, beta=1.0, activation="identity", backend=bk)
    model.params["encoder.0.W"] = np.zeros((4, 3))
    model.params["encoder.0.b"] = np.full(3, np.log(rho / (1 - rho)))  # sigmoid(b) = rho
    x = bk.uniform((5, 4))
    assert float(model.loss(x)["sparsity"]) == pytest.approx(0.0, abs=1e-15)
    model.params["encoder.0.b"] = np.zeros(3)  # mean activation 0.5 > rho
    grads = {b: 0.0 for b in (0.0, 2.0)}
    for beta in grads:
        model.beta = beta
        grads[beta] = model.loss_and_grads(x)[1]["encoder.0.b"].copy()
    # r = sigmoid(0) = 0.5: dP/dr = -rho/r + (1 - rho)/(1 - r) = 1.2, dr/db = r(1 - r) = 0.25,
    # so beta = 2 adds 2 * 1.2 * 0.25 = 0.6 to every bias gradient (descent lowers r to rho)
    np.testing.assert_allclose(grads[2.0] - grads[0.0], 0.6, rtol=1e-12)


def test_sparse_ae_bad_rho_raises() -> None:
    for rho in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"rho must be in \(0, 1\)"):
            SparseAE(4, rho=rho)


# ------------------------------------------------------------------ bad settings and noise
@pytest.mark.parametrize(
    "cls, kwargs, error, words",
    [
        (DenoisingAE, {"noise_level": "0.3"}, TypeError, "noise_level must be a number"),
        (DenoisingAE, {"noise_level": None}, TypeError, "noise_level must be a number"),
        (DenoisingAE, {"noise_level": float("inf")}, ValueError, "must be >= 0 and finite"),
        (DenoisingAE, {"noise": "mask", "noise_level": "0.2"}, TypeError, "must be a number"),
        (SparseAE, {"rho": "0.05"}, TypeError, "rho must be a number, got '0.05'"),
        (SparseAE, {"rho": None}, TypeError, "rho must be a number, got None"),
        (SparseAE, {"beta": "3"}, TypeError, "beta must be a number, got '3'"),
        (SparseAE, {"beta": float("inf")}, ValueError, "beta must be >= 0 and finite, got inf"),
    ],
)
def test_settings_of_the_wrong_type_or_infinite_are_refused_in_one_line(
    cls: type, kwargs: dict, error: type, words: str
) -> None:
    """Not Python's '>=' not supported between 'str' and 'int' (and an infinite sigma or beta
    is no setting: every loss would be inf or NaN)."""
    with pytest.raises(error, match=words) as info:
        cls(4, **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("noise_kind", ["gaussian", "mask"])
def test_dae_noise_for_another_batch_is_refused_in_one_line(noise_kind: str) -> None:
    """The corruption must be drawn for this batch: a missing key was a KeyError, a mask of
    one row was broadcast silently over all rows (the same pixels hidden in every image)."""
    bk = Backend("numpy", "float64", seed=1)
    model = DenoisingAE(4, (3,), 2, noise=noise_kind, backend=bk)
    key = {"gaussian": "input_noise", "mask": "input_mask"}[noise_kind]
    x = bk.uniform((5, 4))
    good = model.draw_noise(5)[key]
    for noise, got in [
        ({}, "none"),
        ({key: good[:1]}, r"shape \(1, 4\)"),
        ({key: good[:3]}, r"shape \(3, 4\)"),
        ({key: good[:, :, None]}, r"shape \(5, 4, 1\)"),
    ]:
        with pytest.raises(ValueError, match=rf"needs '{key}' of shape \(5, 4\).*got {got}"):
            model.loss_and_grads(x, noise)
    assert model.corrupt([[0.1, 0.2, 0.3, 0.4]]).shape == (1, 4)  # a list: rows counted
