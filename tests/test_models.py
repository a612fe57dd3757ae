"""Whole models: the gradient of every model's whole loss (property-based, float64), an
independent forward, the same-noise rule, a short VAE training run, and the model API."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from strategies import (
    FAMILIES,
    ModelCase,
    bars_dataset,
    build_family,
    model_cases,
    randomize_params,
    reference_loss,
)

from scratchvae.backend import Backend
from scratchvae.gradcheck import assert_close, numerical_param_grads
from scratchvae.models import AE, VAE, DenoisingAE, SparseAE, build_model
from scratchvae.optim import Adam

# Whole-model checks: a larger step than for single ops (the loss sums many terms, so roundoff
# dominates at h = 1e-6); measured worst excess error ~2e-11 * |loss|, so this is still tight.
H_MODEL, RTOL_MODEL = 1e-5, 1e-6


def _kw(case: ModelCase) -> dict:
    return {} if case.kl_weight is None else {"kl_weight": case.kl_weight}


def check_model_gradients(case: ModelCase) -> None:
    """loss_and_grads (or backward(forward(kl_weight))) == numerical_param_grads, every param."""
    model, x, noise = case.model, case.x, case.noise
    if case.kl_weight is None:
        terms, grads = model.loss_and_grads(x, noise)
    else:
        terms, cache = model.forward(x, noise, train=True, kl_weight=case.kl_weight)
        grads = model.backward(cache)
    analytic = grads.copy()  # the store is overwritten by the next call
    loss = float(terms["loss"])
    assert set(analytic) == set(model.params)

    def f():
        return model.forward(x, noise, train=True, **_kw(case))[0]["loss"]

    numerical = numerical_param_grads(f, model.params, H_MODEL)
    atol = 1e-9 * max(1.0, abs(loss))
    for name in model.params:
        assert_close(analytic[name], numerical[name], RTOL_MODEL, atol, name=name)


@pytest.mark.parametrize("family", FAMILIES)
@given(data=st.data())
def test_whole_model_gradient_float64(family: str, data: st.DataObject) -> None:
    """Random small layer sizes, activations, dropout, batch; fixed noise from draw_noise.
    The forward also agrees with an independent NumPy re-implementation (rtol 1e-10)."""
    case = data.draw(model_cases(family))
    ref, margin = reference_loss(case, kl_weight=case.kl_weight)
    assume(margin > 1e-4)  # no ReLU-family pre-activation within reach of its kink
    assume(abs(ref) < 1e3)  # a bounded region: exp(logvar) of a deep identity net can reach 1e70
    loss = float(case.model.forward(case.x, case.noise, train=True, **_kw(case))[0]["loss"])
    assert loss == pytest.approx(ref, rel=1e-10, abs=1e-12)
    check_model_gradients(case)


def _small_vae(seed: int = 0, **kwargs) -> tuple[VAE, np.ndarray, Backend]:
    bk = Backend("numpy", "float64", seed=seed)
    model = VAE(5, hidden=(4,), latent=3, activation="tanh", backend=bk, **kwargs)
    randomize_params(model, seed + 1)
    return model, bk.uniform((4, 5)), bk


@pytest.mark.parametrize("same_noise", [True, False])
def test_vae_backward_with_another_eps_fails_the_gradient_check(same_noise: bool) -> None:
    """Backward must see forward's eps: rebuilding the cache with a second draw of the noise
    (a forward with noise2, then backward) makes the whole-model gradient check FAIL."""
    model, x, _ = _small_vae()
    noise, noise2 = model.draw_noise(4), model.draw_noise(4)
    _, cache = model.forward(x, noise if same_noise else noise2, train=True)
    analytic = model.backward(cache).copy()
    numerical = numerical_param_grads(lambda: model.forward(x, noise)[0]["loss"], model.params)
    encoder_W = "encoder.0.W"  # reached only through z = mu + sigma * eps
    if same_noise:
        assert_close(analytic[encoder_W], numerical[encoder_W], 1e-6, 1e-8)
    else:
        with pytest.raises(AssertionError, match="mismatch"):
            assert_close(analytic[encoder_W], numerical[encoder_W], 1e-6, 1e-8)


# ------------------------------------------------------------------ training
def train_vae(seed: int, steps: int = 400, batch: int = 32) -> tuple[np.ndarray, dict]:
    """Adam on 8x8 bars (float32). Returns the per-step losses and the final parameters."""
    data = bars_dataset(seed=0)
    bk = Backend("numpy", "float32", seed=seed)
    model = VAE(64, hidden=(64,), latent=8, backend=bk)
    opt = Adam(lr=1e-2)
    losses, perm, pos = [], bk.permutation(len(data)), 0
    for _ in range(steps):
        if pos + batch > len(data):
            perm, pos = bk.permutation(len(data)), 0
        terms, grads = model.loss_and_grads(data[perm[pos : pos + batch]])
        opt.step(model.params, grads)
        losses.append(terms["loss"])  # 0-d arrays: no conversion inside the loop
        pos += batch
    return np.array([float(v) for v in losses]), {k: v.copy() for k, v in model.params.items()}


def test_vae_training_lowers_loss_and_is_reproducible() -> None:
    losses, params = train_vae(seed=1)
    first, last = losses[:20].mean(), losses[-20:].mean()
    assert np.isfinite(losses).all()
    assert last < 0.75 * first, (first, last)  # measured: ~47 -> ~26 nats per example
    _, params_again = train_vae(seed=1)
    assert all(np.array_equal(params[k], params_again[k]) for k in params)  # bit-identical
    _, params_other = train_vae(seed=2)
    assert not any(np.array_equal(params[k], params_other[k]) for k in params if "W" in k)


# ------------------------------------------------------------------ model API
def test_params_are_named_views_into_one_flat_buffer() -> None:
    model, _, _ = _small_vae()
    W = model.params["encoder.0.W"]
    assert W.shape == (5, 4) and model.params["encoder.1.W"].shape == (4, 6)  # 2 * latent
    assert np.shares_memory(W, model.params.flat)
    new = np.arange(20.0).reshape(5, 4)
    model.params["encoder.0.W"] = new
    np.testing.assert_array_equal(model.params["encoder.0.W"], new)
    assert model.params.flat[:20].tolist() == list(range(20))  # first in the buffer
    new[0, 0] = -1.0  # assignment copied: the caller's array is not aliased
    assert model.params["encoder.0.W"][0, 0] == 0.0
    with pytest.raises(ValueError, match=r"encoder.0.W: expected shape \(5, 4\), got \(4, 5\)"):
        model.params["encoder.0.W"] = np.zeros((4, 5))
    with pytest.raises(ValueError, match=r"encoder.0.b: expected shape \(4,\), got \(\)"):
        model.params["encoder.0.b"] = 0.5  # a scalar is not broadcast: a clear error instead
    model.params["encoder.0.b"] = [1.0, 2.0, 3.0, 4.0]  # nested lists are accepted
    assert model.params["encoder.0.b"].tolist() == [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(KeyError):
        model.params["encoder.9.W"]


def test_grads_are_keyed_and_shaped_like_params() -> None:
    model, x, _ = _small_vae()
    _, grads = model.loss_and_grads(x)
    assert list(grads) == list(model.params)
    assert all(grads[k].shape == model.params[k].shape for k in grads)
    assert model.n_params == sum(v.size for v in model.params.values())


@pytest.mark.parametrize("family", FAMILIES)
def test_encode_decode_reconstruct_sample_shapes_and_ranges(family: str) -> None:
    bk = Backend("numpy", "float64", seed=3)
    model = build_family(family, 6, (5,), 2, "relu", 0.0, bk)
    x = bk.uniform((7, 6))
    code = model.encode(x)
    if isinstance(model, VAE):
        mu, logvar = code
        assert mu.shape == logvar.shape == (7, 2)
        assert model.reconstruct(x, sample=True).shape == (7, 6)
    else:
        assert code.shape == (7, 2)
        if isinstance(model, SparseAE):
            assert ((code > 0) & (code < 1)).all()
    for out in (model.decode(bk.normal((3, 2))), model.reconstruct(x), model.sample(4)):
        assert out.shape[1] == 6 and np.isfinite(out).all()
        if model.lik.kind == "bernoulli":
            assert ((out >= 0) & (out <= 1)).all()
    assert model.sample(4).shape == (4, 6)


def test_dae_corrupts_only_in_training() -> None:
    """train=False scores the clean input (= a plain AE with the same parameters); in training
    the corruption changes the loss; the target is the clean x either way."""
    for noise_kind in ("gaussian", "mask"):
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
        assert dae.corrupt(x).shape == x.shape


def test_vae_terms_and_kl_weight() -> None:
    model, x, _ = _small_vae(beta=2.0)
    noise = model.draw_noise(4)
    terms = model.loss(x, noise, train=True)
    assert set(terms) == {"loss", "recon", "kl"}
    assert float(terms["loss"]) == pytest.approx(float(terms["recon"] + 2.0 * terms["kl"]))
    t0 = model.forward(x, noise, train=True, kl_weight=0.0)[0]
    assert float(t0["loss"]) == pytest.approx(float(t0["recon"]))
    # eval turns dropout off but keeps sampling with the given eps: loss depends on eps
    other = dict(noise, eps=noise["eps"] + 1.0)
    assert float(model.loss(x, noise)["loss"]) != float(model.loss(x, other)["loss"])


def test_sparse_ae_terms() -> None:
    bk = Backend("numpy", "float64", seed=5)
    model = SparseAE(6, (), 4, rho=0.1, beta=3.0, backend=bk)
    terms = model.loss(bk.uniform((5, 6)))
    assert float(terms["loss"]) == pytest.approx(float(terms["recon"] + 3.0 * terms["sparsity"]))
    assert float(terms["sparsity"]) > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_build_model_round_trip_gives_the_same_loss(family: str) -> None:
    bk = Backend("numpy", "float64", seed=6)
    model = build_family(family, 5, (4, 3), 2, "elu", 0.2, bk)
    clone = build_model(model.config, Backend("numpy", "float64", seed=99))
    assert clone.config == model.config and type(clone) is type(model)
    clone.params.flat[...] = model.params.flat
    x, noise = bk.uniform((3, 5)), model.draw_noise(3)
    assert float(clone.loss(x, noise, train=True)["loss"]) == float(
        model.loss(x, noise, train=True)["loss"]
    )


def test_models_default_to_numpy_float32() -> None:
    model = VAE(4, hidden=(3,), latent=2, seed=0)
    assert model.backend.name == "numpy" and model.params.flat.dtype == np.float32
    terms, grads = model.loss_and_grads(np.ones((2, 4)))
    assert terms["loss"].dtype == np.float32 and grads.flat.dtype == np.float32


def test_bad_inputs_raise_clear_errors() -> None:
    model, _, _ = _small_vae()
    with pytest.raises(ValueError, match=r"expected input of shape \(batch, 5\), got \(4, 3\)"):
        model.loss(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="unknown likelihood 'poisson'"):
        AE(4, likelihood="poisson")
    with pytest.raises(ValueError, match="unknown model 'gan'"):
        build_model({"model": "gan"})
    with pytest.raises(ValueError, match="unknown noise 'salt'"):
        DenoisingAE(4, noise="salt")
    with pytest.raises(ValueError, match="rho must be in"):
        SparseAE(4, rho=1.5)
    with pytest.raises(ValueError, match="beta must be >= 0"):
        VAE(4, beta=-1.0)


@pytest.mark.parametrize("family", FAMILIES)
def test_float32_step_agrees_with_float64(family: str) -> None:
    """The training dtype: float32 loss and gradients match float64 ones for the same
    parameters, input and noise (cast down), to float32 accuracy."""
    ref = build_family(family, 6, (5,), 3, "tanh", 0.2, Backend("numpy", "float64", seed=12))
    low = build_model(ref.config, Backend("numpy", "float32", seed=0))
    low.params.flat[...] = ref.params.flat
    ref.params.flat[...] = low.params.flat  # both hold exactly the float32-representable values
    data = Backend("numpy", "float32", seed=13)
    x, noise = data.uniform((4, 6)), ref.draw_noise(4)
    noise = {k: v.astype(np.float32).astype(np.float64) for k, v in noise.items()}
    terms64, grads64 = ref.loss_and_grads(x.astype(np.float64), noise)
    terms32, grads32 = low.loss_and_grads(x, {k: v.astype(np.float32) for k, v in noise.items()})
    assert terms32["loss"].dtype == grads32.flat.dtype == np.float32
    assert float(terms32["loss"]) == pytest.approx(float(terms64["loss"]), rel=1e-5)
    scale = np.abs(grads64.flat).max()
    np.testing.assert_allclose(grads32.flat, grads64.flat, rtol=1e-3, atol=1e-5 * scale)


def test_a_step_uses_only_the_noise_it_is_given() -> None:
    """Same noise, same numbers (no hidden draws); noise=None draws from the model's backend,
    never from NumPy's global generator."""
    model, x, _ = _small_vae(dropout=0.3)
    noise = model.draw_noise(4)
    first = model.loss_and_grads(x, noise)[1].copy()
    second = model.loss_and_grads(x, noise)[1].copy()
    assert all(np.array_equal(first[k], second[k]) for k in first)
    global_state = np.random.get_state()[1].copy()  # noqa: NPY002 - reading it, not using it
    a = float(model.loss_and_grads(x)[0]["loss"])
    b = float(model.loss_and_grads(x)[0]["loss"])
    assert a != b  # fresh eps and masks each call...
    assert np.array_equal(np.random.get_state()[1], global_state)  # noqa: NPY002 - ...not global


