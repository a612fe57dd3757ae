"""What each gradient estimator's MEAN is: against the gradient of its objective computed
another way, not against another estimator (tests/ops/test_iwae.py compares them with each
other; gradient checks cannot see a term that is zero only in expectation).

The model: tests/quadrature.py's one-unit-latent Bernoulli VAE and its one example, float64.
The reference: the objective by Gauss-Hermite quadrature (E[L_k] over an n^k grid),
differentiated by central differences in every parameter; no estimator's code is involved.
The estimate: N steps of the model, each on the example tiled R times (one step's gradient is
the mean of R independent per-row estimates); their mean has standard error se = std / sqrt(N)
per parameter.

The test: |mean - reference| < 6 se for every parameter (about 40 of them, the ones whose
gradient varies; the others must match to rounding). A 6-sigma band fails an unbiased
estimator with probability 2e-9 per parameter (normal tails; each step already averages R
rows), under 1e-6 over all the cases here. Power: se is under 1% of the gradient's largest
entry (a wrong factor or sign in any term fails), and the bias of STL for the IWAE bound (a
fifth of the encoder's gradient or more) shows at z > 30.
"""

from __future__ import annotations

import math

import numpy as np  # numpy-boundary: host-side test arithmetic
import pytest
from quadrature import (
    encoder_output,
    expected_bound,
    expected_weighted_score,
    flat_grads,
    tiny_vae,
)

from scratchvae.gradcheck import numerical_param_grads
from scratchvae.lab.estimators import RunningBaseline, vae_gradient_samples
from scratchvae.ops.losses import kl_standard_normal

SIGMAS = 6.0
N, R = 200, 100  # steps, and copies of the example per step


def _reference(model, x, k, beta, iwae):
    """-d E[bound] / d params (the loss is minus the bound), by differences of the quadrature."""
    expected_bound(model, x, k, beta, iwae, check=True)  # the rule has converged here
    g = numerical_param_grads(lambda: -expected_bound(model, x, k, beta, iwae), model.params)
    return flat_grads(model, g)


def _stl_shift(model, x, k, beta):
    """What STL adds to the IWAE loss's gradient: the score it leaves out, -beta E[sum_j w~_j
    d log q(z_j|x)/dphi |_z] with the sign of the bound, is -(-beta) s for the loss; carried to
    the encoder's weights as d(s . h(params)) / d params, h = [mu, logvar] (zero for the
    decoder's)."""
    s = expected_weighted_score(model, x, k, beta)  # (2,) at the encoder's output

    def s_dot_h():
        return float(s @ model.encoder.forward(model.params, x)[0][0])

    return -beta * flat_grads(model, numerical_param_grads(s_dot_h, model.params))


def _mean_and_se(model, x):
    X = np.tile(x, (R, 1))
    steps = np.array([model.loss_and_grads(X)[1].flat.copy() for _ in range(N)])
    return steps.mean(axis=0), steps.std(axis=0, ddof=1) / math.sqrt(N)


def _assert_mean_is(mean, se, want, what):
    varies = se > 0  # e.g. the first layer's weights of the pixels that are 0 get no gradient
    np.testing.assert_allclose(mean[~varies], want[~varies], atol=1e-12, err_msg=what)
    z = np.abs(mean - want)[varies] / se[varies]
    assert z.max() < SIGMAS, f"{what}: max |mean - target| / se = {z.max():.1f}"
    assert se.max() < 0.01 * np.abs(want).max(), f"{what}: too few draws for power"
    return z.max()


# (objective, k, estimator, beta): the loss each is the gradient of, in expectation
UNBIASED = [
    ("elbo", 1, "pathwise", 1.0),  # -ELBO (closed-form KL)
    ("elbo", 3, "pathwise", 0.5),  # the mean of 3 single-sample ELBOs, KL weight 0.5
    ("elbo", 1, "stl", 1.0),  # STL: unbiased for the ELBO (Roeder et al. 2017)
    ("elbo", 3, "stl", 0.5),
    ("iwae", 1, "pathwise", 1.0),  # L_1 is the ELBO
    ("iwae", 3, "pathwise", 1.0),  # -E[L_3]
    ("iwae", 2, "pathwise", 0.5),  # L_k with the KL weight inside log w
    ("iwae", 3, "dreg", 1.0),  # DReG: unbiased for IWAE (Tucker et al. 2019)
    ("iwae", 3, "dreg", 0.3),  # the path weighted by 1 - beta (1 - w~)
    ("iwae", 2, "dreg", 2.0),
    # k = 1: the IWAE family is the VAE's (w~ = 1): STL, and DReG (= STL there), any beta
    ("iwae", 1, "stl", 1.0),
    ("iwae", 1, "dreg", 0.5),
]


@pytest.mark.parametrize("objective, k, estimator, beta", UNBIASED)
def test_estimator_mean_is_the_gradient_of_its_objective(objective, k, estimator, beta):
    model, x = tiny_vae(seed=k, objective=objective, k=k, estimator=estimator, beta=beta)
    want = _reference(model, x, k, beta, iwae=objective == "iwae")
    mean, se = _mean_and_se(model, x)
    _assert_mean_is(mean, se, want, f"{objective} k={k} {estimator} beta={beta}")


