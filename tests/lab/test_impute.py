"""Tests for scratchvae.lab.impute: a briefly trained digits VAE fills in missing pixels."""

import numpy as np
import pytest
from test_evaluate import linear_gaussian  # the exact linear-Gaussian VAE (tests/ on sys.path)

from scratchvae.backend import Backend
from scratchvae.data import load_dataset
from scratchvae.lab import impute as im
from scratchvae.models import AE, VAE
from scratchvae.optim import Adam


@pytest.fixture(scope="module")
def trained():
    """A small VAE trained ~1 s on the embedded digits (its own loop: no train.py needed)."""
    bk = Backend("numpy", "float32", seed=0)
    x = bk.asarray(load_dataset("digits", "train").x)  # (1500, 64)
    x_test = bk.asarray(load_dataset("digits", "test").x)  # (297, 64)
    model = VAE(64, hidden=(64,), latent=8, backend=bk)
    opt = Adam(3e-3)
    for _ in range(200):  # epochs
        perm = bk.permutation(x.shape[0])
        for i in range(0, x.shape[0], 100):
            _, grads = model.loss_and_grads(x[perm[i : i + 100]])
            opt.step(model.params, grads)
    return model, x.mean(axis=0), x_test


@pytest.mark.parametrize("kind", ["bottom-half", "random"])
@pytest.mark.parametrize("sample", [True, False])
def test_imputation_beats_the_mean_image(trained, kind, sample):
    model, mean_image, x = trained
    mask = im.make_mask(x.shape[0], (8, 8), kind, backend=Backend(seed=1))
    baseline = im.masked_mse(im.mean_fill(x, mask, mean_image), x, mask)
    filled = im.impute(model, x, mask, n_iter=30, sample=sample, backend=Backend(seed=2))
    err = im.masked_mse(filled, x, mask)
    assert err < 0.9 * baseline, (err, baseline)
    # observed pixels are returned exactly as given; missing ones are probabilities
    assert bool((filled[mask] == x[mask]).all())
    assert 0.0 <= float(filled.min()) and float(filled.max()) <= 1.0
    assert filled.dtype == x.dtype  # float32 in, float32 out


def test_deterministic_variant_is_reproducible_and_sampling_follows_the_seed(trained):
    model, _, x = trained
    mask = im.make_mask(20, (8, 8), "bottom-half")
    a = im.impute(model, x[:20], mask, n_iter=5, sample=False, backend=Backend(seed=1))
    b = im.impute(model, x[:20], mask, n_iter=5, sample=False, backend=Backend(seed=2))
    assert bool((a == b).all())
    c = im.impute(model, x[:20], mask, n_iter=5, sample=True, backend=Backend(seed=1))
    d = im.impute(model, x[:20], mask, n_iter=5, sample=True, backend=Backend(seed=1))
    e = im.impute(model, x[:20], mask, n_iter=5, sample=True, backend=Backend(seed=2))
    assert bool((c == d).all()) and not bool((c == e).all())


def test_make_mask_hides_the_requested_pixels():
    bk = Backend(seed=0)
    half = im.make_mask(3, (4, 6), "bottom-half").reshape(3, 4, 6)
    assert bool(half[:, :2].all()) and not bool(half[:, 2:].any())
    right = im.make_mask(1, (4, 6), "right-half").reshape(4, 6)
    assert bool(right[:, :3].all()) and not bool(right[:, 3:].any())
    rnd = im.make_mask(200, (8, 8), "random", missing=0.3, backend=bk)
    assert rnd.shape == (200, 64) and abs(1 - float(rnd.mean()) - 0.3) < 0.02
    # half of one row is all of it or none: bottom-half hid every pixel of a 1 x D strip,
    # top-half none (and left/right of a D x 1 column); refused, the mask that works named
    for shape, kind, other in [((1, 6), "bottom-half", "left-half"), ((1, 6), "top-half", "left"),
                               ((6, 1), "right-half", "bottom-half")]:  # fmt: skip
        with pytest.raises(
            ValueError, match=f"these images are {shape[0]} x {shape[1]}; use {other}"
        ):
            im.make_mask(2, shape, kind)
    assert bool(im.make_mask(1, (1, 6), "right-half")[0, :3].all())  # the strip's halves


