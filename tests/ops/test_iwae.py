"""The multi-sample objectives (scratchvae/ops/iwae.py and the VAE's k-sample step): gradient
checks of the IWAE bound, the k draws and the whole model against central differences (float64,
rtol 1e-6), k = 1 against today's ELBO step, and the estimators' means against each other."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchvae.backend import Backend
from scratchvae.gradcheck import assert_close, numerical_param_grads, numerical_vjp
from scratchvae.models import VAE
from scratchvae.ops import iwae
from scratchvae.ops.reparam import repeat_backward, repeat_forward

seeds = st.integers(0, 2**32 - 1)


# ------------------------------------------------------------------ the bound
@given(
    K=st.integers(1, 7), B=st.integers(1, 5), seed=seeds, spread=st.sampled_from([0.1, 3.0, 30.0])
)
@settings(deadline=None)
def test_bound_backward_is_its_gradient(K, B, seed, spread):
    rng = np.random.default_rng(seed)
    log_w = spread * rng.standard_normal((K, B))
    for combine in iwae.COMBINE:
        for reduce, dbound in (("mean", rng.standard_normal()), ("none", rng.standard_normal(B))):
            _, cache = iwae.iw_bound_forward(log_w, combine, reduce)
            got = iwae.iw_bound_backward(cache, dbound)
            want = numerical_vjp(
                lambda a: iwae.iw_bound_forward(a, combine, reduce)[0], log_w, dbound
            )
            assert_close(
                got, want, rtol=1e-6, atol=1e-7, name=f"{combine}/{reduce}"
            )  # |log w| ~ 60


def test_bound_values_and_weights():
    log_w = np.log(np.array([[1.0, 2.0], [3.0, 6.0]]))  # w (K=2, B=2)
    bound, cache = iwae.iw_bound_forward(log_w, "logmeanexp", "none")
    np.testing.assert_allclose(bound, np.log([2.0, 4.0]), rtol=1e-15)  # log mean w
    np.testing.assert_allclose(cache.weights, [[0.25, 0.25], [0.75, 0.75]], rtol=1e-15)
    bound, cache = iwae.iw_bound_forward(log_w, "mean", "mean")
    assert bound == pytest.approx(np.log([1, 2, 3, 6]).mean()) and np.all(cache.weights == 0.5)
    assert iwae.iw_bound_forward(np.full((3, 1), -1e4), "logmeanexp", "none")[0][0] == -1e4
    with pytest.raises(ValueError, match="unknown combination"):
        iwae.iw_bound_forward(log_w, "max")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_an_example_whose_largest_log_weight_is_not_finite_has_no_weights(dtype):
    """Column 0: a log w +inf among finite ones; 1: every log w -inf; 2: a NaN; 3: finite.
    The bound is the column's +inf, -inf, NaN; its weights (0/0 or inf/inf) are stored as 0,
    never NaN, and the other examples' are untouched (iw_bound_forward's rule, the one
    why_not_finite describes for the lab and evaluation)."""
    inf, nan = np.inf, np.nan
    log_w = np.array([[inf, -inf, nan, 0.0], [1.0, -inf, 1.0, np.log(3.0)]], dtype=dtype)
    with np.errstate(invalid="ignore"):
        bound, cache = iwae.iw_bound_forward(log_w, "logmeanexp", "none")
    assert bound[0] == inf and bound[1] == -inf and np.isnan(bound[2]), bound
    assert not np.isnan(cache.weights).any() and not cache.weights[:, :3].any()
    np.testing.assert_allclose(cache.weights[:, 3], [0.25, 0.75], rtol=1e-6)
    why = iwae.why_not_finite(log_w.max(axis=0), 2)
    assert why.startswith("3 of 4 examples have no importance weights (1 with every one of its 2")
    assert "1 with a log-weight +inf; 1 with a log-weight NaN)" in why
    assert iwae.why_not_finite(bound[3:], 2) == ""


def test_an_iwae_step_with_a_log_weight_of_plus_inf_is_a_minus_inf_loss_without_nan():
    """Through the public step with the noise given (VAE.loss_and_grads(x, {"eps": ...})): q's
    logvar -80 and one draw's eps 2e19 overflow eps^2 in log q(z|x) (z = mu + 4e-18 eps stays
    finite), so that draw's log w is +inf. The bound is +inf, the loss -inf (the trainer stops:
    divergence); the example's weights are 0, so no NaN reaches the gradients."""
    for estimator in iwae.ESTIMATORS:
        model = VAE(6, hidden=[5], latent=2, objective="iwae", k=4, estimator=estimator,
                    backend=Backend("numpy", "float32", seed=0))  # fmt: skip
        model.params["encoder.1.W"][:, 2:], model.params["encoder.1.b"][2:] = 0, -80.0
        x = model.backend.uniform((3, 6))
        eps = model.backend.normal((4, 3, 2))
        eps[2, 1] = 2e19  # example 1, sample 2
        with np.errstate(over="ignore", invalid="ignore"):
            terms, grads = model.loss_and_grads(x, {"eps": eps})
            _, cache = model.forward(x, {"eps": eps})
        assert float(terms["loss"]) == -np.inf, estimator
        assert not cache.bound.weights[:, 1].any() and cache.bound.weights[:, [0, 2]].all()
        assert np.isfinite(grads.flat).all(), estimator


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("K", [1, 7, 100_000])
@pytest.mark.parametrize("center", [0.0, -1e4, 1e4, -1e6, -1e30])
def test_bound_and_weights_at_any_magnitude_and_k(dtype, K, center):
    """log w of any size (a Gaussian likelihood with a small std gives |log w| ~ 1e6 early in
    training), K up to 1e5, float32 and float64: a finite bound equal to the float64 log-mean-
    exp of the same inputs to the dtype's rounding at their magnitude, and weights equal to
    their exact softmax to the rounding of a sum of K terms. (The weights were
    exp(log w - logsumexp), whose rounded sum made them wrong by a common factor: in float32
    by 3e-4 at |log w| = 1e4, 3% at 1e6, and K-fold at 1e30, where log K is below the last
    bit.) A sum of K terms along the sample axis is rounded by up to about sqrt(K) eps."""
    rng = np.random.default_rng(K)
    log_w = (center + 5.0 * rng.standard_normal((K, 3))).astype(dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        bound, cache = iwae.iw_bound_forward(log_w, "logmeanexp", "none")
    exact = log_w.astype(np.float64)
    top = exact.max(axis=0)
    want_w = np.exp(exact - top) / np.exp(exact - top).sum(axis=0)
    want_bound = top + np.log(np.exp(exact - top).sum(axis=0)) - np.log(K)
    eps, sum_err = np.finfo(dtype).eps, 4 * np.finfo(dtype).eps * (np.sqrt(K) + 1)
    assert bound.dtype == cache.weights.dtype == np.dtype(dtype)
    assert np.all(np.isfinite(bound)) and np.all(np.isfinite(cache.weights))
    tol = 4 * eps * (np.abs(want_bound) + np.log(K) + 1) + sum_err  # rounding at its magnitude
    np.testing.assert_array_less(np.abs(bound - want_bound), tol)
    kept = cache.weights > 0  # weights under eps times their largest are stored as 0
    assert np.all((want_w < 1.01 * eps * want_w.max(axis=0))[~kept])
    rel = np.abs(cache.weights - want_w)[kept] / want_w[kept]
    assert rel.max() < sum_err + 4 * eps, rel.max()
    kept_mass = np.where(kept, want_w, 0).sum(axis=0)  # the cut ones: under K eps in all
    np.testing.assert_allclose(cache.weights.sum(axis=0, dtype=np.float64), kept_mass, rtol=sum_err)


# ------------------------------------------------------------------ the k draws
@given(K=st.integers(1, 4), B=st.integers(1, 4), L=st.integers(1, 4), seed=seeds)
@settings(deadline=None)
def test_draws_pathwise_backward_is_the_gradient(K, B, L, seed):
    """pathwise: the exact gradient of sum(z * dz) + sum(log_ratio * dratio) in h, eps fixed."""
    rng = np.random.default_rng(seed)
    h, eps = rng.standard_normal((B, 2 * L)), rng.standard_normal((K, B, L))
    dz, dratio = rng.standard_normal((K, B, L)), rng.standard_normal((K, B))
    _, cache = iwae.iw_latent_forward(h, eps)
    got = iwae.iw_latent_backward(cache, dz, dratio, "pathwise")

    def objective(hh):
        (z, ratio), _ = iwae.iw_latent_forward(hh, eps)
        return (z * dz).sum() + (ratio * dratio).sum()

    want = numerical_vjp(lambda hh: np.asarray(objective(hh)), h, np.asarray(1.0))
    assert_close(got, want, rtol=1e-6, atol=1e-9)


def test_stl_is_pathwise_without_the_score_and_dreg_reweights_the_path():
    rng = np.random.default_rng(1)
    K, B, L = 3, 2, 2
    h, eps = rng.standard_normal((B, 2 * L)), rng.standard_normal((K, B, L))
    dz, dratio = rng.standard_normal((K, B, L)), rng.standard_normal((K, B))
    _, cache = iwae.iw_latent_forward(h, eps)
    path = iwae.iw_latent_backward(cache, dz, dratio, "pathwise")
    stl = iwae.iw_latent_backward(cache, dz, dratio, "stl")
    sigma = cache.sigma
    score_mu = -(dratio[..., None] * eps).sum(0) / sigma
    score_lv = -(dratio[..., None] * 0.5 * (eps**2 - 1)).sum(0)
    np.testing.assert_allclose(path - stl, np.concatenate([score_mu, score_lv], 1), atol=1e-12)
    ones = np.ones((K, B))
    np.testing.assert_array_equal(iwae.iw_latent_backward(cache, dz, dratio, "dreg", ones), stl)
    w = rng.dirichlet(np.ones(K), B).T  # (K, B) normalised weights
    for beta, factor in ((1.0, w), (0.0, ones), (0.3, 0.7 + 0.3 * w)):  # 1 - beta (1 - w~)
        dreg = iwae.iw_latent_backward(cache, dz, dratio, "dreg", w, beta)
        want = iwae.iw_latent_backward(cache, dz * factor[..., None], dratio * factor, "stl")
        np.testing.assert_allclose(dreg, want, rtol=1e-13, err_msg=f"beta {beta}")
    with pytest.raises(ValueError, match="unknown estimator"):
        iwae.iw_latent_backward(cache, dz, dratio, "reinforce")


@given(
    K=st.integers(1, 4),
    B=st.integers(1, 4),
    L=st.integers(1, 4),
    seed=seeds,
    estimator=st.sampled_from(["stl", "dreg"]),
    beta=st.sampled_from([0.0, 0.3, 1.0, 2.5]),
)
@settings(deadline=None)
def test_stl_and_dreg_backward_are_gradients_of_their_surrogates(K, B, L, seed, estimator, beta):
    """stl: the gradient with q's own parameters held where they are (log q(z | mu0, lv0),
    only the path z = mu + sigma eps moves); dreg: the same with each sample's two upstream
    gradients weighted by 1 - beta (1 - w~), the weights held too. Central differences of
    that surrogate in h, written here from the definitions (float64, rtol 1e-6)."""
    rng = np.random.default_rng(seed)
    h, eps = rng.standard_normal((B, 2 * L)), rng.standard_normal((K, B, L))
    dz, dratio = rng.standard_normal((K, B, L)), rng.standard_normal((K, B))
    w = rng.dirichlet(np.ones(K), B).T  # (K, B) normalised weights
    factor = 1 - beta * (1 - w) if estimator == "dreg" else np.ones((K, B))
    _, cache = iwae.iw_latent_forward(h, eps)
    got = iwae.iw_latent_backward(cache, dz, dratio, estimator, w, beta)
    mu0, lv0 = h[:, :L].copy(), h[:, L:].copy()  # q's parameters, held

    def surrogate(hh):
        z = hh[:, :L] + np.exp(0.5 * hh[:, L:]) * eps  # (K, B, L)
        log_p = -0.5 * (z**2 + np.log(2 * np.pi)).sum(-1)
        log_q = -0.5 * ((z - mu0) ** 2 * np.exp(-lv0) + lv0 + np.log(2 * np.pi)).sum(-1)
        return (factor[..., None] * z * dz).sum() + (factor * (log_p - log_q) * dratio).sum()

    want = numerical_vjp(lambda hh: np.asarray(surrogate(hh)), h, np.asarray(1.0))
    assert_close(got, want, rtol=1e-6, atol=1e-8, name=f"{estimator} beta {beta}")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_log_ratio_is_exact_however_small_sigma(dtype):
    """log q(z|x) from eps, not from (z - mu)^2 / sigma^2: z - mu keeps none of sigma eps's
    digits once sigma is below mu's last bit, and exp(-logvar) overflows at logvar -100."""
    rng = np.random.default_rng(0)
    L, mu = 20, 3.0
    eps = rng.standard_normal((4, 1, L))
    for logvar in (-30.0, -40.0, -100.0):
        h = np.concatenate([np.full((1, L), mu), np.full((1, L), logvar)], 1)
        (z, ratio), _ = iwae.iw_latent_forward(h.astype(dtype), eps.astype(dtype))
        z64 = mu + np.exp(logvar / 2) * eps  # float64: log p(z) - log q(z | x), log q from eps
        want = -0.5 * (z64**2).sum(-1) + 0.5 * ((eps**2).sum(-1) + L * logvar)
        np.testing.assert_allclose(ratio, want, rtol=1e-5 if dtype == "float32" else 1e-12)


def test_repeat_backward_sums_the_copies():
    a, d = np.arange(6.0).reshape(2, 3), np.arange(12.0).reshape(4, 3)
    tiled, cache = repeat_forward(a, 2)
    np.testing.assert_array_equal(tiled, np.concatenate([a, a]))
    np.testing.assert_array_equal(repeat_backward(cache, d), d[:2] + d[2:])
    assert repeat_forward(a, 1)[0] is a and repeat_backward(repeat_forward(a, 1)[1], a) is a


# ------------------------------------------------------------------ whole models
def _vae(objective="iwae", k=4, estimator="pathwise", likelihood="bernoulli", seed=0, **kw):
    bk = Backend("numpy", "float64", seed=seed)
    model = VAE(6, hidden=[5], latent=2, objective=objective, k=k, estimator=estimator,
                likelihood=likelihood, backend=bk, **kw)  # fmt: skip
    return model, bk.uniform((3, 6))


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "gaussian-learned"])
@pytest.mark.parametrize("objective, k", [("iwae", 4), ("elbo", 3), ("iwae", 1)])
def test_whole_model_gradient_of_the_bound(objective, k, likelihood, kernels):
    """The pathwise gradient is the gradient of the loss (-L_k, or -ELBO over k draws) with
    eps fixed: every parameter, against central differences."""
    model, x = _vae(objective, k, likelihood=likelihood, beta=0.7, dropout=0.2)
    noise = model.draw_noise(3)
    terms, grads = model.loss_and_grads(x, noise, kl_weight=0.4)
    grads = grads.copy()
    want = numerical_param_grads(
        lambda: model.forward(x, noise, True, kl_weight=0.4)[0]["loss"], model.params
    )
    for name in grads:
        assert_close(grads[name], want[name], rtol=1e-6, atol=1e-8, name=name)


