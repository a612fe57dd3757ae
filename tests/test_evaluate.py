"""Tests for scratchvae.evaluate: the log-densities it reads (scratchvae.ops.losses and the
decoder likelihood's log_prob), test ELBO, IWAE bound, active units."""

import math

import pytest

from scratchvae import evaluate as ev
from scratchvae.backend import Backend, to_numpy
from scratchvae.models import AE, VAE
from scratchvae.ops.losses import LOG_2PI, log_normal, log_standard_normal

# ---------------------------------------------------------------------------- a linear-Gaussian VAE
# Decoder x = z W + b + s n with z ~ N(0, I), n ~ N(0, I): the marginal is exactly
# p(x) = N(b, W^T W + s^2 I). With W's rows orthogonal the posterior p(z|x) is a diagonal
# Gaussian, N((x - b) W^T Sig / s^2, Sig), Sig = (I + W W^T / s^2)^-1, so a linear encoder can
# represent it exactly.
D, L, S = 6, 2, 0.5


def linear_gaussian(dmu: float = 0.0, dlogvar: float = 0.0, n: int = 200):
    """(model, x, exact log p(x)); the encoder is the true posterior shifted by dmu, dlogvar."""
    bk = Backend("numpy", "float64", seed=0)
    xp = bk.xp
    kw = dict(activation="identity", likelihood="gaussian", decoder_std=S, backend=bk)
    m = VAE(D, hidden=(), latent=L, **kw)
    Q = xp.linalg.qr(bk.normal((D, D)))[0][:L]  # (L, D), orthonormal rows
    W = xp.asarray([[1.5], [0.8]]) * Q
    b = 0.3 * bk.normal((D,))
    m.params["decoder.0.W"][...] = W
    m.params["decoder.0.b"][...] = b
    Sig = xp.linalg.inv(xp.eye(L) + W @ W.T / S**2)  # (L, L), diagonal
    A = W.T @ Sig / S**2  # (D, L)
    m.params["encoder.0.W"][...] = 0
    m.params["encoder.0.W"][:, :L] = A
    m.params["encoder.0.b"][:L] = -b @ A + dmu
    m.params["encoder.0.b"][L:] = xp.log(xp.diag(Sig)) + dlogvar
    cov = W.T @ W + S**2 * xp.eye(D)
    x = b + bk.normal((n, D)) @ xp.linalg.cholesky(cov).T
    d = x - b
    maha = ((d @ xp.linalg.inv(cov)) * d).sum(axis=1)
    logp = -0.5 * (maha + xp.linalg.slogdet(cov)[1] + D * LOG_2PI)
    return m, x, logp


def random_bernoulli_vae(seed: int = 0, n: int = 300):
    bk = Backend("numpy", "float64", seed=seed)
    m = VAE(12, hidden=(16,), latent=3, activation="tanh", backend=bk)
    x = bk.bernoulli(0.3, (n, 12))
    return m, x


# ---------------------------------------------------------------------------- log-densities
def test_log_densities_match_direct_formulas(kernels):
    bk = Backend("numpy", "float64", seed=1)
    xp = bk.xp
    z, mu, lv = bk.normal((5, 3)), bk.normal((5, 3)), 0.3 * bk.normal((5, 3))
    var = xp.exp(lv)
    direct = (-0.5 * (z - mu) ** 2 / var - 0.5 * xp.log(2 * math.pi * var)).sum(axis=1)
    assert xp.allclose(log_normal(z, mu, lv), direct, rtol=1e-12)
    assert xp.allclose(log_standard_normal(z), log_normal(z, 0 * z, 0 * z), rtol=1e-12)
    assert math.isclose(LOG_2PI, math.log(2 * math.pi))
    # Bernoulli on logits == x log p + (1 - x) log(1 - p) for moderate logits
    m = VAE(3, hidden=(), latent=1, backend=bk)
    logits, x = 2 * bk.normal((5, 3)), bk.uniform((5, 3))
    p = 1 / (1 + xp.exp(-logits))
    direct = (x * xp.log(p) + (1 - x) * xp.log(1 - p)).sum(axis=1)
    assert xp.allclose(m.lik.log_prob(logits, x), direct, rtol=1e-12)
    # samples' logits (S, B, D) against the data (B, D): one value per sample and example
    stacked = xp.stack([logits, -logits])
    both = m.lik.log_prob(stacked, x)
    assert both.shape == (2, 5) and xp.allclose(both[0], direct, rtol=1e-12)
    # stable where probabilities underflow: logits of -800 for a pixel that is on
    big = m.lik.log_prob(xp.full((1, 3), -800.0), xp.ones((1, 3)))
    assert xp.allclose(big, -2400.0)