def test_bad_input_is_rejected(trained):
    model, _, x = trained
    with pytest.raises(ValueError, match="mask must have the shape"):
        im.impute(model, x[:4], im.make_mask(5, (8, 8)))
    with pytest.raises(ValueError, match="unknown mask"):
        im.make_mask(2, (8, 8), "diagonal")
    with pytest.raises(ValueError, match="fill must be a scalar"):
        im.impute(model, x[:4], im.make_mask(4, (8, 8)), fill=x[0, :10])
    with pytest.raises(ValueError, match="needs a VAE"):
        im.impute_importance(AE(64, hidden=(), latent=2), x[:4], im.make_mask(4, (8, 8)))
    with pytest.raises(ValueError, match="hides no pixel"):
        im.masked_mse(x[:2], x[:2], x[:2] >= 0)


@pytest.mark.parametrize("kind", ["bottom-half", "random"])
def test_importance_imputation_beats_the_mean_image(trained, kind):
    model, mean_image, x = trained
    mask = im.make_mask(x.shape[0], (8, 8), kind, backend=Backend(seed=1))
    baseline = im.masked_mse(im.mean_fill(x, mask, mean_image), x, mask)
    filled = im.impute_importance(model, x, mask, k=100, fill=mean_image, backend=Backend(seed=2))
    assert im.masked_mse(filled, x, mask) < 0.9 * baseline
    assert bool((filled[mask] == x[mask]).all())


def test_importance_imputation_finds_the_exact_conditional_mean():
    # A linear-Gaussian VAE has p(x) = N(b, C) exactly, so the truth is known:
    #   E[x_miss | x_obs] = b_m + C_mo C_oo^-1 (x_o - b_o)
    # Its encoder here is overdispersed (logvar + 2), a proposal importance sampling can correct.
    m, x, _ = linear_gaussian(dlogvar=2.0, n=40)
    xp = m.xp
    W, b = m.params["decoder.0.W"], m.params["decoder.0.b"]
    C = W.T @ W + 0.5**2 * xp.eye(6)
    o, u = [0, 2, 4], [1, 3, 5]  # observed, missing features
    exact = b[u] + (x[:, o] - b[o]) @ xp.linalg.solve(C[xp.ix_(o, o)], C[xp.ix_(o, u)])
    mask = xp.zeros((40, 6), dtype=bool)
    mask[:, o] = True
    errors = []
    for k in (40, 4000):
        est = im.impute_importance(m, x, mask, k=k, fill=b, budget=1 << 16, backend=Backend(seed=4))
        errors.append(float(abs(est[:, u] - exact).mean()))
    assert errors[1] < 0.02 * float(exact.std()) and errors[1] < errors[0] / 4, errors
    # a mean-field pass is not the conditional mean: the test can tell the difference
    mf = im.impute(m, x, mask, n_iter=1, sample=False, fill=b)
    assert float(abs(mf[:, u] - exact).mean()) > 5 * errors[1]


def test_importance_imputation_with_a_learned_variance_and_a_first_pass():
    """The same linear-Gaussian model with likelihood gaussian-learned (the decoder's second
    half, the log-variance, a constant log 0.25 from its bias): the log-weights mask both
    halves of the output, the estimate is the exact conditional mean as well; n_iter > 0
    starts the proposal from deterministic passes."""
    fixed, x, _ = linear_gaussian(dlogvar=2.0, n=40)
    xp = fixed.xp
    m = VAE(6, hidden=(), latent=2, activation="identity", likelihood="gaussian-learned",
            backend=Backend("numpy", "float64", seed=0))  # fmt: skip
    m.params["encoder.0.W"][...] = fixed.params["encoder.0.W"]
    m.params["encoder.0.b"][...] = fixed.params["encoder.0.b"]
    W, b = fixed.params["decoder.0.W"], fixed.params["decoder.0.b"]
    m.params["decoder.0.W"][...] = xp.concatenate([W, xp.zeros_like(W)], axis=1)
    m.params["decoder.0.b"][...] = xp.concatenate([b, xp.full(6, xp.log(0.5**2))])
    C = W.T @ W + 0.5**2 * xp.eye(6)
    o, u = [0, 2, 4], [1, 3, 5]
    exact = b[u] + (x[:, o] - b[o]) @ xp.linalg.solve(C[xp.ix_(o, o)], C[xp.ix_(o, u)])
    mask = xp.zeros((40, 6), dtype=bool)
    mask[:, o] = True
    est = im.impute_importance(m, x, mask, k=4000, fill=b, budget=1 << 16, backend=Backend(seed=4))
    assert float(abs(est[:, u] - exact).mean()) < 0.02 * float(exact.std())
    want = im.impute_importance(fixed, x, mask, k=50, n_iter=2, fill=b, backend=Backend(seed=5))
    got = im.impute_importance(m, x, mask, k=50, n_iter=2, fill=b, backend=Backend(seed=5))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)  # the same model, written twice