def test_k1_iwae_and_k1_elbo_are_todays_step():
    """k = 1: the IWAE objective and the ELBO objective take the one-sample step itself."""
    plain, x = _vae("elbo", 1)
    noise = plain.draw_noise(3)
    want_terms, want = plain.loss_and_grads(x, noise)
    want = want.copy()
    for objective in ("iwae", "elbo"):
        model, _ = _vae(objective, 1)
        model.params.flat[...] = plain.params.flat
        terms, grads = model.loss_and_grads(x, noise)
        assert float(terms["loss"]) == float(want_terms["loss"])
        np.testing.assert_array_equal(grads.flat, np.concatenate([want[n].ravel() for n in want]))
    assert model.config == plain.config  # the defaults are not written: old files still load


@pytest.mark.parametrize("beta", [1.0, 0.4])
def test_k1_dreg_and_iwae_stl_are_the_elbos_stl_step(beta):
    """k = 1: the one weight is w~ = 1, so DReG's factor 1 - beta (1 - w~) is 1 and the bound
    is the ELBO's one log-weight: the IWAE family's estimators are the VAE's STL step, for the
    same noise (the pathwise ones: test_k1_iwae_and_k1_elbo_are_todays_step)."""
    base, x = _vae("elbo", 1, "stl", beta=beta)
    noise = base.draw_noise(3)
    want_terms, want = base.loss_and_grads(x, noise)
    want = want.flat.copy()
    for objective, estimator in (("iwae", "stl"), ("iwae", "dreg")):
        model, _ = _vae(objective, 1, estimator, beta=beta)
        model.params.flat[...] = base.params.flat
        terms, grads = model.loss_and_grads(x, noise)
        assert float(terms["loss"]) == pytest.approx(float(want_terms["loss"]), rel=1e-15)
        np.testing.assert_allclose(grads.flat, want, rtol=1e-13, atol=1e-15, err_msg=estimator)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="dreg estimator needs the iwae"):
        _vae("elbo", 2, "dreg")
    with pytest.raises(ValueError, match="objective must be one of"):
        _vae("cubo", 2)
    for k in (0, 2.7):  # 2.7 draws: refused, not truncated to 2
        with pytest.raises(ValueError, match=r"k must be >= 1 \(a whole number\)"):
            _vae("iwae", k)
    assert _vae("iwae", 5, "dreg")[0].config["estimator"] == "dreg"


