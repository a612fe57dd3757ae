"""The optional Numba kernels (scratchvae.compiled) against the NumPy ops they replace.

Skipped where Numba is not installed; ``pip install -e ".[test]"`` installs it, so CI runs
both paths. The rest of the suite runs with the kernel on when Numba is present.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchvae import compiled
from scratchvae.activations import relu_backward, relu_forward
from scratchvae.backend import Backend
from scratchvae.layers import dense_backward
from scratchvae.losses import bernoulli_nll_and_grad, gaussian_kl, gaussian_kl_backward
from scratchvae.models import VAE
from scratchvae.optim import Adam, adam_chunk
from scratchvae.reparam import reparam_backward, reparam_forward

pytestmark = pytest.mark.skipif(compiled.numba is None, reason="needs numba (scratchvae[fast])")


@pytest.fixture
def kernels_on(monkeypatch):
    monkeypatch.setattr(compiled, "ENABLED", True)


@contextlib.contextmanager
def kernels(on: bool):  # noqa: ANN201
    """The kernels switched on or off inside the block, back to the default after it."""
    compiled.ENABLED = on
    try:
        yield
    finally:
        compiled.ENABLED = compiled.numba is not None


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


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_adam_kernel_sets_subnormal_moments_to_zero(dtype: str) -> None:
    """A zero gradient decays m geometrically into subnormal numbers (slow arithmetic); the
    kernel stores zero instead, and the parameters move as NumPy's update moves them."""
    tiny = np.finfo(dtype).tiny
    p = np.ones(6, dtype)
    g = np.array([0, 0, 0, 1e-3, -1e-3, 0], dtype)
    m = np.array([tiny * 2, tiny / 4, -tiny / 4, 0, 0, 0.5], dtype)  # two subnormal, one normal
    v = np.array([1e-6, tiny / 2, 1e-6, 0, 0, 1e-6], dtype)  # one subnormal
    want = [a.copy() for a in (p, m, v)]
    adam_chunk(want[0], g, want[1], want[2], np.empty_like(p), 0.9, 0.999, 1e-3, 1e-8)
    compiled.adam(p, g, m, v, 0.9, 0.999, 1e-3, 1e-8)
    assert not np.any((m != 0) & (np.abs(m) < tiny)) and not np.any((v != 0) & (v < tiny))
    assert m[1] == m[2] == 0 and v[1] == 0  # were subnormal after the update
    assert m[0] >= tiny  # 0.9 * 2 tiny = 1.8 tiny: still normal, kept
    np.testing.assert_allclose(p, want[0], rtol=0, atol=np.finfo(dtype).eps)
    np.testing.assert_allclose(m, want[1], rtol=0, atol=tiny)
    np.testing.assert_allclose(v, want[2], rtol=0, atol=tiny)


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


@settings(max_examples=30, deadline=None)
@given(
    B=st.integers(1, 40),
    D=st.integers(1, 60),
    dtype=st.sampled_from(["float32", "float64"]),
    scale=st.sampled_from([0.1, 3.0, 40.0]),
    seed=st.integers(0, 2**16),
)
def test_bernoulli_kernel_equals_numpy(B, D, dtype, scale, seed) -> None:
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((B, D)) * scale).astype(dtype)
    x = rng.random((B, D)).astype(dtype)  # grey levels, not only 0/1
    x[rng.random((B, D)) < 0.3] = 0
    results = []
    for on in (True, False):
        with kernels(on):
            results.append(bernoulli_nll_and_grad(logits, x))
    (loss_c, grad_c), (loss_n, grad_n) = results
    rtol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(float(loss_c), float(loss_n), rtol=rtol, atol=rtol)
    assert grad_c.dtype == np.dtype(dtype) and np.asarray(loss_c).dtype == np.dtype(dtype)
    np.testing.assert_allclose(grad_c, grad_n, rtol=10 * rtol, atol=rtol * np.abs(grad_n).max())


