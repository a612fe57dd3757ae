"""Float32 precision of the lab's estimators against float64 or exact references: the score
function at a tiny sigma, importance weights at large |log w| or past float32's range, and
log-weights that are -inf for every sample."""

import numpy as np  # numpy-boundary: host-side test arithmetic
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from scratchvae.backend import Backend
from scratchvae.lab import impute as im
from scratchvae.lab.estimators import (
    LinearGaussianToy,
    score_function_grads,
    toy_samples,
    vae_gradient_samples,
)
from scratchvae.models import VAE

F32 = np.float32
finite = {"allow_nan": False, "allow_infinity": False}


def _twins(seed=0, latent=2, features=6, **kw):
    """The same VAE in float32 and in float64 (float64 parameters = the float32 values)."""
    m32 = VAE(features, hidden=[5], latent=latent, backend=Backend("numpy", "float32", seed=seed),
              **kw)  # fmt: skip
    m64 = VAE(features, hidden=[5], latent=latent, backend=Backend("numpy", "float64"), **kw)
    return m32, m64


def _copy(m32, m64):
    m64.params.flat[...] = m32.params.flat.astype(np.float64)


def _set_logvar(model, logvar, mu_scale=1.0):
    """The encoder's last layer: logvar = ``logvar`` for every input, mu as it was (scaled)."""
    L = model.latent
    W, b = model.params["encoder.1.W"], model.params["encoder.1.b"]
    W[:, :L] *= mu_scale
    W[:, L:], b[L:] = 0, logvar


# ------------------------------------------------------------------ 1. the score at a tiny sigma
@given(
    mu=st.lists(st.floats(-5, 5, **finite), min_size=3, max_size=3),
    logvar=st.floats(-60, 2, **finite),
    seed=st.integers(0, 2**16),
)
def test_toy_score_function_in_float32_matches_the_exact_score(mu, logvar, seed):
    """(f - c) d log q/dmu = (f - c) eps / sigma and (f - c)(eps^2 - 1)/2, in float32 against
    float64 from the same eps. The score from z - mu lost every digit once sigma was below mu's
    last bit (logvar -40, mu 3: z == mu in float32, a score of 0 or of ulp(mu) / sigma^2)."""
    x, a, b = np.array([1.0, -0.5, 2.0]), np.array([1.5, 0.7, -1.0]), np.array([0.1, 0.2, 0.3])
    mu64 = np.asarray(mu, dtype=F32).astype(np.float64)
    r = x - a * mu64 - b
    assume(bool((np.abs(r) > 0.5).all()))  # f = -r^2/2 itself rounded well in float32
    lv64 = np.full(3, F32(logvar), dtype=np.float64)
    eps64 = np.random.default_rng(seed).standard_normal((4, 3)).astype(F32).astype(np.float64)
    toy32 = LinearGaussianToy(*(v.astype(F32) for v in (x, a, b)))
    got = toy_samples(toy32, mu64.astype(F32), lv64.astype(F32), eps64.astype(F32), "score")
    z64 = mu64 + np.exp(lv64 / 2) * eps64
    f64 = LinearGaussianToy(x, a, b).f(z64)
    want = {"mu": f64 * eps64 * np.exp(-lv64 / 2), "logvar": f64 * 0.5 * (eps64**2 - 1)}
    for name in want:
        assert got[name].dtype == F32
        np.testing.assert_allclose(got[name], want[name], rtol=1e-3, atol=0, err_msg=name)