def test_uniform_init_is_pytorchs_linear_default():
    """init="uniform": every W and b ~ U(-1/sqrt(n_in), 1/sqrt(n_in)), biases not zero."""
    bk = Backend("numpy", "float64", seed=0)
    model = VAE(50, hidden=(40,), latent=5, init="uniform", backend=bk)
    for name, value in model.params.items():
        n_in = model.params[name.rsplit(".", 1)[0] + ".W"].shape[0]
        bound = 1 / np.sqrt(n_in)
        assert np.abs(value).max() <= bound, name
        assert np.abs(value).max() > 0.8 * bound, name  # really spread over the interval
    assert build_model(model.config, Backend("numpy", "float64", seed=0)).init == "uniform"
    with pytest.raises(ValueError, match="unknown init"):
        VAE(50, init="orthogonal")


@pytest.mark.parametrize("kwargs", [{"latent": 0}, {"latent": -1}, {"hidden": (8, 0)}])
def test_bad_layer_sizes_name_the_sizes(kwargs):
    with pytest.raises(ValueError, match=r"layer sizes must be >= 1 \(features, hidden, latent\)"):
        VAE(10, **kwargs)


def test_vae_noise_without_eps_is_a_clear_error():
    model = VAE(6, hidden=(4,), latent=2)
    with pytest.raises(ValueError, match="needs 'eps'"):
        model.loss_and_grads(np.zeros((3, 6), np.float32), {})
