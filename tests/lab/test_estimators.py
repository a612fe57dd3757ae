"""Tests of the gradient estimators: exactness of the kernels, unbiasedness (statistical, fixed
seeds, 6-sigma bounds), and the variance ordering pathwise < score function on a small VAE."""

import math

import numpy as np  # numpy-boundary: host-side test arithmetic
import pytest

from scratchvae.backend import Backend
from scratchvae.gradcheck import assert_close, numerical_vjp
from scratchvae.lab.estimators import (
    LinearGaussianToy,
    RunningBaseline,
    TooFewSamples,
    encoder_grads,
    leave_one_out,
    log_likelihood_per_example,
    score_function_grads,
    toy_estimators,
    toy_samples,
    vae_estimators,
    vae_gradient_samples,
)
from scratchvae.lab.study import estimator_study, format_study
from scratchvae.models import AE, VAE
from scratchvae.ops.losses import GaussianKLCache, gaussian_kl_backward, log_normal

SIGMAS = 6.0  # a 6-sigma band: a false alarm about once in 5e8 per parameter


def _toy(bk):
    xp = bk.xp
    toy = LinearGaussianToy(
        x=xp.array([1.0, -0.5, 2.0]), a=xp.array([1.5, 0.7, -1.0]), b=xp.array([0.1, 0.2, 0.3])
    )
    return toy, xp.array([0.3, -0.2, 1.0]), xp.array([-0.5, 0.2, 0.0])


def _assert_unbiased(estimates, exact, what):
    """estimates: (R, K) independent estimates; their mean must be within 6 SE of exact."""
    mean = estimates.mean(axis=0)
    se = estimates.std(axis=0, ddof=1) / math.sqrt(estimates.shape[0])
    z = np.abs(mean - exact) / se
    assert (z < SIGMAS).all(), f"{what}: |bias| / se = {z} (mean {mean}, exact {exact})"
    # power: the band is much narrower than the gradient itself, so a sign or factor bug fails
    assert (SIGMAS * se < 0.5 * np.abs(exact)).all(), f"{what}: too few samples, se {se}"


# ------------------------------------------------------------------------------ the toy problem
def test_toy_exact_gradient_matches_numerical_derivative_of_expectation():
    bk = Backend("numpy", "float64", seed=0)
    toy, mu, lv = _toy(bk)
    exact = toy.exact_grad(mu, lv)
    ones = np.ones_like(mu)
    assert_close(exact["mu"], numerical_vjp(lambda m: toy.expectation(m, lv), mu, ones))
    assert_close(exact["logvar"], numerical_vjp(lambda v: toy.expectation(mu, v), lv, ones))


def test_toy_expectation_matches_monte_carlo():
    bk = Backend("numpy", "float64", seed=1)
    toy, mu, lv = _toy(bk)
    z = mu + np.exp(lv / 2) * bk.normal((200_000, 3))
    f = toy.f(z)
    se = f.std(axis=0) / math.sqrt(len(f))
    assert (np.abs(f.mean(axis=0) - toy.expectation(mu, lv)) < SIGMAS * se).all()


@pytest.mark.parametrize(
    "estimator,baseline", [("pathwise", "none"), ("score", "none"), ("score", "loo")]
)
def test_toy_estimators_are_unbiased(estimator, baseline):
    bk = Backend("numpy", "float64", seed=2)
    toy, mu, lv = _toy(bk)
    eps = bk.normal((8, 20_000, 3))  # 20,000 independent groups of S = 8 samples
    g = toy_samples(toy, mu, lv, eps, estimator, baseline)
    exact = toy.exact_grad(mu, lv)
    for k in ("mu", "logvar"):
        _assert_unbiased(g[k].mean(axis=0), exact[k], f"{estimator}+{baseline} {k}")


def test_toy_running_baseline_is_unbiased_and_reduces_variance():
    bk = Backend("numpy", "float64", seed=3)
    toy, mu, lv = _toy(bk)
    running = RunningBaseline(decay=0.9)
    ests = [
        toy_samples(toy, mu, lv, bk.normal((8, 3)), "score", "running", running)
        for _ in range(4000)
    ]
    exact = toy.exact_grad(mu, lv)
    plain = toy_samples(toy, mu, lv, bk.normal((8, 4000, 3)), "score")
    for k in ("mu", "logvar"):
        est = np.stack([e[k].mean(axis=0) for e in ests])
        _assert_unbiased(est, exact[k], f"running {k}")
        assert est.var(axis=0).sum() < 0.6 * plain[k].mean(axis=0).var(axis=0).sum()


