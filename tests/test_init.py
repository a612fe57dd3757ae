"""Weight initialisers: the distribution each promises (moments with a fixed seed, the bounds),
drawn from the backend's seeded generator, and the default per activation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scratchvae.backend import Backend
from scratchvae.init import (
    INITIALISERS,
    default_init,
    fan_in_uniform,
    fan_in_uniform_bias,
    glorot_uniform,
    he_normal,
)

# 60,000 draws, seed 0 (each test is deterministic). Each bound is a number of standard errors
# of its estimator, so that another seed (or a NumPy whose streams changed) passes too, while
# a wrong scale (1/n_in for 2/n_in, n_out for n_in: a variance 1.5 or 2 times off) is dozens of
# standard errors away. The sample variance's relative standard error is sqrt((kurtosis - 1)/n):
# sqrt(2/(n - 1)) = 0.58% for a normal, sqrt(0.8/n) = 0.37% for a uniform.
N_IN, N_OUT = 300, 200


def _draws(init, seed: int = 0, dtype: str = "float64"):
    return init(Backend("numpy", dtype, seed=seed), N_IN, N_OUT)


def test_glorot_uniform_is_uniform_on_plus_minus_sqrt_6_over_fan_sum() -> None:
    W = _draws(glorot_uniform)
    a = math.sqrt(6 / (N_IN + N_OUT))
    assert W.shape == (N_IN, N_OUT)
    assert np.abs(W).max() <= a and np.abs(W).max() > 0.999 * a
    assert W.var() == pytest.approx(a * a / 3, rel=0.02)  # Var U(-a, a) = a^2/3 = 2/(n+m): 5.5 SE
    assert abs(W.mean()) < 4 * a / math.sqrt(3 * W.size)
    counts = np.histogram(W, bins=10, range=(-a, a))[0]
    assert counts.min() > 0.9 * W.size / 10  # flat, not bell-shaped


def test_he_normal_has_variance_2_over_fan_in() -> None:
    W = _draws(he_normal)
    var, n = 2 / N_IN, W.size
    assert W.shape == (N_IN, N_OUT)
    # the sample variance s^2 of n normal draws: (n - 1) s^2 / var ~ chi^2(n - 1), so
    # E s^2 = var and sd(s^2) = sqrt(2 / (n - 1)) var (0.58% of var here). Within 5 of those
    # (2.9%) every seed but one in 1.7 million passes; a variance 1.5 times off is 87 away.
    # (Measured on NumPy 2.4: seed 0 is 0.1 of them off; seeds 0 to 1999, at most 3.5.)
    se = math.sqrt(2 / (n - 1)) * var
    assert abs(W.var(ddof=1) - var) < 5 * se
    assert abs(W.mean()) < 5 * math.sqrt(var / n)  # the mean's standard error: sd / sqrt(n)
    # P(|W| < sd) = 0.6827 for a normal, 1/sqrt(3) = 0.577 for a uniform of the same variance;
    # the proportion's standard error sqrt(p (1 - p) / n) = 0.0019: 0.01 is 5.3 of them
    assert np.mean(np.abs(W) < math.sqrt(var)) == pytest.approx(0.6827, abs=0.01)


def test_fan_in_uniform_is_pytorchs_linear_default() -> None:
    W = _draws(fan_in_uniform)
    bound = 1 / math.sqrt(N_IN)
    assert W.shape == (N_IN, N_OUT)
    assert np.abs(W).max() <= bound and np.abs(W).max() > 0.999 * bound
    assert W.var() == pytest.approx(bound * bound / 3, rel=0.02)  # 5.5 SE (see the top)
    b = fan_in_uniform_bias(Backend("numpy", "float64", seed=1), N_IN, (N_OUT,))
    assert b.shape == (N_OUT,) and np.abs(b).max() <= bound and np.abs(b).max() > 0.9 * bound


@pytest.mark.parametrize("name", sorted(INITIALISERS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_initialisers_are_seeded_and_keep_the_dtype(name: str, dtype: str) -> None:
    init = INITIALISERS[name]
    a, b, c = _draws(init, 7, dtype), _draws(init, 7, dtype), _draws(init, 8, dtype)
    assert a.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_initialiser_table_and_default_per_activation() -> None:
    assert INITIALISERS == {"glorot": glorot_uniform, "he": he_normal, "uniform": fan_in_uniform}
    for activation in ("relu", "leaky_relu", "elu"):
        assert default_init(activation) == "he"
    for activation in ("identity", "tanh", "sigmoid", "softplus"):
        assert default_init(activation) == "glorot"