# ------------------------------------------------------------------ the estimators' means
def _encoder_gradients(model, x, n):
    """n per-draw gradients of the encoder's parameters (one flat row each)."""
    names = [name for name in model.params if name.startswith("encoder.")]
    rows = []
    for _ in range(n):
        _, grads = model.loss_and_grads(x, model.draw_noise(x.shape[0]))
        rows.append(np.concatenate([grads[name].ravel() for name in names]))
    return np.array(rows)


def _max_z(a, b):
    """The largest |mean difference| / standard error over the parameters."""
    se = np.sqrt(a.var(0, ddof=1) / len(a) + b.var(0, ddof=1) / len(b))
    return float(np.max(np.abs(a.mean(0) - b.mean(0)) / np.maximum(se, 1e-12)))


@pytest.mark.parametrize(
    "objective, k, estimator, beta, unbiased",
    [
        ("elbo", 1, "stl", 1.0, True),  # STL: unbiased for the ELBO
        ("elbo", 3, "stl", 0.5, True),  # ... and for k single-sample ELBOs, any KL weight
        ("iwae", 5, "dreg", 1.0, True),  # DReG: unbiased for IWAE
        ("iwae", 5, "dreg", 0.3, True),  # ... with a KL weight: the path by 1 - beta (1 - w~)
        ("iwae", 5, "dreg", 3.0, True),
        ("iwae", 5, "stl", 1.0, False),  # STL for IWAE, DReG with the weights not squared: biased
    ],
)
def test_estimators_mean_against_the_pathwise_gradient(objective, k, estimator, beta, unbiased):
    """Fixed seeds, many draws: the encoder gradient's mean agrees with the pathwise estimator's
    within 6 standard errors for every parameter, or (a biased variant) does not."""
    model, x = _vae(objective, k, "pathwise", seed=3, beta=beta)
    n = 3000
    ref = _encoder_gradients(model, x, n)
    other, _ = _vae(objective, k, estimator, seed=4, beta=beta)
    other.params.flat[...] = model.params.flat
    z = _max_z(_encoder_gradients(other, x, n), ref)
    assert (z < 6) if unbiased else (z > 6), z