def test_toy_pathwise_sample_is_the_derivative_at_z():
    """One sample: d/dmu f(mu + sigma eps) and d/dlv f(mu + e^(lv/2) eps), numerically."""
    bk = Backend("numpy", "float64", seed=4)
    toy, mu, lv = _toy(bk)
    eps = bk.normal((1, 3))
    g = toy_samples(toy, mu, lv, eps, "pathwise")
    ones = np.ones((1, 3))
    f_mu = numerical_vjp(lambda m: toy.f(m + np.exp(lv / 2) * eps), mu, ones)
    f_lv = numerical_vjp(lambda v: toy.f(mu + np.exp(v / 2) * eps), lv, ones)
    assert_close(g["mu"][0], f_mu)
    assert_close(g["logvar"][0], f_lv)


def test_score_is_the_gradient_of_log_q():
    bk = Backend("numpy", "float64", seed=5)
    mu, lv, z = bk.normal((4, 3)), bk.normal((4, 3)), bk.normal((4, 3))
    f = np.ones(4)
    gmu, glv = score_function_grads(f, z, mu, lv)
    assert_close(gmu, numerical_vjp(lambda m: log_normal(z, m, lv), mu, f))
    assert_close(glv, numerical_vjp(lambda v: log_normal(z, mu, v), lv, f))


def test_leave_one_out_and_running_baseline_arithmetic():
    f = np.array([[1.0, 10.0], [2.0, 20.0], [6.0, 60.0]])
    assert_close(leave_one_out(f), np.array([[4.0, 40.0], [3.5, 35.0], [1.5, 15.0]]))
    rb = RunningBaseline(decay=0.5)
    assert rb.current(f) == 0.0
    rb.update(f)
    assert_close(rb.current(f), np.array([3.0, 30.0]))
    rb.update(f + 2)
    assert_close(rb.value, np.array([4.0, 31.0]))


# ------------------------------------------------------------------------------ the VAE
def _vae(seed=0, likelihood="bernoulli"):
    bk = Backend("numpy", "float64", seed=seed)
    model = VAE(16, hidden=(12,), latent=3, likelihood=likelihood, backend=bk)
    x = bk.uniform((5, 16))
    return bk, model, x


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "gaussian-learned", "mse"])
def test_log_likelihood_per_example_sums_to_the_model_nll(likelihood):
    bk, model, x = _vae(likelihood=likelihood)
    out = bk.normal((5, model.lik.n_out(16)))
    per = log_likelihood_per_example(model.lik, out, x)
    assert per.shape == (5,)
    assert_close(-per.mean(), model.lik.forward(out, x)[0], rtol=1e-12)
    if likelihood != "mse":  # a density: the same as the evaluation's log p(x|z)
        assert_close(per, model.lik.log_prob(out, x), rtol=1e-12)


@pytest.mark.parametrize(
    "settings",
    [{}, {"objective": "iwae", "k": 4, "estimator": "dreg"}, {"estimator": "stl", "beta": 0.5}],
)
def test_pathwise_samples_equal_the_models_backward(settings):
    """The one-sample ELBO step for eps (B, L), whatever the model's objective and estimator."""
    bk = Backend("numpy", "float64", seed=6)
    model = VAE(16, hidden=(12,), latent=3, backend=bk, **settings)
    x = bk.uniform((5, 16))
    eps = bk.normal((3, 5, 3))
    g = vae_gradient_samples(model, x, 3, "pathwise", weights=True, eps=eps)
    assert g.mu.shape == g.logvar.shape == (3, 5, 3)
    for s in range(3):
        _, grads = model.loss_and_grads(x, {"eps": eps[s]})
        for name, w in g.weights.items():
            assert_close(w[s], grads[name], rtol=1e-10, atol=1e-13, name=name)


