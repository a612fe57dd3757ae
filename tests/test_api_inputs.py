"""The library as a user's own script meets it: each mistake ends in one clear ValueError or
TypeError at the call that received it, never in a silently wrong number (the API audit)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scratchvae import VAE, Adam, Backend, DenoisingAE, SparseAE, TrainConfig, fit, load_dataset
from scratchvae.data import dataset_from_array
from scratchvae.evaluate import evaluate


def _model(**kwargs) -> VAE:
    return VAE(16, hidden=[8], latent=2, backend=Backend("numpy", "float64", seed=0), **kwargs)


def _grey(n: int = 20, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 16))


@pytest.mark.parametrize("call", ["loss_and_grads", "forward", "encode", "loss"])
def test_uint8_grey_levels_are_refused_not_trained_as_targets(call: str) -> None:
    x = (_grey() * 255).astype(np.uint8)  # 0..255: a Bernoulli target of 255 gave NaN/inf
    with pytest.raises(
        ValueError, match=r"values in \[\d+, \d+\].*divide 8-bit grey levels by 255"
    ):
        getattr(_model(), call)(x)


def test_integer_and_bool_targets_in_range_still_train() -> None:
    model, x = _model(), _grey()
    noise = model.draw_noise(len(x))
    want = float(model.loss_and_grads((x > 0.5).astype(np.float64), noise)[0]["loss"])
    for same in ((x > 0.5), (x > 0.5).astype(np.uint8), (x > 0.5).astype(int).tolist()):
        assert float(model.loss_and_grads(same, noise)[0]["loss"]) == want


def test_a_list_of_none_is_refused_not_nan() -> None:
    with pytest.raises(ValueError, match="NaN or Inf"):
        _model().loss_and_grads([[None] * 16] * 2)


def test_eps_of_another_batch_size_is_refused_not_taken_as_k_draws() -> None:
    model, x = _model(), _grey(4)
    for eps in (np.zeros((8, 2)), np.zeros((4, 3)), np.zeros(8)):
        with pytest.raises(ValueError, match=r"'eps' of shape \(4, 2\) or \(k, 4, 2\)"):
            model.loss_and_grads(x, {"eps": eps})
    model.loss_and_grads(x, {"eps": np.zeros((3, 4, 2))})  # k = 3 draws: still accepted


def test_decode_and_sample_check_their_arguments() -> None:
    model = _model()
    with pytest.raises(ValueError, match=r"codes z of shape \(n, 2\), got \(2,\)"):
        model.decode(np.zeros(2))  # was (2, 16) from one code, by broadcasting
    with pytest.raises(ValueError, match=r"codes z of shape \(n, 2\), got \(4, 3\)"):
        model.decode(np.zeros((4, 3)))
    for n in (-1, 2.5):
        with pytest.raises(ValueError, match="n must be >= 0"):
            model.sample(n)
    assert model.sample(3.0).shape == (3, 16)


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"dropout": 1.5}, ValueError, r"dropout must be in \[0, 1\)"),
        ({"dropout": -0.1}, ValueError, r"dropout must be in \[0, 1\)"),
        ({"beta": math.nan}, ValueError, "beta must be >= 0"),
        ({"latent": 2.7}, ValueError, "layer sizes must be whole numbers"),
        ({"latent": "3"}, ValueError, "layer sizes must be whole numbers"),
        ({"hidden": 64}, TypeError, r"hidden must be a list of layer sizes such as \[400\]"),
        ({"backend": "numpy"}, TypeError, r"pass backend=Backend\('numpy'\)"),
    ],
)
def test_model_arguments_are_checked(kwargs: dict, error: type, needle: str) -> None:
    args = {"n_features": 16, "hidden": [8], "latent": 2, **kwargs}
    with pytest.raises(error, match=needle):
        VAE(**args)


@pytest.mark.parametrize("seed", [-1, 1.5, None, True])
def test_backend_seed_must_be_a_whole_number(seed: object) -> None:
    with pytest.raises(ValueError, match="seed must be a whole number >= 0"):
        Backend("numpy", seed=seed)


def test_optimizer_learning_rate_must_be_finite() -> None:
    for lr in (math.nan, math.inf):
        with pytest.raises(ValueError, match="learning rate must be > 0 and finite"):
            Adam(lr=lr)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"epochs": 2.5}, r"epochs must be >= 1 \(a whole number\)"),
        ({"batch_size": 2.5}, r"batch size must be >= 1 \(a whole number\)"),
        ({"seed": -1}, r"seed must be >= 0"),
        ({"seed": 1.5}, r"seed must be >= 0"),
        ({"lr": math.inf}, "learning rate must be > 0 and finite"),
    ],
)
def test_train_config_refuses_what_fit_would_fail_on_later(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        TrainConfig(**kwargs)


def test_fit_takes_the_users_own_array() -> None:
    x, cfg = _grey(40), TrainConfig(epochs=2, batch_size=8, progress=False)
    want = fit(_model(), dataset_from_array(x), cfg)[-1]
    assert fit(_model(), x, cfg)[-1]["train_loss"] == want["train_loss"]
    assert fit(_model(), x.tolist(), cfg)[-1]["train_loss"] == want["train_loss"]
    u8 = (x * 255).astype(np.uint8)  # scaled by 1/255, as dataset_from_array and the CLI do
    assert (
        fit(_model(), u8, cfg)[-1]["train_loss"]
        == fit(_model(), dataset_from_array(u8), cfg)[-1]["train_loss"]
    )
    with pytest.raises(ValueError, match="Bernoulli likelihood needs"):
        fit(_model(), x * 5, cfg)
    with pytest.raises(ValueError, match="NaN or Inf"):
        fit(_model(), np.where(x > 0.9, np.nan, x), cfg)
    fit(_model(likelihood="gaussian"), x * 5, cfg)  # any finite values for a Gaussian decoder


def test_evaluate_takes_arrays_lists_and_datasets_and_checks_values() -> None:
    model, x = _model(), _grey()
    want = evaluate(model, x, iw_samples=5)
    assert evaluate(model, x.tolist(), iw_samples=5) == want
    assert evaluate(model, dataset_from_array(x), iw_samples=5)["n"] == want["n"]
    with pytest.raises(ValueError, match="divide 8-bit grey levels by 255"):
        evaluate(model, x * 255, iw_samples=5)  # float 0..255: not 8-bit data, so not scaled
    with pytest.raises(ValueError, match=r"values in \[.*\] but the Bernoulli likelihood"):
        evaluate(model, x * 5, iw_samples=5)  # was a finite, meaningless bound


def test_evaluate_reads_its_data_as_fit_does() -> None:
    """uint8 grey levels divided by 255 and (N, H, W) images flattened, as fit(model, x) and
    the README say; evaluate refused both, so the uint8 test set of a model fit on uint8
    training images could not be scored as it was."""
    model, u8 = _model(), (_grey() * 255).astype(np.uint8)
    want = evaluate(model, dataset_from_array(u8), iw_samples=5)
    assert evaluate(model, u8, iw_samples=5) == want
    assert evaluate(model, u8.reshape(20, 4, 4), iw_samples=5) == want
    for ints in (u8.tolist(), u8.astype(np.int64)):  # not uint8: refused, as fit refuses them
        with pytest.raises(ValueError, match="divide 8-bit grey levels by 255"):
            evaluate(model, ints, iw_samples=5)
        with pytest.raises(ValueError, match="divide 8-bit grey levels by 255"):
            fit(_model(), ints, TrainConfig(epochs=1, progress=False))
    with pytest.raises(ValueError, match=r"shape \(320,\) \(rank 1\); expected \(N, D\)"):
        evaluate(model, u8.ravel(), iw_samples=5)


def test_fit_of_images_and_labels_as_a_pair_says_what_to_pass() -> None:
    """fit(model, (x, y)): NumPy's "inhomogeneous shape" error, from inside."""
    x, y = _grey(), np.arange(20)
    with pytest.raises(ValueError, match=r"not one array of numbers .* dataset_from_array\(x, y\)"):
        fit(_model(), (x, y), TrainConfig(epochs=1, progress=False))