def _ulps(got: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """|got - exact| in units of the spacing of got's dtype at the exact value."""
    spacing = np.spacing(exact.astype(got.dtype)).astype(exact.dtype)
    return np.abs(got.astype(exact.dtype) - exact) / spacing


EXTENDED = np.longdouble if np.finfo(np.longdouble).nmant > 52 else None  # x86: 64-bit mantissa


@pytest.mark.parametrize(
    "dtype,exact_dtype,arg_max,max_ulps",
    [
        # measured 0.93 and 1.87 (NumPy's float32 exp and log1p: 2.37 and 1.82)
        ("float32", np.float64, 87.0, (1.5, 2.5)),
        # measured 0.85 and 1.92 (NumPy's float64 exp and log1p: 0.70 and 0.59)
        ("float64", EXTENDED, 708.0, (1.5, 2.5)),
    ],
)
def test_exp_and_log1p_series_are_within_two_and_a_half_ulps(
    dtype, exact_dtype, arg_max, max_ulps
) -> None:
    """The kernel's own exp(-a) (range reduction + Taylor) and log1p(e) (atanh series), on a
    grid of two million points, against a wider float's exp and log1p."""
    if exact_dtype is None:
        pytest.skip("no extended precision to compare float64 with on this platform")

    @compiled.numba.njit
    def series(a, e, lp, c):  # noqa: ANN001, ANN202
        for i in range(a.size):
            e[i] = compiled._exp_minus(a[i], c)
            lp[i] = compiled._log1p_unit(e[i], c)

    a = np.linspace(0, arg_max, 2_000_001, dtype=dtype)
    e, lp = np.empty_like(a), np.empty_like(a)
    series(a, e, lp, compiled.SERIES[dtype])
    exact_e = np.exp(-a.astype(exact_dtype))
    exact_lp = np.log1p(e.astype(exact_dtype))  # log1p of the e it was given
    assert _ulps(e, exact_e).max() < max_ulps[0]
    assert _ulps(lp, exact_lp).max() < max_ulps[1]
    assert e[0] == 1 and lp[0] == np.log(np.asarray(2, dtype))


@pytest.mark.parametrize("dtype,arg_max", [("float32", 87.0), ("float64", 708.0)])
def test_bernoulli_kernel_at_the_edges_of_its_range(dtype, arg_max) -> None:
    """Past exp(-arg_max) the kernel's e is 0 (the exact value is below the smallest normal
    number); infinite logits give the limits of the loss and gradient; NaN stays NaN."""
    m, huge = arg_max, np.finfo(dtype).max / 2
    row = [0.0, -0.0, m - 0.1, 0.1 - m, m, -m, m + 1, -m - 1, m + 17, -m - 17, huge, -huge]
    logits = np.array([row], dtype=dtype)
    x = np.array([[0, 1, 0, 1, 1, 0, 0, 1, 1, 0, 1, 0]], dtype=dtype)
    grad = np.empty_like(logits)
    loss = compiled.bernoulli_nll_and_grad(logits, x, grad)
    wide = logits.astype(np.longdouble)
    exact_loss = (np.logaddexp(0, wide) - x * wide).sum()
    rtol = 1e-6 if dtype == "float32" else 1e-14
    np.testing.assert_allclose(float(loss), float(exact_loss), rtol=rtol)
    with np.errstate(over="ignore"):
        exact_grad = (1 / (1 + np.exp(-wide)) - x).astype(np.float64)
    tiny = float(np.finfo(dtype).tiny)  # the cut-off's largest error: exp(-a) < tiny there
    np.testing.assert_allclose(grad, exact_grad, rtol=rtol, atol=tiny)
    for bad, loss_limit, grad_limit in ((np.inf, np.nan, 0), (-np.inf, np.inf, -1)):
        logits[0, 3] = bad  # x = 1: softplus(l) - l is 0 - inf or inf - inf in the limit
        loss = compiled.bernoulli_nll_and_grad(logits, x, grad)
        np.testing.assert_equal(float(loss), loss_limit)
        assert grad[0, 3] == grad_limit
    logits[0, 3] = np.nan
    loss = compiled.bernoulli_nll_and_grad(logits, x, grad)
    assert np.isnan(float(loss)) and np.isnan(grad[0, 3]) and np.isfinite(np.delete(grad, 3)).all()


@settings(max_examples=30, deadline=None)
@given(
    S=st.integers(1, 4),
    B=st.integers(1, 20),
    D=st.integers(1, 60),
    dtype=st.sampled_from(["float32", "float64"]),
    scale=st.sampled_from([0.1, 3.0, 40.0]),
    seed=st.integers(0, 2**16),
)
def test_bernoulli_log_prob_kernel_equals_numpy(S, B, D, dtype, scale, seed) -> None:
    """The evaluation's log p(x|z) for (S, B, D) logits against (B, D) data (the importance
    samples of a block of examples), and for (B, D) logits: the kernel and NumPy agree."""
    from scratchvae.evaluate import log_px_given_z
    from scratchvae.models import Likelihood

    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((S, B, D)) * scale).astype(dtype)
    x = rng.random((B, D)).astype(dtype)
    x[rng.random((B, D)) < 0.3] = 0
    lik = Likelihood("bernoulli")
    for out in (logits, logits[0]):
        got = log_px_given_z(lik, out, x)
        with kernels(False):
            want = log_px_given_z(lik, out, x)
        assert got.shape == want.shape == out.shape[:-1] and got.dtype == np.dtype(dtype)
        rtol = 1e-5 if dtype == "float32" else 1e-12
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())