def test_encoder_grads_of_the_mean_is_the_mean_of_encoder_grads():
    bk, model, x = _vae(seed=7)
    g = vae_gradient_samples(model, x, 4, "score", weights=True)
    cache = model.encoder.forward(model.params, model.backend.asarray(x))[1]
    w = encoder_grads(model, cache, g.mu.mean(axis=0), g.logvar.mean(axis=0))
    for name in w:
        assert_close(w[name], g.weights[name].mean(axis=0), rtol=1e-10, atol=1e-13)


def _grouped(model, x, S, R, estimator, baseline="none", kl="analytic"):
    """R independent S-sample estimates of (dL/dmu, dL/dlogvar) in one call: x tiled R times
    makes R * B independent rows; gradients scale by 1 / (R B), so multiply by R."""
    B, L = x.shape[0], model.latent
    g = vae_gradient_samples(model, np.tile(x, (R, 1)), S, estimator, baseline, kl)
    return [R * a.reshape(S, R, B, L).mean(axis=0) for a in (g.mu, g.logvar)]  # (R, B, L)


@pytest.mark.parametrize("baseline,kl", [("none", "analytic"), ("loo", "analytic"), ("loo", "mc")])
def test_vae_score_function_agrees_with_pathwise(baseline, kl):
    """Both estimate the same dL/dmu, dL/dlogvar: means agree within 6 combined SE."""
    bk, model, x = _vae(seed=8)
    x = (x > 0.5).astype(x.dtype)  # binary pixels: a clear reconstruction gradient
    ref = _grouped(model, x, 1, 40_000, "pathwise")
    est = _grouped(model, x, 8, 20_000, "score", baseline, kl)
    kl_grads = gaussian_kl_backward(GaussianKLCache(*model.encode(x)), 1.0)  # exact, both
    for name, r, e, k in zip(("mu", "logvar"), ref, est, kl_grads):
        se = np.sqrt(r.var(axis=0, ddof=1) / len(r) + e.var(axis=0, ddof=1) / len(e))
        z = np.abs(e.mean(axis=0) - r.mean(axis=0)) / se
        assert (z < SIGMAS).all(), f"{baseline}/{kl} {name}: max |diff|/se = {z.max():.2f}"
        # power: the band is narrower than the sampled (reconstruction) part of the gradient,
        # so dropping it, doubling it or flipping its sign fails
        recon_part = r.mean(axis=0) - k
        assert SIGMAS * np.linalg.norm(se) < 0.8 * np.linalg.norm(recon_part), name


def test_vae_pathwise_variance_is_lower_than_score_function():
    bk, model, x = _vae(seed=9)
    ests = vae_estimators(model, x, weights=True)
    ref = ests["pathwise"](20_000)
    rows = estimator_study(ests, ref, sample_sizes=(16,), repeats=200)
    var = {(r.estimator, r.group): r.variance for r in rows}
    for group in ("mu", "logvar", "weights"):
        for other in ("score", "score+loo", "score+running"):
            # the variance estimates carry ~10% noise at 200 repeats; demand a factor of 2
            assert var[("pathwise", group)] * 2 < var[(other, group)], (group, other, var)
    assert var[("score+loo", "mu")] < var[("score", "mu")]


def test_study_detects_a_biased_estimator_and_passes_unbiased_ones():
    bk = Backend("numpy", "float64", seed=10)
    toy, mu, lv = _toy(bk)
    ests = toy_estimators(toy, mu, lv, bk)
    good = ests["pathwise"]
    ests["biased"] = lambda S: {k: v + 0.05 for k, v in good(S).items()}
    rows = estimator_study(ests, toy.exact_grad(mu, lv), sample_sizes=(1, 16), repeats=2000)
    for r in rows:
        if r.estimator == "biased" and r.n_samples == 16:
            assert r.bias_z > SIGMAS, r
        elif r.estimator != "biased":
            assert r.bias_z < SIGMAS, r
    assert not any(r.estimator == "score+loo" and r.n_samples == 1 for r in rows)
    v = {(r.estimator, r.n_samples, r.group): r.variance for r in rows}
    lines = format_study(rows).splitlines()  # a header, a rule, a line per row in its order
    assert len(lines) == len(rows) + 2 and lines[0].split()[:3] == ["estimator", "S", "group"]
    first = lines[2].split()
    assert first[:3] == [rows[0].estimator, str(rows[0].n_samples), rows[0].group]
    assert float(first[3]) == pytest.approx(rows[0].variance, rel=1e-3)
    # independent samples: Var of the S-sample mean = Var of one sample / S (10% noise each)
    assert 16 * 0.7 < v[("pathwise", 1, "mu")] / v[("pathwise", 16, "mu")] < 16 / 0.7