def test_stl_at_k1_takes_the_log_weights_path_and_warm_up_reaches_dreg():
    """stl (and dreg) at k = 1 draw eps (1, B, L) and leave the score out: not the pathwise
    step's gradient for the same noise. A KL weight of 0 (warm-up's first epoch) makes DReG
    the STL step (1 - beta (1 - w~) = 1)."""
    stl, x = _vae("elbo", 1, "stl")
    noise = stl.draw_noise(3)
    assert noise["eps"].shape == (1, 3, 2) and stl.draw_noise(3, train=False)["eps"].ndim == 2
    path, _ = _vae("elbo", 1, "pathwise")
    terms, grads = stl.loss_and_grads(x, noise)
    want_terms, want = path.loss_and_grads(x, {"eps": noise["eps"][0]})
    assert not np.allclose(grads.flat, want.flat)
    decoder = [n for n in grads if n.startswith("decoder.")]
    for name in decoder:  # the decoder's gradient is the same
        np.testing.assert_allclose(grads[name], want[name], rtol=1e-12, atol=1e-14)
    dreg, _ = _vae("iwae", 4, "dreg")
    stl4, _ = _vae("iwae", 4, "stl")
    noise = dreg.draw_noise(3)
    g_dreg = dreg.loss_and_grads(x, noise, kl_weight=0.0)[1].flat.copy()
    np.testing.assert_allclose(g_dreg, stl4.loss_and_grads(x, noise, kl_weight=0.0)[1].flat)