@given(logvar=st.floats(-60, 4, **finite), seed=st.integers(0, 2**16))
def test_vae_score_function_in_float32_matches_float64(logvar, seed):
    """The VAE's score-function samples (f and the KL's exact gradient) in float32 against the
    same model, parameters and eps in float64, whatever q's sigma."""
    m32, m64 = _twins(seed)
    _set_logvar(m32, logvar)
    _copy(m32, m64)
    x = m32.backend.uniform((3, 6))
    eps = m32.backend.normal((5, 3, 2))
    for kl in ("analytic", "mc"):
        g32 = vae_gradient_samples(m32, x, 5, "score", kl=kl, eps=eps)
        g64 = vae_gradient_samples(m64, x.astype(np.float64), 5, "score", kl=kl,
                                   eps=eps.astype(np.float64))  # fmt: skip
        for name in ("mu", "logvar"):
            got, want = getattr(g32, name), getattr(g64, name)
            scale = float(np.abs(want).max())
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * scale, err_msg=f"{kl} {name}")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_score_from_z_alone_is_finite_at_z_equal_to_mu_however_small_sigma(dtype):
    """score_function_grads without eps forms the score from z - mu. At z == mu (sigma eps
    under mu's last bit) the true score is d/dmu = 0, d/dlogvar = -1/2; the old
    (z - mu) e^(-lv/2) was 0 * inf = NaN once e^(-lv/2) overflowed (logvar < -177.4 in
    float32, < -1419.6 in float64). Beside it, a z - mu of a few ulp: the float64 formula's
    value (inf where that overflows), and the scores with eps given agree with those from z."""
    xp_max = np.finfo(dtype).max
    lvs = np.array([-180.0, -400.0, -1000.0, -1500.0, -3000.0], dtype)
    mu = np.full(lvs.shape, 3.0, dtype)
    z = np.stack([mu, np.nextafter(mu, np.inf)])  # (2, L): z == mu, then z one ulp above
    f = np.array([2.0, -1.5], dtype)
    with np.errstate(over="ignore"):  # the score of the second row truly overflows
        gmu, glv = score_function_grads(f, z, mu, lvs)
    assert gmu.dtype == glv.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(gmu[0], 0.0)  # (z - mu) e^-lv at z == mu
    np.testing.assert_array_equal(glv[0], f[0] * -0.5)  # 0.5 ((z - mu)^2 e^-lv - 1)
    d = float(z[1, 0]) - 3.0  # one ulp of 3, exactly
    with np.errstate(over="ignore"):
        want_mu = f[1] * d * np.exp(-lvs.astype(np.float64))
        want_lv = f[1] * 0.5 * (d * d * np.exp(-lvs.astype(np.float64)) - 1)
    big = np.abs(want_mu) > xp_max  # past the dtype's range the score is +-inf, not NaN
    assert not np.isnan(gmu).any() and not np.isnan(glv).any(), (gmu, glv)
    np.testing.assert_array_equal(gmu[1][big], np.copysign(np.inf, want_mu[big]))
    np.testing.assert_allclose(gmu[1][~big], want_mu[~big], rtol=1e-5)
    small = np.abs(want_lv) <= xp_max
    np.testing.assert_allclose(glv[1][small], want_lv[small], rtol=1e-5)
    np.testing.assert_array_equal(glv[1][~small], np.copysign(np.inf, want_lv[~small]))
    # eps given: eps == 0 (the z == mu draw's own noise) was 0 * inf = NaN too
    with np.errstate(over="ignore"):
        emu, elv = score_function_grads(f, z, mu, lvs, eps=np.zeros_like(z))
    np.testing.assert_array_equal(emu, 0.0)
    np.testing.assert_array_equal(elv, np.broadcast_to(f[:, None] * -0.5, elv.shape))


# ------------------------------------------------------------------ 2. the importance weights
def _bernoulli_vae(logit, features=8, latent=2, seed=0):
    """A float32 Bernoulli VAE whose decoder emits the logit ``logit`` for every pixel,
    whatever z: log p(x_obs | z) = -n_obs softplus(logit) for an all-zero x, and every missing
    pixel's mean is sigmoid(logit) (1.0 in float32 past 17)."""
    model = VAE(features, hidden=[5], latent=latent, backend=Backend("numpy", "float32", seed=seed))
    model.params["decoder.1.W"][...] = 0
    model.params["decoder.1.b"][...] = logit
    return model


def test_the_score_takes_a_logvar_of_any_number_type():
    """The capped root precision took finfo of logvar's dtype: an integer logvar raised
    "not inexact" and a Python float an AttributeError, where both worked before (review)."""
    from scratchvae.lab.estimators import score_function_grads

    f, z, mu = np.ones(3), np.full((3, 2), 0.5), np.zeros(2)
    expected = score_function_grads(f, z, mu, np.zeros(2))
    for logvar in (np.zeros(2, dtype=np.int64), 0.0, 0):
        got = score_function_grads(f, z, mu, logvar)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])