def test_more_bad_input_is_rejected(trained):
    model, _, x = trained
    mask = im.make_mask(4, (8, 8))
    with pytest.raises(ValueError, match=r"n_iter must be >= 1 \(a whole number\), got 0"):
        im.impute(model, x[:4], mask, n_iter=0)
    with pytest.raises(ValueError, match=r"k must be >= 1 \(a whole number\), got 0"):
        im.impute_importance(model, x[:4], mask, k=0)
    with pytest.raises(ValueError, match="mask must have the shape of x"):
        im.impute_importance(model, x[:4], im.make_mask(5, (8, 8)))
    with pytest.raises(ValueError, match=r"the missing fraction must be in \(0, 1\), got 1.0"):
        im.make_mask(2, (8, 8), "random", missing=1.0)


def test_an_autoencoder_imputes_with_its_deterministic_code():
    bk = Backend("numpy", "float64", seed=0)
    ae = AE(64, hidden=(8,), latent=2, backend=bk)
    x, mask = bk.uniform((3, 64)), im.make_mask(3, (8, 8))
    filled = im.impute(ae, x, mask, n_iter=1, sample=True, fill=0.5)  # sample: no effect
    want = ae.decode(ae.encode(bk.xp.where(mask, x, 0.5)))
    np.testing.assert_array_equal(filled, bk.xp.where(mask, x, want))


@pytest.mark.gpu
def test_imputation_agrees_on_cupy(trained):
    model, mean_image, x = trained
    gpu = Backend("cupy", "float32")
    g = VAE(64, hidden=(64,), latent=8, backend=gpu)
    g.params.flat[...] = gpu.xp.asarray(model.params.flat)
    mask = im.make_mask(30, (8, 8), "random", backend=Backend(seed=3))
    a = im.impute(model, x[:30], mask, n_iter=10, sample=False, fill=mean_image)
    b = im.impute(g, gpu.xp.asarray(x[:30]), gpu.xp.asarray(mask), n_iter=10, sample=False,
                  fill=gpu.xp.asarray(mean_image))  # fmt: skip
    assert float(abs(b.get() - a).max()) < 1e-4
    gmask = im.make_mask(30, (8, 8), "random", backend=gpu)
    filled = im.impute(g, gpu.xp.asarray(x[:30]), gmask, n_iter=5, sample=True)
    assert 0 < im.masked_mse(filled, gpu.xp.asarray(x[:30]), gmask) < 1


# ------------------------------------------------------------------ edge cases of the mask and x
def _small_vae():
    bk = Backend("numpy", "float64", seed=0)
    model = VAE(6, hidden=(5,), latent=2, backend=bk)
    mask = np.ones((3, 6), dtype=bool)
    mask[:, 3:] = False  # the last three pixels missing
    return model, bk.uniform((3, 6)), mask


def test_a_mask_that_is_not_boolean_or_zero_one_is_refused():
    """A NaN or 0.5 in a float mask was cast to True (observed) without a word."""
    model, x, mask = _small_vae()
    for value in (np.nan, 0.5, 2.0, -1.0):
        bad = mask.astype(np.float64)
        bad[0, 4] = value
        for call in (
            lambda m: im.impute(model, x, m, n_iter=2),
            lambda m: im.impute_importance(model, x, m, k=4),
            lambda m: im.mean_fill(x, m, x[0]),
            lambda m: im.masked_mse(x, x, m),
        ):
            with pytest.raises(ValueError, match="mask must be boolean .True where observed."):
                call(bad)
    as_numbers = im.impute(model, x, mask.astype(np.int64), n_iter=2, sample=False)
    np.testing.assert_array_equal(as_numbers, im.impute(model, x, mask, n_iter=2, sample=False))


