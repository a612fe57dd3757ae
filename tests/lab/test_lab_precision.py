"""Float32 precision of the lab's estimators against float64 or exact references: the score
function at a tiny sigma, importance weights at large |log w| or past float32's range, and
log-weights that are -inf for every sample."""

import numpy as np  # numpy-boundary: host-side test arithmetic
from hypothesis import assume, given
from hypothesis import strategies as st

from scratchvae.backend import Backend
from scratchvae.lab.estimators import LinearGaussianToy, toy_samples, vae_gradient_samples
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