@given(logit=st.floats(1e3, 1e6, **finite), seed=st.integers(0, 2**16))
def test_importance_weights_sum_to_one_at_a_large_log_weight(logit, seed):
    """The estimate is a convex combination of the decoded means: with every missing pixel's
    mean exactly 1, it is sum_k w~_k, which must be 1 within K roundings. Normalised by
    exp(log w - logsumexp log w) it was off by logsumexp's rounding at |log w| (float32,
    |log w| 4e6: ulp 0.25, up to 13%): probabilities above 1."""
    model = _bernoulli_vae(logit, seed=seed)
    x = np.zeros((3, 8), dtype=F32)
    mask = np.zeros((3, 8), dtype=bool)
    mask[:, :4] = True  # 4 observed pixels: log w about -4 logit
    filled = im.impute_importance(model, x, mask, k=64, backend=Backend("numpy", "float32", seed))
    np.testing.assert_allclose(filled[:, 4:], 1.0, rtol=0, atol=64 * np.finfo(F32).eps)


def test_underflowed_importance_weights_do_not_change_the_estimate():
    """float32 weights that underflow to 0 (log w more than 103 nats under the example's
    largest) against float64, which keeps them: the estimates agree to float32's rounding of
    the kept ones (impute._softmax_over_samples says why)."""
    m32, m64 = _twins(3, latent=2, features=8)
    m32.params["decoder.1.W"][...] *= 200  # a sharp likelihood: log w spread over 100s of nats
    _copy(m32, m64)
    x = (m32.backend.uniform((6, 8)) > 0.5).astype(F32)
    mask = np.zeros((6, 8), dtype=bool)
    mask[:, ::2] = True
    eps = m32.backend.normal((200, 6, 2))
    spread = {}
    for name, m, xx, e in (("32", m32, x, eps), ("64", m64, x.astype(np.float64),
                                                 eps.astype(np.float64))):  # fmt: skip
        mu, logvar = m.encode(np.where(mask, xx, 0.5))
        z = mu + np.exp(0.5 * logvar) * e
        out = m.decoder.forward(m.params, z.reshape(-1, 2))[0].reshape(200, 6, -1)
        log_w = m.lik.log_prob(out * mask, xx * mask) - 0.5 * (z**2).sum(-1)
        log_w = log_w + 0.5 * ((e**2).sum(-1) + logvar.sum(-1))
        spread[name] = log_w.max(0) - log_w
    underflowed = (np.exp(-spread["32"]).astype(F32) == 0) & (np.exp(-spread["64"]) > 0)
    assert underflowed.mean() > 0.1, underflowed.mean()  # the case this test is about
    got = im._conditional_mean(m32, x, mask, np.where(mask, x, F32(0.5)), eps)
    x64 = x.astype(np.float64)
    want = im._conditional_mean(m64, x64, mask, np.where(mask, x64, 0.5), eps.astype(np.float64))
    # the kept weights are float32's roundings of float64's (measured: 3e-7 apart at most)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


# ------------------------------------------------------------------ 3. every sample impossible
def test_every_log_weight_minus_inf_is_reachable_and_an_error():
    """Reachable from the public API with finite parameters: an encoder whose logvar is 100
    draws z of about e^50 eps = 5e21 eps, whose z^2 overflows float32 (3.4e38): log p(z) = -inf
    for every sample of every example. (So can a Bernoulli log-likelihood, a sum of D terms of
    up to |logit| each, and a Gaussian one with a learned log-variance under -88.7, e^-logvar
    = inf.) The weights are 0/0: imputation raised nothing and returned NaN; now one clear
    ValueError."""
    model = _bernoulli_vae(0.0, seed=1)
    _set_logvar(model, 100.0)
    assert all(bool(np.isfinite(model.params[n]).all()) for n in model.params)
    x = np.zeros((2, 8), dtype=F32)
    mask = np.zeros((2, 8), dtype=bool)
    mask[:, :4] = True
    with (
        np.errstate(over="ignore"),
        pytest.raises(ValueError, match=r"2 of 2 examples .*every one of its 16 log-weights -inf"),
    ):
        im.impute_importance(model, x, mask, k=16, backend=Backend("numpy", "float32", seed=0))