@pytest.mark.parametrize("k, beta", [(2, 1.0), (3, 1.0), (3, 0.5)])
def test_stl_for_iwae_is_biased_by_exactly_the_score_it_drops(k, beta):
    """STL for IWAE (k > 1) estimates the gradient of the bound L_k plus beta E[sum_j w~_j
    d log q/dphi] (for the loss -L_k: minus it, _stl_shift): that expectation is not zero when
    the weights depend on the draws (Tucker et al. 2019; Roeder et al. 2017 left its bias
    open). The decoder's gradient is unbiased."""
    model, x = tiny_vae(seed=10 + k, objective="iwae", k=k, estimator="stl", beta=beta)
    iwae = _reference(model, x, k, beta, iwae=True)
    shift = _stl_shift(model, x, k, beta)
    mean, se = _mean_and_se(model, x)
    _assert_mean_is(mean, se, iwae + shift, f"stl k={k} beta={beta}: IWAE + the dropped score")
    varies = se > 0
    assert (np.abs(mean - iwae)[varies] / se[varies]).max() > 5 * SIGMAS  # biased for L_k
    decoder = np.concatenate(
        [np.full(model.params[n].size, n.startswith("decoder.")) for n in model.params]
    )
    assert np.all(shift[decoder] == 0)
    ratio = np.abs(shift[~decoder]).max() / np.abs(iwae[~decoder]).max()
    assert ratio > 0.2, ratio  # not a small bias: a fifth of the encoder's gradient or more


@pytest.mark.parametrize("seed", [0, 12, 13])
def test_stl_bias_for_iwae_grows_with_k(seed):
    """How much (docs/derivations.md, section 10): on one model, the bias of STL's mean (the
    score it drops, by quadrature: no noise) over the encoder's parameters, against the
    encoder's IWAE gradient: |bias| / |gradient| 0.63, 0.98, 0.33 at k = 2 and 1.17, 2.02, 0.54
    at k = 3 (seeds 0, 12, 13; 1.6, 3.1, 0.71 at k = 4), along the gradient (cosine > 0.97):
    STL overstates the encoder's gradient, the more so as k grows (its true value vanishes
    with k, the dropped score does not)."""
    ratios = []
    for k in (2, 3):
        model, x = tiny_vae(seed=seed, objective="iwae", k=k, estimator="stl")
        iwae = _reference(model, x, k, 1.0, iwae=True)
        shift = _stl_shift(model, x, k, 1.0)
        enc = np.concatenate(
            [np.full(model.params[n].size, n.startswith("encoder.")) for n in model.params]
        )
        b, g = shift[enc], iwae[enc]
        ratios.append(np.linalg.norm(b) / np.linalg.norm(g))
        assert b @ g / (np.linalg.norm(b) * np.linalg.norm(g)) > 0.97  # along the gradient
    assert 0.3 < ratios[0] < ratios[1], ratios


# ------------------------------------------------------------------ the lab's score function
def _score_reference(model, x, beta=1.0):
    """-d ELBO / d(mu, logvar) by differences of the quadrature, the encoder's output moved
    through its last bias (h = ... + b, so d/dh = d/db for one example)."""
    expected_bound(model, x, 1, beta, iwae=False, check=True)
    b = model.params["encoder.1.b"]
    grads = numerical_param_grads(
        lambda: -expected_bound(model, x, 1, beta, iwae=False), {"encoder.1.b": b}
    )
    return grads["encoder.1.b"]


@pytest.mark.parametrize(
    "estimator, baseline, kl, beta",
    [
        ("pathwise", "none", "analytic", 1.0),
        ("score", "none", "analytic", 1.0),
        ("score", "loo", "analytic", 1.0),
        ("score", "loo", "mc", 1.0),
        ("score", "running", "mc", 1.0),
        ("score", "running", "analytic", 1.0),
        # a KL weight: the ELBO's KL term times beta, in f (mc) or added exactly (analytic)
        ("pathwise", "none", "analytic", 0.3),
        ("score", "loo", "mc", 0.3),
        ("score", "none", "analytic", 2.0),
    ],
)
def test_lab_estimators_mean_is_the_elbo_gradient(estimator, baseline, kl, beta):
    """scratchvae.lab.estimators on the same model: dL/dmu, dL/dlogvar (L = -ELBO, its KL
    weighted by the model's beta) from S = 4 samples per estimate, R rows at a time (one
    estimate per row; the batch mean's 1/R undone), against the quadrature's gradient. The
    running baseline learns across the calls."""
    model, x = tiny_vae(seed=20, beta=beta)
    want = _score_reference(model, x, beta)
    rows, S, calls = 2000, 4, 10
    running = RunningBaseline() if baseline == "running" else None
    est = []
    for _ in range(calls):
        g = vae_gradient_samples(model, np.tile(x, (rows, 1)), S, estimator, baseline, kl, running)
        est.append(rows * np.concatenate([g.mu, g.logvar], axis=2).mean(axis=0))
    est = np.concatenate(est)  # (calls * rows, 2): independent S-sample estimates
    mean, se = est.mean(axis=0), est.std(axis=0, ddof=1) / math.sqrt(len(est))
    z = np.abs(mean - want) / se
    assert z.max() < SIGMAS, f"{estimator}+{baseline} ({kl} KL): |mean - want| / se = {z}"
    assert se.max() < 0.1 * np.abs(want).max(), se  # power: a wrong sign or factor 2 fails


def test_quadrature_kl_is_the_closed_form():
    """The reference's own check: the ELBO's quadrature minus E[log p(x|z)] is minus the
    closed-form Gaussian KL the pathwise step uses (exact: the integrand is a quadratic)."""
    model, x = tiny_vae()
    mu, logvar = encoder_output(model, x)
    recon_only = expected_bound(model, x, 1, beta=0.0, iwae=False)  # E[log p(x|z)]
    kl = recon_only - expected_bound(model, x, 1, iwae=False)
    closed = kl_standard_normal(np.array([mu]), np.array([logvar]))
    assert kl == pytest.approx(float(closed), rel=1e-12)
