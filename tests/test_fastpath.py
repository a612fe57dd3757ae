"""The fast variants agree with the readable math they replace.

Each fast path (softplus as max(x,0) + log1p(e^-|x|), the Bernoulli loss sharing one softplus
pass between value and gradient, the fused threaded Adam, the CuPy kernels) sits next to its
readable version; these tests pin them together. GPU tests compare CuPy against NumPy on the
same input and run with `pytest -m gpu` on a CUDA machine.
"""

from __future__ import annotations

import numpy as np
import pytest

from scratchvae import backend as backend_mod
from scratchvae import compiled
from scratchvae.backend import Backend, get_special, run_chunked, to_numpy
from scratchvae.losses import (
    bernoulli_nll,
    bernoulli_nll_backward,
    bernoulli_nll_backward_from_softplus,
    bernoulli_nll_with_softplus,
)
from scratchvae.models import VAE, Likelihood, build_model
from scratchvae.optim import Adam, adam_chunk

EXTREMES = [-1000.0, -80.0, -30.0, -1e-8, 0.0, 1e-8, 30.0, 80.0, 1000.0]


# ------------------------------------------------------------------------------- softplus
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-15), (np.float32, 1e-6)])
def test_softplus_matches_logaddexp(dtype, rtol) -> None:
    x = np.concatenate([np.linspace(-60, 60, 4001), EXTREMES]).astype(dtype)
    got = get_special(x).softplus(x)
    want = np.logaddexp(0, x.astype(np.float64))
    assert got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=rtol, atol=0)  # relative: tiny values too


def test_softplus_out_and_infinities() -> None:
    x = np.array([-np.inf, -1.0, 0.0, 2.0, np.inf])
    out = np.empty_like(x)
    got = get_special(x).softplus(x, out=out)
    assert got is out
    np.testing.assert_array_equal(got[[0, 4]], [0.0, np.inf])
    np.testing.assert_allclose(got[1:4], np.logaddexp(0, x[1:4]), rtol=1e-15)
    np.testing.assert_allclose(get_special(x).log_expit(x[1:4]), -np.logaddexp(0, -x[1:4]))


# ------------------------------------------------------------------------------- Bernoulli loss
def _logits_and_pixels(dtype, seed=0, shape=(7, 33)):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal(shape) * 12).astype(dtype)
    logits[0, : len(EXTREMES)] = EXTREMES  # saturated logits in both directions
    x = rng.random(shape).astype(dtype)  # grey levels in [0, 1]
    x[1] = rng.random(shape[1]) < 0.5  # and binary pixels
    return logits, x


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_bernoulli_fast_value_matches_reference(dtype, rtol) -> None:
    logits, x = _logits_and_pixels(dtype)
    value, sp = bernoulli_nll_with_softplus(logits, x)
    np.testing.assert_allclose(value, bernoulli_nll(logits, x), rtol=rtol)
    np.testing.assert_allclose(sp, np.logaddexp(0, logits.astype(np.float64)), rtol=10 * rtol)


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_bernoulli_fast_gradient_matches_reference(dtype, rtol) -> None:
    logits, x = _logits_and_pixels(dtype, seed=1)
    _, sp = bernoulli_nll_with_softplus(logits, x)
    got = bernoulli_nll_backward_from_softplus(logits, x, sp)
    want = bernoulli_nll_backward(logits.astype(np.float64), x.astype(np.float64))
    assert got.shape == logits.shape and got.dtype == dtype
    # relative to the largest entry: entries that cancel (sigmoid(l) ~ x) carry rounding only
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())
    # where x = 0 the gradient is sigmoid(l)/B itself: keep its relative precision when tiny
    zero = x == 0
    np.testing.assert_allclose(got[zero], want[zero], rtol=100 * rtol)