def test_exact_posterior_gives_exact_log_likelihood_for_every_k():
    m, x, logp = linear_gaussian()
    # q = p(z|x) makes every importance weight equal p(x): L_1 = L_k = log p(x)
    for k in (1, 7):
        assert float(abs(ev.iw_bound(m, x, k) - logp).max()) < 1e-10


def test_iwae_approaches_exact_log_likelihood_from_below():
    m, x, logp = linear_gaussian(dmu=0.5, dlogvar=0.7)
    exact = float(logp.mean())
    gaps = [exact - float(ev.iw_bound(m, x, k, budget=1 << 16).mean()) for k in (1, 100, 5000)]
    assert gaps[0] > gaps[1] > gaps[2] > 0  # ELBO < L_100 < L_5000 < log p(x)
    assert gaps[0] > 1.0 and gaps[2] < 0.01


def test_iwae_bound_is_above_the_elbo():
    m, x = random_bernoulli_vae()
    elbo = -float(ev.elbo_terms(m, x, n_samples=20)["neg_elbo"].mean())
    iw = float(ev.iw_bound(m, x, 50).mean())
    assert iw > elbo + 0.05


def test_k1_bound_is_the_elbo_estimator_in_expectation():
    # Same seed and batch size: the k=1 bound and the ELBO use the same eps per example, so
    # their difference is KL(closed form) - [log q(z|x) - log p(z)], zero in expectation.
    m, x = random_bernoulli_vae(n=4000)
    x = x[:4000]
    iw1 = ev.iw_bound(m, x, 1, batch_size=4000, backend=Backend("numpy", "float64", seed=5))
    terms = ev.elbo_terms(m, x, batch_size=4000, backend=Backend("numpy", "float64", seed=5))
    diff = to_numpy(iw1 + terms["neg_elbo"])
    se = diff.std() / math.sqrt(len(diff))
    assert abs(diff.mean()) < 4 * se
    assert diff.std() > 0.01  # the two estimators really differ per example


def test_elbo_terms_match_the_training_terms():
    m, x = random_bernoulli_vae()
    terms = ev.elbo_terms(m, x, batch_size=1000, backend=Backend("numpy", "float64", seed=3))
    eps = Backend("numpy", "float64", seed=3).normal((x.shape[0], 3))
    train_terms = m.loss(x, {"eps": eps})
    for key in ("recon", "kl"):
        assert math.isclose(float(terms[key].mean()), float(train_terms[key]), rel_tol=1e-12)


def test_chunked_bound_equals_unchunked_with_the_same_noise():
    m, x = random_bernoulli_vae(n=37)
    eps = Backend("numpy", "float64", seed=9).normal((300, 37, 3))
    whole = ev.iw_bound(m, x, 300, batch_size=1000, budget=1 << 30, eps=eps)
    small = ev.iw_bound(m, x, 300, batch_size=5, budget=500, eps=eps)  # chunks of 5 x ~1
    assert ev._chunk_sizes(m, 5, 300, 500)[1] < 300  # really chunked over samples
    assert float(abs(whole - small).max()) < 1e-10
    # drawn noise: samples are drawn sample-major, so the sample chunking does not change them
    a = ev.iw_bound(m, x, 300, 8, 1 << 30, backend=Backend("numpy", "float64", seed=2))
    b = ev.iw_bound(m, x, 300, 8, 700, backend=Backend("numpy", "float64", seed=2))
    assert float(abs(a - b).max()) < 1e-10


def test_bound_is_stable_for_very_unlikely_data():
    m, x = random_bernoulli_vae(n=4)
    m.params["decoder.1.b"][...] = -300.0  # log w around -3600: exp would underflow to 0
    bound = ev.iw_bound(m, x * 0 + 1, 100)
    assert bool(m.xp.isfinite(bound).all()) and float(bound.max()) < -3000


# ---------------------------------------------------------------------------- active units
def test_active_units_counts_a_dead_unit_as_inactive():
    m, x, _ = linear_gaussian(n=500)
    m.params["encoder.0.W"][:, 1] = 0.0  # mu_1 no longer depends on x
    n_active, var = ev.active_units(m, x, batch_size=64)
    assert n_active == 1 and float(var[1]) < 1e-20 and float(var[0]) > 0.1
    mu = m.encode(x)[0]
    assert math.isclose(float(var[0]), float(mu[:, 0].var()), rel_tol=1e-10)