def test_compiled_bernoulli_needs_no_work_buffer(kernels_on) -> None:
    from scratchvae.losses import bernoulli_work_needed

    for dtype in ("float32", "float64"):
        assert not bernoulli_work_needed(np.zeros((2, 3), dtype))
        assert bernoulli_work_needed(np.zeros((2, 3), dtype)[:, :2])  # not contiguous: NumPy
        vae = VAE(12, [8], 2, backend=Backend("numpy", dtype))
        vae.loss_and_grads(np.zeros((4, 12), dtype))
        assert "lik.work" not in vae.workspace._arrays


def test_bernoulli_loss_takes_its_buffers_and_refuses_a_wrong_work_shape() -> None:
    rng = np.random.default_rng(0)
    logits, x = rng.standard_normal((3, 5)), (rng.random((3, 5)) < 0.5).astype(float)
    want_loss, want_grad = bernoulli_nll_and_grad(logits, x)
    out, work = np.empty((3, 5)), np.empty((2, 3, 5))
    loss, grad = bernoulli_nll_and_grad(logits, x, out=out, work=work)
    assert grad is out
    np.testing.assert_allclose(grad, want_grad, rtol=1e-14)
    np.testing.assert_allclose(float(loss), float(want_loss), rtol=1e-14)
    with pytest.raises(ValueError, match=r"work must have shape \(2, \*logits.shape\)"):
        bernoulli_nll_and_grad(logits, x, out=out, work=np.empty((3, 5)))


@settings(max_examples=30, deadline=None)
@given(
    B=st.integers(1, 30),
    H=st.integers(1, 50),
    dtype=st.sampled_from(["float32", "float64"]),
    seed=st.integers(0, 2**16),
)
def test_relu_kernels_equal_the_numpy_ops(B, H, dtype, seed) -> None:
    rng = np.random.default_rng(seed)
    a, dy = (rng.standard_normal((B, H)).astype(dtype) for _ in range(2))
    b = rng.standard_normal(H).astype(dtype)
    a[0, 0], dy[-1, -1] = np.nan, np.nan  # NaN goes where NumPy sends it
    want_h = relu_forward(a + b)[0]
    got_h = compiled.bias_relu(a, b, out=np.empty_like(a))
    np.testing.assert_array_equal(got_h, want_h)
    want_da = relu_backward(want_h, dy)
    want_db = want_da.sum(axis=0)
    db = np.empty(H, dtype)
    got_da = compiled.relu_backward_bias_grad(want_h, dy, np.empty_like(dy), db)
    np.testing.assert_array_equal(got_da, want_da)
    tol = 1e-5 if dtype == "float32" else 1e-13
    np.testing.assert_allclose(db, want_db, rtol=tol, atol=tol * B)