# ------------------------------------------------------------------ the IWAE step (scratchvae/ops)
# The lab's IWAE gradients (snr.py, trace.py) are the training step's: ops/iwae.py, which this
# file does not change. These tests say where it stands.
def _iwae_twins(estimator, logvar, k=8, seed=0):
    m32, m64 = _twins(seed, objective="iwae", k=k, estimator=estimator)
    _set_logvar(m32, logvar)
    _copy(m32, m64)
    x = m32.backend.uniform((3, 6))
    eps = m32.backend.normal((k, 3, 2))
    g32 = m32.loss_and_grads(x, {"eps": eps})[1].copy()
    g64 = m64.loss_and_grads(x.astype(np.float64), {"eps": eps.astype(np.float64)})[1].copy()
    return g32, g64


def _dmu(grads, L=2):
    return grads["encoder.1.b"][:L]  # dL/dmu summed over the batch (the bias of mu)


@pytest.mark.parametrize("logvar", [-30.0, -40.0])
def test_pathwise_iwae_dmu_in_float32_matches_float64_at_a_tiny_sigma(logvar):
    """dL/dmu of the pathwise IWAE step is sum_k w~_k (d log p(x|z_k)/dz - z_k): of order 1
    whatever sigma. Before iw_latent_backward stopped forming the path's -eps/sigma and the
    score's +eps/sigma (each 5e8 at logvar -40), float32 missed float64's by 4e-6 at logvar
    -10, 6e-4 at -20, 0.6 at -30, 49 at -40 on gradients of about 3."""
    g32, g64 = _iwae_twins("pathwise", logvar)
    want = _dmu(g64)
    np.testing.assert_allclose(_dmu(g32), want, rtol=0, atol=1e-4 * float(np.abs(want).max()))


@pytest.mark.parametrize("estimator", ["pathwise", "stl", "dreg"])
def test_iwae_weights_cut_at_eps_change_no_gradient_beyond_rounding(estimator):
    """iw_bound_forward stores a weight under eps times its example's largest as 0 (the
    subnormal products it avoids made the step 3-5x slower). Each dropped term of
    sum_k w~_k g_k is under eps w~_max |g_k| (dreg's w~_k^2: under eps^2 w~_max^2 |g_k|), so the
    cut moves the sum by less than its own rounding (about K eps w~_max |g|) unless a dropped
    sample's gradient is many times larger than the largest-weight one's; and the kept weights,
    >= eps / K, keep dreg's w~^2 >= eps^2 / K^2 normal (1e-14 / K^2 in float32). Here a sharp
    likelihood puts many weights under the cut in float32 (eps 1.2e-7) and above it in float64
    (2.2e-16): the float32 gradients agree with float64's to float32's rounding."""
    m32, m64 = _twins(5, objective="iwae", k=50, estimator=estimator)
    m32.params["decoder.1.W"][...] *= 30
    _copy(m32, m64)
    x = (m32.backend.uniform((4, 6)) > 0.5).astype(F32)
    eps = m32.backend.normal((50, 4, 2))
    (_, c32), (_, c64) = (
        m.forward(xx, {"eps": e})
        for m, xx, e in ((m32, x, eps), (m64, x.astype(np.float64), eps.astype(np.float64)))
    )
    w32, w64 = c32.bound.weights, c64.bound.weights
    cut = (w32 == 0) & (w64 > 0)
    assert cut.mean() > 0.1, cut.mean()  # the case this test is about
    g32 = m32.loss_and_grads(x, {"eps": eps})[1].copy()
    g64 = m64.loss_and_grads(x.astype(np.float64), {"eps": eps.astype(np.float64)})[1].copy()
    for name in g64:
        scale = float(np.abs(g64[name]).max())
        np.testing.assert_allclose(g32[name], g64[name], rtol=0, atol=1e-5 * scale, err_msg=name)