# ---------------------------------------------------------------------------- evaluate()
def test_evaluate_reports_every_figure():
    m, x, logp = linear_gaussian(dmu=0.5, dlogvar=0.7)
    r = ev.evaluate(m, x, iw_samples=200, batch_size=64, seed=0)
    keys = "neg_elbo recon kl iw_bound iw_nll iw_samples active_units latent bits_per_dim n"
    assert set(keys.split()) <= set(r)
    assert r["iw_nll"] == -r["iw_bound"] and r["n"] == 200 and r["latent"] == 2
    assert math.isclose(r["neg_elbo"], r["recon"] + r["kl"], rel_tol=1e-12)
    assert -r["neg_elbo"] < r["iw_bound"] < float(logp.mean())
    assert math.isclose(r["bits_per_dim"], r["iw_nll"] / (D * math.log(2)))
    assert ev.evaluate(m, x, iw_samples=200, batch_size=64, seed=0) == r  # deterministic
    assert ev.evaluate(m, x, iw_samples=0)["iw_bound"] is None


def test_evaluate_calls_progress_with_positional_arguments_only():
    # progress is a Report, (stage, done, total): any callable of three arguments, whatever
    # it names them (it was called with total=... as a keyword, which only Stages accepted)
    m, x = random_bernoulli_vae(n=20)
    seen = []
    ev.evaluate(
        m, x, iw_samples=3, batch_size=8, seed=0, progress=lambda s, d, n: seen.append((s, d, n))
    )
    bound = [(d, n) for s, d, n in seen if s.startswith("importance")]
    assert bound[0] == (0, 60) and bound[-1] == (60, 60)


def test_evaluate_non_vae_reports_reconstruction_only():
    bk = Backend("numpy", "float32", seed=0)
    ae = AE(12, hidden=(8,), latent=2, backend=bk)
    r = ev.evaluate(ae, bk.uniform((10, 12)))
    assert set(r) == {"recon", "n", "note"} and r["recon"] > 0


def test_bad_input_is_rejected_with_a_clear_message():
    m, x = random_bernoulli_vae(n=5)
    with pytest.raises(ValueError, match="k must be >= 1"):
        ev.iw_bound(m, x, 0)
    with pytest.raises(ValueError, match="expected input of shape"):
        ev.evaluate(m, x[:, :5])
    with pytest.raises(ValueError, match="needs a VAE"):
        ev.iw_bound(AE(12, hidden=(), latent=2), x, 5)
    with pytest.raises(ValueError, match=r"iw_samples .* must be >= 0"):
        ev.evaluate(m, x, iw_samples=-1)
    with pytest.raises(ValueError, match="batch size must be >= 1"):
        ev.evaluate(m, x, batch_size=0)


def test_evaluate_refuses_empty_data_and_a_vae_without_a_likelihood():
    m, x = random_bernoulli_vae(n=5)
    with pytest.raises(ValueError, match=r"the data is empty \(shape \(0, 12\)\)"):
        ev.evaluate(m, x[:0])  # no examples
    with pytest.raises(ValueError, match=r"rank 1\); expected \(N, D\) vectors or \(N, H, W\)"):
        ev.evaluate(m, x[0])  # one example without its batch axis
    for fn in (ev.elbo_terms, ev.active_units):
        with pytest.raises(ValueError, match="batch size must be >= 1, got 0"):
            fn(m, x, batch_size=0)
    mse = VAE(12, hidden=(4,), latent=2, likelihood="mse")
    with pytest.raises(ValueError, match="likelihood 'mse' has no likelihood to evaluate"):
        ev.evaluate(mse, x)


def test_evaluate_with_seed_none_draws_from_the_models_own_generator():
    m, x = random_bernoulli_vae(n=20)
    state = m.backend.rng_state()
    first = ev.evaluate(m, x, iw_samples=5, seed=None)
    assert m.backend.rng_state() != state  # drawn from the model's generator, which moved on
    assert ev.evaluate(m, x, iw_samples=5, seed=None) != first
    m.backend.set_rng_state(state)
    assert ev.evaluate(m, x, iw_samples=5, seed=None) == first