def test_bad_input_gives_clear_errors():
    bk, model, x = _vae()
    with pytest.raises(ValueError, match="estimator"):
        vae_gradient_samples(model, x, 4, "reinforce")
    with pytest.raises(ValueError, match="baseline"):
        vae_gradient_samples(model, x, 4, "score", "median")
    with pytest.raises(TooFewSamples, match="n_samples >= 2"):
        vae_gradient_samples(model, x, 1, "score", "loo")
    with pytest.raises(ValueError, match="running"):
        vae_gradient_samples(model, x, 4, "score", "running")
    with pytest.raises(ValueError, match=r"shape \(batch, 16\)"):
        vae_gradient_samples(model, x[:, :3], 4)
    with pytest.raises(TypeError, match="need a VAE"):
        vae_gradient_samples(AE(16, hidden=(4,), latent=2, backend=bk), x, 4)
    with pytest.raises(ValueError, match="repeats"):
        estimator_study({}, {}, repeats=1)
    with pytest.raises(ValueError, match="unknown kl 'sampled'; choose 'analytic' or 'mc'"):
        vae_gradient_samples(model, x, 4, kl="sampled")
    with pytest.raises(ValueError, match="the number of samples must be >= 1, got 0"):
        vae_gradient_samples(model, x, 0)
    with pytest.raises(ValueError, match=r"baseline decay must be in \[0, 1\), got 1.0"):
        RunningBaseline(decay=1.0)
    toy, mu, lv = _toy(bk)
    with pytest.raises(ValueError, match="unknown estimator 'reinforce'; choose 'pathwise' or"):
        toy_samples(toy, mu, lv, bk.normal((4, 3)), "reinforce")


def test_example_runs_and_writes_both_figures(tmp_path, capsys, monkeypatch):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "estimator_variance.py"
    monkeypatch.syspath_prepend(str(path.parent))  # its _common, as when run as a script
    spec = importlib.util.spec_from_file_location("estimator_variance", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    example.main(
        [
            "--out",
            str(tmp_path),
            "--steps",
            "5",
            "--hidden",
            "8",
            "--latent",
            "2",
            "--batch",
            "4",
            "--repeats",
            "3",
            "--reference",
            "500",
            "--hist-groups",
            "20",
            "--sample-sizes",
            "2",
            "4",
        ]
    )
    out = capsys.readouterr().out
    assert "variance ratio score-function / pathwise" in out
    for name in ("estimator_variance.png", "estimator_distribution.png"):
        assert (tmp_path / name).stat().st_size > 1000


@pytest.mark.gpu
def test_estimators_on_cupy_match_numpy():
    """Same weights, batch and eps on NumPy and CuPy: the same per-sample estimates."""
    from scratchvae.backend import to_numpy

    bk, model, x = _vae(seed=11)
    gpu_bk = Backend("cupy", "float64", seed=0)
    gpu = VAE(16, hidden=(12,), latent=3, backend=gpu_bk)
    for name in model.params:
        gpu.params[name] = model.params[name]
    eps = bk.normal((6, 5, 3))
    for estimator, baseline in [("pathwise", "none"), ("score", "none"), ("score", "loo")]:
        a = vae_gradient_samples(model, x, 6, estimator, baseline, weights=True, eps=eps)
        b = vae_gradient_samples(
            gpu, gpu_bk.asarray(x), 6, estimator, baseline, weights=True, eps=gpu_bk.asarray(eps)
        )
        assert_close(to_numpy(b.mu), a.mu, rtol=1e-9, atol=1e-12)
        assert_close(to_numpy(b.logvar), a.logvar, rtol=1e-9, atol=1e-12)
        for name in a.weights:
            assert_close(to_numpy(b.weights[name]), a.weights[name], rtol=1e-9, atol=1e-12)
    ests = vae_estimators(gpu, gpu_bk.asarray(x))
    rows = estimator_study(ests, ests["pathwise"](2000), sample_sizes=(4,), repeats=20)
    assert all(r.variance > 0 for r in rows)