@pytest.mark.parametrize("estimator", ["stl", "dreg"])
def test_stl_and_dreg_dlogvar_is_finite_where_sigma_underflows(estimator):
    """At logvar -250, sigma = e^-125 is 0 in float32. dz_total = path + dratio eps / sigma,
    then times eps sigma / 2, was inf * 0 = NaN; the true dL/dlogvar is about
    sum_k dratio eps^2 / 2 (the path's term, times sigma, vanishes). float32 against the same
    formula in float64, where sigma is 5e-55."""
    rng = np.random.default_rng(3)
    K, B, L = 4, 3, 2
    h = np.concatenate([rng.standard_normal((B, L)), np.full((B, L), -250.0)], axis=1)
    eps = rng.standard_normal((K, B, L))
    dz, dratio = rng.standard_normal((K, B, L)), rng.standard_normal((K, B))
    w = rng.dirichlet(np.ones(K), B).T  # (K, B)
    got = {}
    for dtype in ("float32", "float64"):
        args = [a.astype(dtype) for a in (h, eps, dz, dratio, w)]
        _, cache = iwae.iw_latent_forward(args[0], args[1])
        with np.errstate(divide="ignore"):  # dL/dmu: sum_k dratio eps / sigma overflows, truly
            got[dtype] = iwae.iw_latent_backward(cache, args[2], args[3], estimator, args[4], 0.5)
    assert float(np.exp(np.float32(-125.0))) == 0.0
    dlogvar32, dlogvar64 = got["float32"][:, L:], got["float64"][:, L:]
    assert np.isfinite(dlogvar32).all(), dlogvar32
    np.testing.assert_allclose(dlogvar32, dlogvar64, rtol=1e-5)