def test_the_report_of_a_model_without_a_prior_is_its_reconstruction_and_why():
    ae = AE(12, hidden=(8,), latent=2, backend=Backend("numpy", "float64", seed=0))
    x = Backend("numpy", "float64", seed=1).uniform((20, 12))
    r = {**ev.evaluate(ae, x), "checkpoint": "run/checkpoint.npz", "data": "d", "binarize": "none"}
    lines = ev.format_report(r, ae, 3, 12).splitlines()
    assert lines[0] == "checkpoint    run/checkpoint.npz (AE, epoch 3)"
    assert lines[-2] == f"recon         {r['recon']:.3f}"
    assert lines[-1].startswith("note          AE has no prior or encoder distribution")
    assert not any("ELBO" in line or "IW bound" in line for line in lines)


# ---------------------------------------------------------------------------- GPU (pytest -m gpu)
@pytest.mark.gpu
def test_bound_and_evaluate_agree_on_cupy():
    m, x = random_bernoulli_vae(n=20)
    g = VAE(12, hidden=(16,), latent=3, activation="tanh", backend=Backend("cupy", "float64"))
    g.params.flat[...] = g.xp.asarray(m.params.flat)
    eps = Backend("numpy", "float64", seed=9).normal((50, 20, 3))
    a = ev.iw_bound(m, x, 50, batch_size=7, budget=2000, eps=eps)
    b = ev.iw_bound(g, g.xp.asarray(x), 50, batch_size=7, budget=2000, eps=g.xp.asarray(eps))
    assert type(b).__module__.startswith("cupy")
    assert float(abs(to_numpy(b) - a).max()) < 1e-9
    r = ev.evaluate(g, g.xp.asarray(x), iw_samples=30)
    assert all(isinstance(r[k], float) for k in ("neg_elbo", "iw_bound", "bits_per_dim"))
    n_active, _ = ev.active_units(g, g.xp.asarray(x))
    assert n_active == ev.active_units(m, x)[0]


def test_iw_bound_budget_defaults_to_the_backends(monkeypatch):
    """None: the CPU budget on NumPy (GPU_BUDGET is for CuPy, where chunks cost launches)."""
    seen = []
    real = ev._chunk_sizes
    monkeypatch.setattr(
        ev, "_chunk_sizes", lambda m, b, k, budget: seen.append(budget) or real(m, b, k, budget)
    )
    m = VAE(6, hidden=(5,), latent=2, backend=Backend("numpy", "float64", seed=0))
    ev.iw_bound(m, m.backend.uniform((3, 6)), 4)
    ev.iw_bound(m, m.backend.uniform((3, 6)), 4, budget=1000)
    assert seen == [ev.DEFAULT_BUDGET, 1000] and ev.GPU_BUDGET > ev.DEFAULT_BUDGET


def test_values_beyond_float32_are_refused_before_the_cast(recwarn):
    # fit refuses them (a data set holds float32); evaluate cast them to Inf first, with
    # NumPy's overflow warning, then called them "NaN or Inf"
    np = pytest.importorskip("numpy")  # numpy-boundary: a host array of the user's
    m = VAE(4, hidden=[4], latent=2, backend=Backend("numpy", seed=0), likelihood="gaussian")
    with pytest.raises(ValueError, match=r"beyond float32's range .*; scale them down$"):
        ev.evaluate(m, np.full((3, 4), 1e39))
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_host_data_is_scanned_once_and_refused_as_fit_refuses_it(monkeypatch):
    """A host array's values were read twice (the float32 range, then the targets)."""
    np = pytest.importorskip("numpy")  # numpy-boundary: a host array of the user's
    import scratchvae.data.dataset as dataset_module
    import scratchvae.inputs as inputs_module

    scans = []

    def counted(real):
        def value_range(x, *args, **kwargs):
            scans.append(x.shape)
            return real(x, *args, **kwargs)

        return value_range

    monkeypatch.setattr(dataset_module, "value_range", counted(dataset_module.value_range))
    monkeypatch.setattr(inputs_module, "value_range", counted(inputs_module.value_range))
    m, x = random_bernoulli_vae(n=5)
    ev.evaluate(m, to_numpy(x), iw_samples=0)
    assert len(scans) == 1
    with pytest.raises(
        ValueError, match=r"the data has values in \[1\.5, 1\.5\] but the Bernoulli"
    ):
        ev.evaluate(m, np.full((3, 12), 1.5))  # Bernoulli decoder: [0, 1] only
    with pytest.raises(ValueError, match="NaN"):
        ev.evaluate(m, np.full((3, 12), np.nan))
