"""The VALUES of the multi-sample bounds in expectation (Burda et al. 2016, theorem 1):
E[L_1] = ELBO <= E[L_k] <= E[L_{k+1}] <= log p(x), on tests/quadrature.py's one-unit-latent
VAE, where E[L_k] (k <= 3) is a Gauss-Hermite sum over the k draws and log p(x) a sum over the
prior: exact to 1e-6, so the order is checked without noise. Then the real step's loss and the
evaluation's bound against those references: N independent values, |mean - reference| < 6 se
(a false alarm with probability 2e-9 each, normal tails: every value is already a mean of R
rows or the bound of one of 2,000 rows).
"""

from __future__ import annotations

import math

import numpy as np  # numpy-boundary: host-side test arithmetic
import pytest
from quadrature import expected_bound, log_evidence, tiny_vae

from scratchvae.evaluate import iw_bound

SIGMAS = 6.0


def _mean_se(values):
    return values.mean(), values.std(ddof=1) / math.sqrt(len(values))


@pytest.mark.parametrize("seed", [0, 1])
def test_expected_bound_rises_with_k_and_stays_below_log_evidence(seed):
    model, x = tiny_vae(seed=seed)
    bounds = [expected_bound(model, x, k, check=True) for k in (1, 2, 3)]
    elbo = expected_bound(model, x, 1, iwae=False, check=True)
    log_px = log_evidence(model, x)
    assert bounds[0] == pytest.approx(elbo, abs=1e-12)  # L_1 is the one-sample ELBO
    steps = np.diff([*bounds, log_px])
    assert np.all(steps > 1e-4), (bounds, log_px)  # each step up is far above the rule's 1e-6
    # the gap closes (for large k like c / k: Maddison et al. 2017, Nowozin 2018)
    gaps = log_px - np.array(bounds)
    assert np.all(gaps[1:] < gaps[:-1]) and gaps[2] < 0.8 * gaps[0]


@pytest.mark.parametrize(
    "objective, k, estimator",
    [("iwae", 3, "pathwise"), ("iwae", 2, "dreg"), ("elbo", 3, "stl"), ("elbo", 1, "pathwise")],
)
def test_training_loss_is_minus_the_bound_in_expectation(objective, k, estimator):
    """The step's loss (train=True: k draws per row) averages to -E[L_k] (iwae) or -ELBO."""
    model, x = tiny_vae(seed=3, objective=objective, k=k, estimator=estimator)
    want = -expected_bound(model, x, k, iwae=objective == "iwae", check=True)
    X = np.tile(x, (100, 1))
    losses = np.array([float(model.loss(X, train=True)["loss"]) for _ in range(300)])
    se = losses.std(ddof=1) / math.sqrt(len(losses))
    assert abs(losses.mean() - want) < SIGMAS * se, (losses.mean(), want, se)
    assert se < 0.01  # power: E[L_k] moves by more than 0.05 from k to k + 1 here


def test_evaluation_bound_is_e_lk_in_expectation():
    """evaluate.iw_bound on 2,000 copies of the example: one independent L_k per copy, whose
    mean is the quadrature's E[L_k] (k <= 3)."""
    model, x = tiny_vae(seed=4)
    X = np.tile(x, (2000, 1))
    for k in (1, 2, 3):
        mean, se = _mean_se(iw_bound(model, X, k))
        assert abs(mean - expected_bound(model, x, k, check=True)) < SIGMAS * se, k


def test_evaluation_bound_rises_with_large_k_and_stays_below_log_evidence():
    """k = 1, 10, 100, 1000 from nested draws (the first k of the same 1000 per copy, so that
    the differences are paired): each step up, E[L_k'] - E[L_k], is positive by more than 6 se
    (here by 2.3, 1.2, 0.40 nats at z = 40, 33, 19), and E[L_1000] is below log p(x)
    (one-sided, 6 se; here by 0.26 nats: this q's weights are heavy-tailed)."""
    model, x = tiny_vae(seed=8)
    X = np.tile(x, (2000, 1))
    eps = model.backend.normal((1000, *X.shape[:1], model.latent))
    bounds = [iw_bound(model, X, k, eps=eps[:k]) for k in (1, 10, 100, 1000)]
    for lower, higher in zip(bounds, bounds[1:], strict=False):
        step, se = _mean_se(higher - lower)
        assert step > SIGMAS * se, (step, se)
    mean, se = _mean_se(bounds[-1])
    log_px = log_evidence(model, x)
    assert mean < log_px + SIGMAS * se, (mean, se, log_px)