def test_load_dataset_of_an_array_says_what_to_call() -> None:
    with pytest.raises(TypeError, match=r"dataset_from_array\(x\), or pass it to fit\(\)"):
        load_dataset(_grey())


@pytest.mark.parametrize("cls", [VAE, DenoisingAE, SparseAE])
def test_a_later_forward_into_the_same_workspace_changes_an_earlier_cache(cls: type) -> None:
    """By design (documented on forward and in the README): a cache whose arrays live in a
    workspace is valid until the next forward into that workspace; without ``ws`` it is not."""
    model = cls(16, hidden=[8], latent=2, backend=Backend("numpy", "float64", seed=0))
    xa, xb = _grey(4, 1), _grey(4, 2)
    na, nb = model.draw_noise(4), model.draw_noise(4)
    want = model.backward(model.forward(xa, na)[1]).flat.copy()
    _, cache = model.forward(xa, na)
    model.forward(xb, nb)  # no workspace: the first cache is untouched
    assert np.array_equal(model.backward(cache).flat, want)
    _, cache = model.forward(xa, na, ws=model.workspace)
    model.forward(xb, nb, ws=model.workspace)
    assert not np.allclose(model.backward(cache, model.workspace).flat, want)


@pytest.mark.parametrize(
    ("cls", "kwargs", "needle"),
    [
        (DenoisingAE, {"noise_level": math.nan}, "noise level must be >= 0"),
        (SparseAE, {"beta": -1.0}, "sparsity weight beta must be >= 0"),
        (SparseAE, {"beta": math.nan}, "sparsity weight beta must be >= 0"),
    ],
)
def test_autoencoder_weights_refuse_nan_and_negatives(cls: type, kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        cls(16, hidden=[8], latent=2, **kwargs)


def test_a_seed_beside_a_backend_is_refused_not_ignored():
    with pytest.raises(ValueError, match=r"seed=3 with a backend would be ignored"):
        VAE(4, hidden=[3], latent=2, backend=Backend(seed=0), seed=3)
    a, b = (VAE(4, hidden=[3], latent=2, seed=3) for _ in range(2))
    np.testing.assert_array_equal(a.params.flat, b.params.flat)


@pytest.mark.parametrize(
    "change, says",
    [("dtype", "was trained in float32, not float64; resume with the same dtype"),
     ("optimizer", "was trained with optimizer='adam'; this TrainConfig has optimizer='sgd'")],
)  # fmt: skip
def test_resuming_with_other_settings_says_so_not_that_the_file_is_damaged(tmp_path, change, says):
    x = (np.random.default_rng(0).random((64, 8)) < 0.5).astype(np.float32)
    cfg = dict(epochs=1, batch_size=16, out_dir=str(tmp_path), progress=False)
    fit(VAE(8, hidden=[4], latent=2), x, TrainConfig(**cfg))
    model = VAE(8, hidden=[4], latent=2)
    if change == "dtype":
        model = VAE(8, hidden=[4], latent=2, backend=Backend("numpy", "float64", seed=0))
    else:
        cfg["optimizer"] = "sgd"
    with pytest.raises(ValueError, match=says):
        fit(model, x, TrainConfig(**{**cfg, "epochs": 2}), resume=True)


def test_train_config_and_evaluate_refuse_what_they_would_misread():
    with pytest.raises(TypeError, match="lr must be a number, got '1e-3'"):
        TrainConfig(lr="1e-3")
    with pytest.raises(ValueError, match="patience"):
        TrainConfig(patience=1.5)
    assert TrainConfig(lr=1, clip_norm=None).lr == 1.0
    model = VAE(4, hidden=[3], latent=2)
    x = np.full((3, 4), 0.5, np.float32)
    with pytest.raises(ValueError, match=r"iw_samples \(0: skip the bound\) must be >= 0"):
        evaluate(model, x, iw_samples=2.5)


def test_build_model_names_an_unknown_or_missing_setting():
    from scratchvae import build_model

    with pytest.raises(ValueError, match=r"model 'vae': unknown settings \['hiden'\]; it takes"):
        build_model({"model": "vae", "n_features": 4, "hiden": [3]})
    with pytest.raises(ValueError, match="model 'ae': no n_features"):
        build_model({"model": "ae", "latent": 2})
    assert build_model({"model": "vae", "n_features": 4, "hidden": [3], "latent": 2}).latent == 2


@pytest.mark.parametrize("cls", [VAE, DenoisingAE, SparseAE])
def test_noise_for_a_negative_or_fractional_batch_is_refused(cls: type) -> None:
    model = cls(16, hidden=[8], latent=2, backend=Backend("numpy", "float64", seed=0))
    for batch in (-1, 2.5):  # an AE has no noise without dropout: -1 gave {} silently
        with pytest.raises(ValueError, match="batch_size must be >= 0"):
            model.draw_noise(batch)
    shapes = {name: a.shape for name, a in model.draw_noise(3).items()}
    assert {name: a.shape for name, a in model.draw_noise(3.0).items()} == shapes  # 3.0 is 3


@pytest.mark.parametrize("cls", [VAE, DenoisingAE, SparseAE])
def test_backward_of_something_else_than_the_forward_cache_says_so(cls: type) -> None:
    model = cls(16, hidden=[8], latent=2, backend=Backend("numpy", "float64", seed=0))
    other = SparseAE(16, hidden=[8], latent=2) if cls is not SparseAE else VAE(16, [8], 2)
    _, foreign = other.forward(_grey(4).astype(np.float32))
    for cache in (None, foreign):
        with pytest.raises(TypeError, match=rf"{cls.__name__}.backward takes the cache its fo"):
            model.backward(cache)
    _, cache = model.forward(_grey(4))
    assert set(model.backward(cache)) == set(model.params)  # its own cache still works


def test_the_decoder_std_kl_weight_and_dropout_are_numbers_finite_where_they_must_be() -> None:
    """decoder_std NaN or inf gave a NaN or inf loss, beta inf an inf loss; a string or None
    failed in a comparison or in float() with Python's own words (found by the models audit)."""
    from scratchvae.models import AE

    for std in (math.nan, math.inf, 0.0, -1.0):
        with pytest.raises(ValueError, match="decoder std must be > 0 and finite"):
            AE(4, likelihood="gaussian", decoder_std=std)
    with pytest.raises(TypeError, match="decoder_std must be a number, got '1'"):
        AE(4, likelihood="gaussian", decoder_std="1")
    for beta in (math.inf, math.nan, -1.0):
        with pytest.raises(ValueError, match="KL weight beta must be >= 0 and finite"):
            VAE(4, beta=beta)
    with pytest.raises(TypeError, match="beta must be a number, got '1'"):
        VAE(4, beta="1")
    with pytest.raises(TypeError, match="dropout must be a number, got None"):
        AE(4, dropout=None)
    assert VAE(4, beta=0).beta == 0.0 and AE(4, decoder_std=2).lik.std == 2.0


def test_a_value_a_hair_above_1_is_shown_as_it_is() -> None:
    """The refusal read "values in [0.0003, 1] but the Bernoulli likelihood needs [0, 1]":
    6 digits rounded 1.000000000001 to 1 (review)."""
    from scratchvae.inputs import check_range

    with pytest.raises(ValueError, match=r"values in \[0\.0003, 1\.000000000001\] but"):
        check_range(0.0003, 1 + 1e-12, "bernoulli", "x")
    with pytest.raises(ValueError, match=r"values in \[0, 255\] but"):
        check_range(0, 255, "bernoulli", "x")


def test_complex_input_is_refused_not_cast(recwarn) -> None:
    """A complex batch was cast to its real part with only NumPy's ComplexWarning; fit and
    evaluate already refused complex data (found by the models audit)."""
    from scratchvae.models import AE

    model = AE(4, hidden=[3], latent=2)
    with pytest.raises(ValueError, match=r"input has dtype complex128; expected real numbers"):
        model.loss(np.full((2, 4), 0.5 + 0.5j))
    assert not [w for w in recwarn if "Complex" in w.category.__name__]
