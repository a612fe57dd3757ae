"""Whole models: the gradient of every model's whole loss (property-based, float64, kernels on
and off), an independent forward, the KL weight, the same-noise rule, a short VAE training run,
and the model API (prepare, kl_beta, draw_noise, build_model)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from model_cases import (
    FAMILIES,
    ModelCase,
    bars_dataset,
    build_family,
    model_cases,
    randomize_params,
)
from reference import reference_loss

from scratchvae.autoencoders import DenoisingAE, SparseAE
from scratchvae.backend import Backend
from scratchvae.backend import kernels as kernels_switch
from scratchvae.gradcheck import assert_close, numerical_param_grads
from scratchvae.models import AE, MODEL_KINDS, VAE, Model, build_model, model_classes
from scratchvae.optim import Adam

# Whole-model checks: a larger step than for single ops (the loss sums many terms, so roundoff
# dominates at h = 1e-6); measured worst excess error ~2e-11 * |loss|, so this is still tight.
H_MODEL, RTOL_MODEL = 1e-5, 1e-6
# a function-scoped fixture (kernels on/off) is the same for every example: nothing to reset
with_fixture = settings(
    suppress_health_check=[
        *settings.default.suppress_health_check,
        HealthCheck.function_scoped_fixture,
    ]
)


def _assert_model_gradients(case: ModelCase) -> None:
    """loss_and_grads(x, noise, kl_weight) == central differences of the loss, every param."""
    model, x, noise, kl_weight = case.model, case.x, case.noise, case.kl_weight
    terms, grads = model.loss_and_grads(x, noise, kl_weight)
    analytic = grads.copy()  # the store is overwritten by the next call
    assert set(analytic) == set(model.params)

    def f():
        return model.forward(x, noise, train=True, kl_weight=kl_weight)[0]["loss"]

    numerical = numerical_param_grads(f, model.params, H_MODEL)
    atol = 1e-9 * max(1.0, abs(float(terms["loss"])))
    for name in model.params:
        assert_close(analytic[name], numerical[name], RTOL_MODEL, atol, name=name)


@pytest.mark.parametrize("family", FAMILIES)
@with_fixture
@given(data=st.data())
def test_whole_model_gradient_float64(family: str, data: st.DataObject, kernels: bool) -> None:
    """Random small layer sizes, activations, dropout, batch; fixed noise from draw_noise; a VAE
    with beta 1.5 and sometimes a warm-up kl_weight. The forward also agrees with the
    independent NumPy forward of reference.py (rtol 1e-10)."""
    case = data.draw(model_cases(family))
    ref, margin = reference_loss(case, kl_weight=case.kl_weight)
    assume(margin > 1e-4)  # no ReLU-family pre-activation within reach of its kink
    assume(abs(ref) < 1e3)  # a bounded region: exp(logvar) of a deep identity net can reach 1e70
    terms = case.model.forward(case.x, case.noise, train=True, kl_weight=case.kl_weight)[0]
    assert float(terms["loss"]) == pytest.approx(ref, rel=1e-10, abs=1e-12)
    _assert_model_gradients(case)


@pytest.mark.parametrize("family", FAMILIES)
def test_evaluation_forward_equals_the_reference(family: str) -> None:
    """train=False: no dropout, no corruption (a VAE still samples with the given eps)."""
    bk = Backend("numpy", "float64", seed=21)
    model = build_family(family, 5, (4, 3), 2, "tanh", 0.3, bk)
    randomize_params(model, 22)
    x = bk.uniform((6, 5))
    case = ModelCase(model, x, model.draw_noise(6))
    loss = float(model.loss(x, case.noise, train=False)["loss"])
    assert loss == pytest.approx(reference_loss(case, train=False)[0], rel=1e-12)
    if model.dropout or isinstance(model, DenoisingAE):  # training differs from evaluation
        assert float(model.loss(x, case.noise, train=True)["loss"]) != loss


# ------------------------------------------------------------------ the KL weight
def _relu_vae(beta: float, seed: int = 0) -> tuple[VAE, np.ndarray, dict]:
    bk = Backend("numpy", "float64", seed=seed)
    model = VAE(6, hidden=(5, 4), latent=3, beta=beta, activation="relu", backend=bk)
    randomize_params(model, seed + 1)
    model.params["encoder.0.b"] = 0.5 + bk.uniform((5,))  # ReLU units alive, away from 0
    return model, bk.uniform((4, 6)), model.draw_noise(4)


@pytest.mark.parametrize("kl_weight", [None, 0.25, 3.0])
def test_vae_gradient_with_beta_and_kl_weight(kl_weight: float | None, kernels: bool) -> None:
    """beta = 2.5 (or the trainer's warm-up weight): the backward scales dL/dKL by it, in the
    op bodies and in the kernels alike (a backward using 1.0 fails here)."""
    model, x, noise = _relu_vae(beta=2.5)
    assert model.kl_beta == 2.5
    case = ModelCase(model, x, noise, kl_weight)
    ref, margin = reference_loss(case, kl_weight=kl_weight)
    assert margin > 1e-3
    terms, cache = model.forward(x, noise, kl_weight=kl_weight)
    assert cache.beta == (2.5 if kl_weight is None else kl_weight)
    assert float(terms["loss"]) == pytest.approx(ref, rel=1e-12)
    _assert_model_gradients(case)


def test_vae_gradient_is_linear_in_the_kl_weight(kernels: bool) -> None:
    """grads(w) = grads(0) + w (grads(1) - grads(0)), and the KL part is not zero."""
    model, x, noise = _relu_vae(beta=2.5, seed=3)
    g = {w: model.loss_and_grads(x, noise, w)[1].flat.copy() for w in (0.0, 1.0, 0.25)}
    g_beta = model.loss_and_grads(x, noise)[1].flat.copy()  # kl_weight None: beta = 2.5
    kl_part = g[1.0] - g[0.0]
    n_dec = sum(model.params[k].size for k in model.params if k.startswith("decoder"))
    assert np.abs(kl_part).max() > 1e-2 * np.abs(g[1.0]).max()  # the KL reaches the encoder
    np.testing.assert_allclose(kl_part[-n_dec:], 0.0, atol=1e-15)  # ... and not the decoder
    scale = np.abs(g[1.0]).max()
    np.testing.assert_allclose(g[0.25], g[0.0] + 0.25 * kl_part, rtol=1e-9, atol=1e-12 * scale)
    np.testing.assert_allclose(g_beta, g[0.0] + 2.5 * kl_part, rtol=1e-9, atol=1e-12 * scale)


def test_vae_terms_and_kl_weight() -> None:
    model, x, noise = _relu_vae(beta=2.0)
    terms = model.loss(x, noise, train=True)
    assert set(terms) == {"loss", "recon", "kl"}
    assert float(terms["loss"]) == pytest.approx(float(terms["recon"] + 2.0 * terms["kl"]))
    t0 = model.forward(x, noise, train=True, kl_weight=0.0)[0]
    assert float(t0["loss"]) == pytest.approx(float(t0["recon"]))
    # eval turns dropout off but keeps sampling with the given eps: loss depends on eps
    other = dict(noise, eps=noise["eps"] + 1.0)
    assert float(model.loss(x, noise)["loss"]) != float(model.loss(x, other)["loss"])


# ------------------------------------------------------------------ the same-noise rule
@pytest.mark.parametrize("same_noise", [True, False])
def test_vae_backward_with_another_eps_fails_the_gradient_check(same_noise: bool) -> None:
    """Backward must see forward's eps: rebuilding the cache with a second draw of the noise
    (a forward with noise2, then backward) makes the whole-model gradient check FAIL."""
    bk = Backend("numpy", "float64", seed=0)
    model = VAE(5, hidden=(4,), latent=3, activation="tanh", backend=bk)
    randomize_params(model, 1)
    x = bk.uniform((4, 5))
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


def test_a_step_uses_only_the_noise_it_is_given() -> None:
    """Same noise, same numbers (no hidden draws); noise=None draws from the model's backend,
    never from NumPy's global generator."""
    model = VAE(5, hidden=(4,), latent=3, dropout=0.3, backend=Backend("numpy", "float64"))
    x = model.backend.uniform((4, 5))
    noise = model.draw_noise(4)
    first = model.loss_and_grads(x, noise)[1].copy()
    second = model.loss_and_grads(x, noise)[1].copy()
    assert all(np.array_equal(first[k], second[k]) for k in first)
    global_state = np.random.get_state()[1].copy()  # noqa: NPY002 - reading it, not using it
    a = float(model.loss_and_grads(x)[0]["loss"])
    b = float(model.loss_and_grads(x)[0]["loss"])
    assert a != b  # fresh eps and masks each call...
    assert np.array_equal(np.random.get_state()[1], global_state)  # noqa: NPY002 - ...not global


# ------------------------------------------------------------------ workspace
@pytest.mark.parametrize("family", ["vae-bernoulli", "vae-gaussian-learned", "ae-mse", "sae"])
def test_loss_and_grads_with_workspace_equals_fresh_arrays(family: str, kernels: bool) -> None:
    """The reused buffers change nothing: the same terms and gradients as forward + backward
    with fresh arrays, step after step, also when the batch size changes (a short last batch);
    the second step of a size reuses the first's arrays."""
    bk = Backend("numpy", "float64", seed=8)
    model = build_family(family, 10, (7, 6), 3, "relu", 0.2, bk)
    arrays, previous_B = model.workspace._arrays, None
    for B in (5, 5, 3, 5):
        x = bk.uniform((B, 10))
        noise = model.draw_noise(B)
        terms, cache = model.forward(x, noise)
        want_terms, want = terms, model.backward(cache).flat.copy()
        before = {name: id(a) for name, a in arrays.items()}
        got_terms, got = model.loss_and_grads(x, noise)
        for name in want_terms:
            assert float(got_terms[name]) == float(want_terms[name]), name
        np.testing.assert_array_equal(got.flat, want)
        if B == previous_B:  # the same size as the last step: the same arrays
            assert {name: id(a) for name, a in arrays.items()} == before
        previous_B = B
    assert len(arrays) >= 8


@pytest.mark.parametrize("family", FAMILIES)
def test_kernels_on_and_off_give_the_same_step(family: str) -> None:
    """The whole step with the kernels (Numba here) equals the step with the op bodies only:
    the same inputs, noise and parameters, float64."""
    bk = Backend("numpy", "float64", seed=31)
    model = build_family(family, 9, (8, 7), 3, "relu", 0.2, bk)
    randomize_params(model, 32, scale=0.4)
    x, noise = bk.uniform((6, 9)), model.draw_noise(6)
    steps = {}
    for on in (True, False):
        with kernels_switch(on):
            terms, grads = model.loss_and_grads(x, noise, 0.7)
            steps[on] = ({k: float(v) for k, v in terms.items()}, grads.flat.copy())
    assert steps[True][0] == pytest.approx(steps[False][0], rel=1e-13)
    scale = np.abs(steps[False][1]).max()
    np.testing.assert_allclose(steps[True][1], steps[False][1], rtol=1e-11, atol=1e-14 * scale)


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
    return np.array([float(v) for v in losses]), model.params.copy()


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
def test_grads_are_keyed_and_shaped_like_params() -> None:
    model, x, _ = _relu_vae(beta=1.0)
    _, grads = model.loss_and_grads(x)
    assert grads is model.grads and list(grads) == list(model.params)
    assert all(grads[k].shape == model.params[k].shape for k in grads)
    assert model.n_params == sum(v.size for v in model.params.values()) == model.params.size


def test_prepare_casts_to_the_backend_and_checks_the_width() -> None:
    model = VAE(3, hidden=(2,), latent=1, backend=Backend("numpy", "float64"))
    x = model.prepare([[0, 1, 0], [1, 1, 1]])  # nested lists of ints
    assert isinstance(x, np.ndarray) and x.dtype == np.float64 and x.shape == (2, 3)
    x32 = np.ones((4, 3), np.float32)
    assert model.prepare(x32).dtype == np.float64
    for bad in (np.zeros((4, 2)), np.zeros(3), np.zeros((1, 4, 3))):
        with pytest.raises(ValueError, match=r"expected input of shape \(batch, 3\)"):
            model.prepare(bad)


def test_kl_beta_is_the_vaes_beta_and_none_otherwise() -> None:
    assert VAE(4, beta=0.3).kl_beta == 0.3 and VAE(4).kl_beta == 1.0
    for model in (AE(4), DenoisingAE(4), SparseAE(4)):
        assert model.kl_beta is None


def test_draw_noise_keys_backend_and_train_flag() -> None:
    model = VAE(5, hidden=(4, 3), latent=2, dropout=0.2, backend=Backend("numpy", "float64"))
    train = model.draw_noise(7)
    masks = {"encoder.0.dropout", "encoder.1.dropout", "decoder.0.dropout", "decoder.1.dropout"}
    assert set(train) == masks | {"eps"} and train["eps"].shape == (7, 2)
    assert train["encoder.1.dropout"].shape == (7, 3) and train["decoder.0.dropout"].shape == (7, 3)
    assert set(np.unique(train["encoder.0.dropout"])) <= {0.0, 1 / 0.8}
    state = model.backend.rng_state()
    evaluation = model.draw_noise(7, backend=Backend("numpy", "float64", seed=5), train=False)
    assert set(evaluation) == {"eps"}  # no dropout masks in evaluation, but the sample's eps
    np.testing.assert_array_equal(
        evaluation["eps"], Backend("numpy", "float64", seed=5).normal((7, 2))
    )
    assert model.backend.rng_state() == state  # the model's generator was not touched
    assert AE(5, dropout=0.5).draw_noise(3, train=False) == {}


def test_the_base_class_names_what_a_subclass_must_define() -> None:
    class Bare(Model):
        pass

    with pytest.raises(NotImplementedError, match=r"Bare must define _nets\(\): its MLPs"):
        Bare(None, 0)
    bare = object.__new__(Bare)  # past __init__, to reach the other three
    with pytest.raises(NotImplementedError, match="Bare must define config: its settings"):
        _ = bare.config
    with pytest.raises(NotImplementedError, match=r"Bare must define forward\(\): the loss"):
        bare.forward(np.zeros((1, 2)))
    with pytest.raises(NotImplementedError, match=r"Bare must define backward\(\): the grads"):
        bare.backward(None)


def test_model_kinds_classes_and_build_model() -> None:
    classes = model_classes()
    assert tuple(classes) == MODEL_KINDS == ("vae", "ae", "dae", "sae")
    assert classes == {"vae": VAE, "ae": AE, "dae": DenoisingAE, "sae": SparseAE}
    for kind, cls in classes.items():
        assert cls.kind == kind
        model = build_model({"model": kind, "n_features": 4, "hidden": [3], "latent": 2})
        assert type(model) is cls and model.config["model"] == kind
    with pytest.raises(ValueError, match="unknown model 'gan'; choose one of vae, ae, dae, sae"):
        build_model({"model": "gan"})
    model = VAE(4, hidden=[3], latent=2, backend=Backend("numpy", "float64", seed=7))
    assert repr(model) == (
        f"VAE({model.config}, {model.n_params} parameters, Backend('numpy', dtype='float64', "
        "seed=7))"
    )


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


@pytest.mark.parametrize("family", FAMILIES)
def test_a_loss_on_an_empty_batch_is_refused_in_one_line(family: str, kernels: bool) -> None:
    """No value to report (a mean over no rows): a ValueError, kernels on or off (they gave 0.0
    and nan, or a ZeroDivisionError, before). Encoding no rows is fine."""
    model = build_family(family, 6, (5,), 2, "relu", 0.0, Backend("numpy", "float64", seed=3))
    empty = np.zeros((0, 6))
    for call in (model.loss_and_grads, model.loss):
        with pytest.raises(ValueError, match="at least one example; the batch is empty"):
            call(empty)
    assert model.reconstruct(empty).shape == (0, 6)


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
    for out in (model.decode(bk.normal((3, 2))), model.reconstruct(x), model.sample(4)):
        assert out.shape[1] == 6 and np.isfinite(out).all()
        if model.lik.kind == "bernoulli":
            assert ((out >= 0) & (out <= 1)).all()
    assert model.sample(4).shape == (4, 6)


def test_models_default_to_numpy_float32() -> None:
    model = VAE(4, hidden=(3,), latent=2, seed=0)
    assert model.backend.name == "numpy" and model.params.flat.dtype == np.float32
    terms, grads = model.loss_and_grads(np.ones((2, 4)))
    assert terms["loss"].dtype == np.float32 and grads.flat.dtype == np.float32


@pytest.mark.parametrize("family", FAMILIES)
def test_float32_step_agrees_with_float64(family: str, kernels: bool) -> None:
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


def test_uniform_init_is_pytorchs_linear_default() -> None:
    """init="uniform": every W and b ~ U(-1/sqrt(n_in), 1/sqrt(n_in)), biases not zero."""
    model = VAE(50, hidden=(40,), latent=5, init="uniform", backend=Backend("numpy", "float64"))
    for name, value in model.params.items():
        n_in = model.params[name.rsplit(".", 1)[0] + ".W"].shape[0]
        bound = 1 / np.sqrt(n_in)
        assert np.abs(value).max() <= bound, name
        assert np.abs(value).max() > 0.8 * bound, name  # really spread over the interval
    assert build_model(model.config).init == "uniform"
    with pytest.raises(ValueError, match="unknown init"):
        VAE(50, init="orthogonal")


def test_bad_inputs_raise_clear_errors() -> None:
    model = VAE(5, hidden=(4,), latent=3)
    with pytest.raises(ValueError, match=r"expected input of shape \(batch, 5\), got \(4, 3\)"):
        model.loss(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="unknown likelihood 'poisson'"):
        AE(4, likelihood="poisson")
    with pytest.raises(ValueError, match="beta must be >= 0"):
        VAE(4, beta=-1.0)
    with pytest.raises(ValueError, match="needs 'eps'"):
        model.loss_and_grads(np.zeros((3, 5), np.float32), {})


@pytest.mark.parametrize("kwargs", [{"latent": 0}, {"latent": -1}, {"hidden": (8, 0)}])
def test_bad_layer_sizes_name_the_sizes(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=r"layer sizes must be >= 1 \(features, hidden, latent\)"):
        VAE(10, **kwargs)