def test_iwae_step_with_every_log_weight_minus_inf_is_a_defined_inf_loss():
    """Reachable (encoder logvar 100: z^2 overflows float32, log p(z) = -inf for every sample).
    The IWAE step's bound is logsumexp = -inf, a loss of +inf, which the trainer reports as
    divergence at the epoch's end; the weights, 0/0 = NaN from exp(log w - max), are stored as
    0 by iw_bound_forward's cut (NaN >= cut is false), so the gradient holds no NaN and the
    trace prints no weights rather than NaN."""
    from scratchvae.lab.trace import format_weights, trace_step

    for estimator in ("pathwise", "stl", "dreg"):
        m32, _ = _twins(0, objective="iwae", k=4, estimator=estimator)
        _set_logvar(m32, 100.0)
        x = m32.backend.uniform((3, 6))
        with np.errstate(over="ignore", invalid="ignore"):
            terms, grads = m32.loss_and_grads(x)
            rows = trace_step(m32, x)
        assert float(terms["loss"]) == np.inf
        assert not np.isnan(grads.flat).any(), estimator
        text = format_weights(rows)
        assert text.count("none: largest log-weight not finite") == 3 and "nan" not in text, text


class _CraftedNoise(Backend):
    """A float32 backend whose normal draws are ``eps`` (the importance sampler's noise)."""

    def __init__(self, eps):
        super().__init__("numpy", "float32", seed=0)
        self.eps = np.asarray(eps, dtype=F32)

    def normal(self, shape):
        assert tuple(shape) == self.eps.shape, (shape, self.eps.shape)
        return self.eps.copy()


def _gaussian_learned_vae(logvar):
    """A float32 VAE whose decoder emits mean 0 and log-variance ``logvar`` for every pixel."""
    model = VAE(4, hidden=[5], latent=2, likelihood="gaussian-learned",
                backend=Backend("numpy", "float32", seed=0))  # fmt: skip
    model.params["decoder.1.W"][...] = 0
    model.params["decoder.1.b"][:4], model.params["decoder.1.b"][4:] = 0, logvar
    return model


def test_a_log_weight_of_plus_inf_is_an_error_in_imputation():
    """log q(z|x) = -0.5 sum (eps^2 + logvar + log 2 pi): with q's logvar -80 and one draw's
    eps 2e19, eps^2 overflows float32 while z = mu + 4e-18 eps stays near mu, so that draw's
    log-weight is +inf. exp(log w - max) was inf - inf = NaN: the estimate NaN, no error. A
    +inf weight is the density overflowing, not a sample worth all the mass: one ValueError,
    as for every log-weight -inf."""
    model = _bernoulli_vae(0.0, seed=1)
    _set_logvar(model, -80.0)
    eps = np.zeros((4, 2, 2), dtype=F32)
    eps[1, 0] = 2e19  # example 0, sample 1
    x, mask = np.zeros((2, 8), dtype=F32), np.zeros((2, 8), dtype=bool)
    mask[:, :4] = True
    with np.errstate(over="ignore", invalid="ignore"):
        with pytest.raises(ValueError, match=r"1 of 2 examples.*\+inf"):
            im.impute_importance(model, x, mask, k=4, backend=_CraftedNoise(eps))


def test_a_nan_log_weight_is_an_error_in_imputation():
    """Reachable with finite parameters: a learned-variance Gaussian decoder with log-variance
    -3e38 at an observed pixel of 1 where the mean is 0: ((x - m)/sigma)^2 = +inf beside the
    log-variances' sum -inf, so the log-likelihood is NaN (not the 0 * inf that
    ops/losses.py formed at x == m before). The estimate was NaN, silently; now one ValueError."""
    model = _gaussian_learned_vae(-3e38)
    x, mask = np.zeros((3, 4), dtype=F32), np.ones((3, 4), dtype=bool)
    x[:, 1] = 1.0
    mask[:, 2:] = False
    with np.errstate(over="ignore", invalid="ignore"):
        with pytest.raises(ValueError, match=r"3 of 3 examples.*NaN"):
            im.impute_importance(model, x, mask, k=5, backend=Backend("numpy", "float32", seed=0))