@settings(max_examples=30, deadline=None)
@given(
    B=st.integers(1, 40),
    L=st.integers(1, 30),
    dtype=st.sampled_from(["float32", "float64"]),
    logvar_scale=st.sampled_from([0.1, 2.0, 20.0]),
    kl_weight=st.sampled_from([0.0, 0.3, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_latent_kernels_equal_the_numpy_ops(B, L, dtype, logvar_scale, kl_weight, seed) -> None:
    rng = np.random.default_rng(seed)
    mu, logvar, eps, dz = (rng.standard_normal((B, L)).astype(dtype) for _ in range(4))
    logvar *= logvar_scale
    h = np.concatenate([mu, logvar], axis=1)  # the encoder's output [mu | logvar]
    want_z, (_, want_sigma) = reparam_forward(mu, logvar, eps)
    want_kl = gaussian_kl(mu, logvar)
    z, sigma = np.empty_like(mu), np.empty_like(mu)
    kl = compiled.latent_forward(h, eps, z, sigma)
    tol = 1e-6 if dtype == "float32" else 1e-14
    assert kl.dtype == np.dtype(dtype) and z.dtype == np.dtype(dtype)
    np.testing.assert_allclose(sigma, want_sigma, rtol=tol)
    np.testing.assert_allclose(z, want_z, rtol=tol, atol=tol * np.abs(want_z).max())
    np.testing.assert_allclose(float(kl), float(want_kl), rtol=10 * tol)
    dmu, dlogvar = reparam_backward((eps, want_sigma), dz)
    dmu_kl, dlogvar_kl = gaussian_kl_backward(mu, logvar)
    want = np.concatenate([dmu + kl_weight * dmu_kl, dlogvar + kl_weight * dlogvar_kl], axis=1)
    got = compiled.latent_backward(dz, eps, want_sigma, h, kl_weight, out=np.empty_like(h))
    np.testing.assert_allclose(got, want, rtol=10 * tol, atol=10 * tol * np.abs(want).max())


@settings(max_examples=30, deadline=None)
@given(
    B=st.integers(1, 40),
    H=st.integers(1, 60),
    dtype=st.sampled_from(["float32", "float64"]),
    seed=st.integers(0, 2**16),
)
def test_column_sum_is_numpys_sum_over_rows_bit_for_bit(B, H, dtype, seed) -> None:
    a = (np.random.default_rng(seed).standard_normal((B, H)) * 1e3).astype(dtype)
    a[-1, 0] = np.nan
    got = compiled.column_sum(a, np.empty(H, dtype))
    np.testing.assert_array_equal(got, a.sum(axis=0))


def test_dense_backward_uses_the_column_sum_for_its_bias(kernels_on, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(compiled, "_column_sum", _counting(compiled._column_sum, calls))
    x, dy, W = np.ones((4, 3)), np.arange(8.0).reshape(4, 2), np.ones((3, 2))
    _, _, db = dense_backward(W, x, dy, out_db=np.empty(2))
    assert calls == [8]
    np.testing.assert_array_equal(db, [12.0, 16.0])
    _, _, db = dense_backward(W, x, dy)  # no buffer given: NumPy allocates it
    assert calls == [8]
    np.testing.assert_array_equal(db, [12.0, 16.0])


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_model_step_with_kernels_equals_numpy(activation, dropout, dtype) -> None:
    """The whole step (workspace, fused bias + ReLU, loss, latent and Adam kernels) vs NumPy:
    same losses and parameters after a few Adam steps."""
    finals = []
    for on in (True, False):
        with kernels(on):
            bk = Backend("numpy", dtype, seed=2)
            model = VAE(
                40, hidden=(24, 16), latent=4, activation=activation, dropout=dropout, backend=bk
            )
            opt = Adam(1e-2)
            losses = []
            for _ in range(4):
                terms, grads = model.loss_and_grads(bk.uniform((9, 40)))
                opt.step(model.params, grads)
                losses.append(float(terms["loss"]))
            finals.append((losses, model.params.flat.copy()))
    (loss_c, p_c), (loss_n, p_n) = finals
    rtol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(loss_c, loss_n, rtol=rtol)
    np.testing.assert_allclose(p_c, p_n, rtol=100 * rtol, atol=100 * rtol)


def test_warm_up_compiles_every_kernel_for_the_dtype(kernels_on) -> None:
    compiled.warm_up("float64")
    kernels = (
        compiled._adam,
        compiled._bias_relu,
        compiled._relu_backward_bias_grad,
        compiled._bernoulli_nll_and_grad,
        compiled._latent_forward,
        compiled._latent_backward,
        compiled._column_sum,
        compiled._bernoulli_log_prob,
    )
    for kernel in kernels:
        assert any("float64" in str(sig) for sig in kernel.signatures)
    compiled.warm_up("float32")
    for kernel in kernels:
        assert any("float32" in str(sig) for sig in kernel.signatures)
    compiled.ENABLED = False
    compiled.warm_up("float32")  # a no-op, no error
