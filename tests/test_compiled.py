"""The optional Numba kernel (scratchvae.compiled) against the NumPy reference it replaces.

Skipped where Numba is not installed; ``pip install -e ".[test]"`` installs it, so CI runs
both paths. The rest of the suite runs with the kernel on when Numba is present.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchvae import compiled
from scratchvae.backend import Backend
from scratchvae.models import VAE
from scratchvae.optim import Adam, adam_chunk

pytestmark = pytest.mark.skipif(compiled.numba is None, reason="needs numba (scratchvae[fast])")


@pytest.fixture
def kernels_on(monkeypatch):
    monkeypatch.setattr(compiled, "ENABLED", True)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 5000),
    dtype=st.sampled_from(["float32", "float64"]),
    t=st.integers(1, 50),
    seed=st.integers(0, 2**16),
)
def test_adam_kernel_equals_adam_chunk(n: int, dtype: str, t: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    p, g = (rng.standard_normal(n).astype(dtype) for _ in range(2))
    m = (rng.standard_normal(n) * 0.1).astype(dtype)
    v = (rng.random(n) * 0.01).astype(dtype)
    b1, b2, step, eps = 0.9, 0.999, 1e-3 * np.sqrt(1 - 0.999**t) / (1 - 0.9**t), 1e-8
    want = [a.copy() for a in (p, m, v)]
    adam_chunk(*want[:1], g, *want[1:], np.empty_like(p), b1, b2, step, eps)
    got = [a.copy() for a in (p, m, v)]
    compiled.adam(got[0], g, got[1], got[2], b1, b2, step, eps)
    rtol = 1e-6 if dtype == "float32" else 1e-14
    for a, b in zip(got, want, strict=True):
        assert a.dtype == np.dtype(dtype)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * 1e-3)


def test_adam_uses_the_kernel_on_a_param_store_and_matches_numpy(kernels_on, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(compiled, "_adam", _counting(compiled._adam, calls))
    results = []
    for on in (True, False):
        compiled.ENABLED = on
        model = VAE(30, hidden=(12,), latent=3, backend=Backend("numpy", "float64", seed=1))
        opt = Adam(1e-2)
        for _ in range(5):
            _, grads = model.loss_and_grads(model.backend.uniform((8, 30)))
            opt.step(model.params, grads)
        results.append(model.params.flat.copy())
    assert len(calls) == 5  # one kernel call per step, over the whole flat buffer
    np.testing.assert_allclose(results[0], results[1], rtol=1e-12, atol=1e-15)


def test_kernel_skips_what_it_cannot_take(kernels_on) -> None:
    a = np.zeros(10)
    assert compiled.applies(a, a)
    assert not compiled.applies(a[::2])  # not contiguous
    assert not compiled.applies([0.0] * 3)  # not an array
    compiled.ENABLED = False
    assert not compiled.applies(a) and not compiled.enabled()


def _counting(fn, calls):
    def wrapped(*args):
        calls.append(args[0].size)
        return fn(*args)

    return wrapped