def test_likelihood_backward_with_and_without_cache_agree() -> None:
    logits, x = _logits_and_pixels(np.float64, seed=2)
    lik = Likelihood("bernoulli")
    value, cache = lik.nll_and_cache(logits, x)
    np.testing.assert_allclose(value, lik.nll(logits, x), rtol=1e-12)
    want = lik.backward(logits, x)
    np.testing.assert_allclose(
        lik.backward(logits, x, cache), want, rtol=1e-12, atol=1e-12 * np.abs(want).max()
    )
    assert Likelihood("gaussian").nll_and_cache(logits, x)[1] is None


def test_vae_step_equals_the_reference_ops(monkeypatch) -> None:
    """Whole-model: the fast step's loss and gradients equal those of the readable ops."""
    bk = Backend("numpy", "float64", seed=3)
    model = VAE(12, hidden=(9,), latent=3, backend=bk)
    x = bk.uniform((6, 12))
    noise = model.draw_noise(6)
    terms, grads = model.loss_and_grads(x, noise)
    fast_loss, fast = to_numpy(terms["loss"]), grads.flat.copy()
    # the reference: the likelihood without its cache -> bernoulli_nll(_backward), expit
    monkeypatch.setattr(
        Likelihood, "nll_and_cache", lambda self, out, x, ws=None: (self.nll(out, x), None)
    )
    terms, cache = model.forward(x, noise)  # and no workspace: every array freshly allocated
    grads = model.backward(cache)
    np.testing.assert_allclose(fast_loss, to_numpy(terms["loss"]), rtol=1e-13)
    np.testing.assert_allclose(fast, grads.flat, rtol=1e-10, atol=1e-14)