@pytest.mark.parametrize("estimator", ["stl", "dreg"])
def test_stl_and_dreg_dmu_is_the_path_where_sigma_underflows_and_dratio_is_zero(estimator):
    """dratio 0 (a KL weight of 0) and sigma 0 (logvar -250, float32): dL/dmu's score term
    (sum_k dratio eps) / sigma was 0 / 0 = NaN; it is 0, so dL/dmu = sum_k dz."""
    rng = np.random.default_rng(4)
    K, B, L = 3, 2, 2
    h = np.concatenate([rng.standard_normal((B, L)), np.full((B, L), -250.0)], axis=1)
    h, eps = h.astype(np.float32), rng.standard_normal((K, B, L)).astype(np.float32)
    dz, dratio = rng.standard_normal((K, B, L)).astype(np.float32), np.zeros((K, B), np.float32)
    w = rng.dirichlet(np.ones(K), B).T.astype(np.float32)
    _, cache = iwae.iw_latent_forward(h, eps)
    got = iwae.iw_latent_backward(cache, dz, dratio, estimator, w, 1.0)
    factor = w[..., None] if estimator == "dreg" else 1.0
    np.testing.assert_allclose(got[:, :L], (dz * factor).sum(axis=0), rtol=1e-6)
    assert np.isfinite(got).all()