def test_nan_marks_missing_pixels_but_not_observed_ones():
    """NaN in the missing pixels is ignored by both imputations (the importance one took NaN *
    0 into log p(x_obs | z) and blamed the model's parameters); NaN or inf in an OBSERVED pixel
    is refused (it came back as NaN in the result)."""
    model, x, mask = _small_vae()
    holes = np.where(mask, x, np.nan)
    for call in (
        lambda a: im.impute(model, a, mask, n_iter=3, sample=False),
        lambda a: im.impute_importance(model, a, mask, k=8, backend=Backend(seed=1)),
    ):
        np.testing.assert_array_equal(call(holes), call(x))
        for value in (np.nan, np.inf):
            bad = x.copy()
            bad[1, 0] = value
            with pytest.raises(ValueError, match="x has 1 observed pixel that is NaN or inf"):
                call(bad)


def test_all_pixels_missing_or_none_missing():
    """None missing: x itself. All missing: the observed-pixel weights are all equal, so the
    importance estimate is the proposal's mean decoding; the iteration decodes from the fill."""
    model, x, _ = _small_vae()
    everything = np.ones_like(x, dtype=bool)
    for call in (
        lambda m: im.impute(model, x, m, n_iter=3),
        lambda m: im.impute_importance(model, x, m, k=8),
    ):
        np.testing.assert_array_equal(call(everything), x)
        filled = call(~everything)
        assert filled.shape == x.shape and np.isfinite(filled).all()
        assert ((filled > 0) & (filled < 1)).all()  # Bernoulli means
    mf = im.impute(model, x, ~everything, n_iter=1, sample=False, fill=0.25)
    np.testing.assert_array_equal(mf, model.reconstruct(np.full_like(x, 0.25)))


def test_counts_and_shapes_are_refused_in_one_line():
    model, x, mask = _small_vae()
    for kwargs, words in [
        ({"n_iter": 2.5}, r"n_iter must be >= 1 \(a whole number\), got 2.5"),
        ({"n_iter": "3"}, "n_iter must be >= 1"),
        ({"n_average": 0}, "n_average must be >= 1"),
    ]:
        with pytest.raises(ValueError, match=words):
            im.impute(model, x, mask, **kwargs)
    with pytest.raises(ValueError, match=r"k must be >= 1 \(a whole number\), got 2.5"):
        im.impute_importance(model, x, mask, k=2.5)
    with pytest.raises(ValueError, match="n must be >= 0"):
        im.make_mask(-1, (2, 2))
    with pytest.raises(ValueError, match=r"image_shape must be \(height, width\), got \(4,\)"):
        im.make_mask(2, (4,))
    with pytest.raises(ValueError, match=r"mean image must be a scalar, \(6,\) or \(3, 6\)"):
        im.mean_fill(x, mask, np.zeros(5))
    with pytest.raises(ValueError, match=r"mask must have the shape of x \(3, 6\), got \(6,\)"):
        im.masked_mse(x, x, mask[0])


def test_the_deterministic_iteration_converges_to_a_fixed_point(trained):
    """z = mu: x_cur -> where(m, x, decode(mu(x_cur))) settles (after 120 steps the step
    changes nothing visible): one more step from its answer (``fill`` = the answer) gives it
    back. (The step's size at 60 steps was 3e-5 with the kernels, 1.4e-4 without, the model
    trained differently by rounding; at 120 steps 1e-7 and 4e-6.)"""
    model, mean_image, x = trained
    mask = im.make_mask(50, (8, 8), "bottom-half")
    a = im.impute(model, x[:50], mask, n_iter=120, sample=False, fill=mean_image)
    b = im.impute(model, x[:50], mask, n_iter=121, sample=False, fill=mean_image)
    assert float(abs(a - b).max()) < 1e-4
    again = im.impute(model, x[:50], mask, n_iter=1, sample=False, fill=a)  # from a: one step
    np.testing.assert_allclose(again, b, atol=1e-6)


@pytest.mark.parametrize("fill", [np.nan, np.inf, [0.5, 0.5, 0.5, 0.5, 0.5, np.nan]])
def test_a_first_guess_that_is_not_finite_is_refused(fill):
    """A NaN fill made every imputed pixel NaN (impute) or blamed the model's parameters
    (impute_importance); it is one line naming the fill."""
    model, x, mask = _small_vae()
    with pytest.raises(ValueError, match="fill must be finite"):
        im.impute(model, x, mask, n_iter=2, fill=fill)
    with pytest.raises(ValueError, match="fill must be finite"):
        im.impute_importance(model, x, mask, k=4, fill=fill)
    with pytest.raises(ValueError, match="mean image must be finite"):
        im.mean_fill(x, mask, fill)