# ------------------------------------------------------------------------------- Adam
@pytest.mark.parametrize("threads", ["1", "2", "3"])
def test_fused_adam_matches_reference(monkeypatch, threads) -> None:
    monkeypatch.setenv("SCRATCHVAE_THREADS", threads)
    monkeypatch.setattr(compiled, "ENABLED", False)  # the NumPy path (Numba's: test_compiled)
    rng = np.random.default_rng(5)
    n = 100_003  # odd size: uneven chunks
    p0, m0 = rng.standard_normal(n), rng.standard_normal(n) * 0.1
    v0 = rng.random(n) * 0.01
    results = []
    for fused in (True, False):
        opt = Adam(3e-3, betas=(0.8, 0.99), eps=1e-6, fused=fused)
        opt.t = 4  # mid-run bias corrections
        opt.state = {"m.w": m0.copy(), "v.w": v0.copy()}
        p = {"w": p0.copy()}
        for k in range(3):
            opt.step(p, {"w": np.sin(p0 * (k + 1))})
        results.append((p["w"], opt.state["m.w"], opt.state["v.w"]))
    for got, want in zip(*results, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_fused_adam_on_param_store_is_threaded_and_matches(monkeypatch) -> None:
    monkeypatch.setenv("SCRATCHVAE_THREADS", "2")
    monkeypatch.setattr(compiled, "ENABLED", False)  # the NumPy path (Numba's: test_compiled)
    bk = Backend("numpy", "float64", seed=6)
    model = VAE(300, hidden=(120,), latent=8, backend=bk)  # 80k parameters: 2 chunks
    x = bk.uniform((16, 300))
    grads = [model.loss_and_grads(x, model.draw_noise(16))[1].flat.copy() for _ in range(3)]
    start = model.params.flat.copy()
    finals = []
    for fused in (True, False):
        model.params.flat[...] = start
        opt = Adam(1e-2, fused=fused)
        for g in grads:
            model.grads.flat[...] = g
            opt.step(model.params, model.grads)
        finals.append(model.params.flat.copy())
        state = opt.state_dict()
    np.testing.assert_allclose(finals[0], finals[1], rtol=1e-12, atol=1e-15)
    assert set(state) == {"t", "m.flat", "v.flat"}  # scratch space is not part of the state
    assert not np.allclose(finals[0], start)


def test_adam_chunk_first_step_moves_each_parameter_by_lr() -> None:
    g = np.array([1e-3, -2.0, 50.0])
    p, m, v, tmp = np.zeros(3), np.zeros(3), np.zeros(3), np.empty(3)
    b1, b2, lr = 0.9, 0.999, 0.1
    c2 = np.sqrt(1 - b2)
    adam_chunk(p, g, m, v, tmp, b1, b2, lr * c2 / (1 - b1), 1e-12 * c2)
    np.testing.assert_allclose(p, -lr * np.sign(g), rtol=1e-6)


# ------------------------------------------------------------------------------- run_chunked
@pytest.mark.parametrize(
    "n, threads, min_chunk", [(10, 2, 4), (1000, 3, 100), (7, 8, 1), (5, 2, 64)]
)
def test_run_chunked_covers_every_index_once(monkeypatch, n, threads, min_chunk) -> None:
    monkeypatch.setenv("SCRATCHVAE_THREADS", str(threads))
    hits = np.zeros(n, dtype=np.int64)

    def mark(s: slice) -> None:
        hits[s] += 1

    run_chunked(mark, n, min_chunk=min_chunk)
    np.testing.assert_array_equal(hits, 1)


def test_run_chunked_reraises_a_worker_error(monkeypatch) -> None:
    monkeypatch.setenv("SCRATCHVAE_THREADS", "2")

    def fail_late(s: slice) -> None:
        if s.start > 0:
            raise ZeroDivisionError("chunk failed")

    with pytest.raises(ZeroDivisionError, match="chunk failed"):
        run_chunked(fail_late, 1000, min_chunk=10)


def test_bad_thread_count_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setenv("SCRATCHVAE_THREADS", "two")
    with pytest.raises(backend_mod.BackendError, match="SCRATCHVAE_THREADS must be an integer"):
        backend_mod.cpu_threads()


def test_thread_count_defaults_to_one_and_auto_uses_the_cores(monkeypatch) -> None:
    monkeypatch.delenv("SCRATCHVAE_THREADS", raising=False)
    assert backend_mod.cpu_threads() == 1
    monkeypatch.setenv("SCRATCHVAE_THREADS", "auto")
    assert 1 <= backend_mod.cpu_threads() <= 8


# ------------------------------------------------------------------------------- GPU kernels
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cupy_bernoulli_kernels_match_numpy(dtype) -> None:
    cp = Backend("cupy", dtype).xp
    logits, x = _logits_and_pixels(np.dtype(dtype).type, seed=7)
    value, sp = bernoulli_nll_with_softplus(cp.asarray(logits), cp.asarray(x))
    grad = bernoulli_nll_backward_from_softplus(cp.asarray(logits), cp.asarray(x), sp)
    rtol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(to_numpy(value), bernoulli_nll(logits, x), rtol=rtol)
    want = bernoulli_nll_backward(logits, x)
    np.testing.assert_allclose(to_numpy(grad), want, rtol=rtol, atol=rtol * np.abs(want).max())


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cupy_fused_adam_matches_numpy_reference(dtype) -> None:
    bk_np, bk_cp = Backend("numpy", dtype, seed=8), Backend("cupy", dtype, seed=8)
    rng = np.random.default_rng(8)
    p0 = rng.standard_normal(5000).astype(dtype)
    grads = [rng.standard_normal(5000).astype(dtype) for _ in range(4)]
    ref, fused = Adam(1e-2, fused=False), Adam(1e-2, fused=True)
    p_np, p_cp = {"w": bk_np.asarray(p0)}, {"w": bk_cp.asarray(p0)}
    for g in grads:
        ref.step(p_np, {"w": bk_np.asarray(g)})
        fused.step(p_cp, {"w": bk_cp.asarray(g)})
    rtol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(to_numpy(p_cp["w"]), p_np["w"], rtol=rtol, atol=rtol)
    np.testing.assert_allclose(to_numpy(fused.state["v.w"]), ref.state["v.w"], rtol=10 * rtol)


@pytest.mark.gpu
def test_cupy_vae_step_matches_numpy() -> None:
    """Same parameters, data and noise: the whole CuPy step equals the NumPy step (float64)."""
    bk_np, bk_cp = Backend("numpy", "float64", seed=9), Backend("cupy", "float64", seed=9)
    m_np = VAE(30, hidden=(16,), latent=4, backend=bk_np)
    m_cp = VAE(30, hidden=(16,), latent=4, backend=bk_cp)
    m_cp.params.flat[...] = bk_cp.asarray(m_np.params.flat)
    x = bk_np.uniform((8, 30))
    noise = m_np.draw_noise(8)
    t_np, g_np = m_np.loss_and_grads(x, noise)
    t_cp, g_cp = m_cp.loss_and_grads(
        bk_cp.asarray(x), {k: bk_cp.asarray(v) for k, v in noise.items()}
    )
    np.testing.assert_allclose(to_numpy(t_cp["loss"]), t_np["loss"], rtol=1e-12)
    np.testing.assert_allclose(to_numpy(g_cp.flat), g_np.flat, rtol=1e-9, atol=1e-13)


@pytest.mark.gpu
def test_cupy_relu_backward_kernel_matches_numpy() -> None:
    from scratchvae.activations import relu_backward, relu_forward

    cp = Backend("cupy", "float64").xp
    rng = np.random.default_rng(10)
    x, dy = rng.standard_normal((9, 13)), rng.standard_normal((9, 13))
    x[0, :3] = 0.0  # the kink: gradient 0 on both
    y, _ = relu_forward(x)
    got = relu_backward(cp.asarray(y), cp.asarray(dy))
    np.testing.assert_array_equal(to_numpy(got), relu_backward(y, dy))


@pytest.mark.gpu
def test_cupy_softplus_matches_numpy() -> None:
    cp = Backend("cupy", "float64").xp
    x = np.concatenate([np.linspace(-60, 60, 1001), EXTREMES])
    got = get_special(cp.asarray(x)).softplus(cp.asarray(x))
    np.testing.assert_allclose(to_numpy(got), get_special(x).softplus(x), rtol=1e-14)


# ------------------------------------------------------------------------------- workspace
@pytest.mark.parametrize(
    "kind, options",
    [
        ("vae", {"dropout": 0.2}),
        ("vae", {"activation": "elu", "likelihood": "gaussian-learned"}),
        ("ae", {"activation": "tanh", "likelihood": "mse"}),
        ("dae", {"noise": "mask", "noise_level": 0.3, "activation": "leaky_relu"}),
        ("sae", {"activation": "sigmoid"}),
        ("vae", {"activation": "softplus"}),
    ],
)
def test_loss_and_grads_with_workspace_equals_fresh_arrays(kind, options) -> None:
    """The reused buffers change nothing: same terms and gradients as forward + backward with
    fresh arrays, step after step, also when the batch size changes (a short last batch)."""
    bk = Backend("numpy", "float64", seed=8)
    model = build_model(
        {"model": kind, "n_features": 10, "hidden": (7, 6), "latent": 3, **options}, bk
    )
    for B in (5, 5, 3, 5):
        x = bk.uniform((B, 10))
        noise = model.draw_noise(B)
        terms, cache = model.forward(x, noise)
        want_terms, want = terms, model.backward(cache).flat.copy()
        got_terms, got = model.loss_and_grads(x, noise)
        for name in want_terms:
            assert float(got_terms[name]) == float(want_terms[name]), name
        np.testing.assert_array_equal(got.flat, want)


def test_workspace_buffers_are_reused_across_steps() -> None:
    bk = Backend("numpy", "float32", seed=0)
    model = VAE(20, hidden=(16,), latent=4, backend=bk)
    x = bk.uniform((8, 20))
    model.loss_and_grads(x)
    buffers = {name: id(a) for name, a in model.workspace._arrays.items()}
    assert len(buffers) >= 8 and model.workspace.nbytes > 0
    model.loss_and_grads(x)
    assert {name: id(a) for name, a in model.workspace._arrays.items()} == buffers
    model.loss_and_grads(x[:3])  # another batch size: new buffers, same names
    assert set(model.workspace._arrays) == set(buffers)
