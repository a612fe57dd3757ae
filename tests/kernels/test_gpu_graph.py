"""The GPU's graph-safe pieces (``pytest -m gpu``; skipped without CuPy and a CUDA device): the
cuBLAS binding, the counter-based generator, and the training step replayed as a CUDA graph."""

from __future__ import annotations

import numpy as np  # numpy-boundary: host-side references
import pytest

pytestmark = pytest.mark.gpu
needs_real_gpu = pytest.mark.needs_real_gpu  # a stream capture: CuPy's host stand-in has none


@pytest.fixture(scope="module")
def cp():
    from scratchvae.backend import import_cupy

    return import_cupy()


# ------------------------------------------------------------------ cuBLAS
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (True, False), (False, True)])
def test_gemm_matches_numpy(cp, dtype, trans_a, trans_b):
    from scratchvae.kernels.cublas import gemm

    rng = np.random.default_rng(0)
    m, k, n = 37, 53, 29
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    out = cp.empty((m, n), dtype=dtype)
    gemm(cp.asarray(a), cp.asarray(b), out, trans_a, trans_b)
    want = (a.T if trans_a else a) @ (b.T if trans_b else b)
    tol = (1e-5 if dtype == "float32" else 1e-12) * np.abs(a).max() * np.abs(b).max() * k
    np.testing.assert_allclose(out.get(), want, rtol=0, atol=tol)  # error ~ eps k |a| |b|
    with pytest.raises(ValueError, match="mismatched"):
        gemm(cp.asarray(a), cp.asarray(b), cp.empty((m, n + 1), dtype=dtype), trans_a, trans_b)


@needs_real_gpu
def test_gemm_is_captured_and_replays_on_new_input(cp):
    from scratchvae.kernels.cublas import gemm

    a, b = cp.ones((8, 4), "float32"), cp.ones((4, 3), "float32")
    out = cp.zeros((8, 3), "float32")
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        s.begin_capture()
        gemm(a, b, out)
        graph = s.end_capture()
    graph.launch(s)
    s.synchronize()
    assert float(out[0, 0]) == 4.0
    a[...] = 2
    graph.launch(s)
    s.synchronize()
    assert float(out[0, 0]) == 8.0


# ------------------------------------------------------------------ the generator
def test_counter_rng_moments_and_fresh_numbers(cp):
    from scratchvae.kernels.gpu_random import CounterRNG

    rng = CounterRNG(seed=7)
    z1 = rng.standard_normal((1000, 100), "float32").get().astype("float64")
    z2 = rng.standard_normal((1000, 100), "float32").get().astype("float64")
    n = z1.size
    assert abs(z1.mean()) < 6 / np.sqrt(n) and abs(z1.var() - 1) < 6 * np.sqrt(2 / n)
    assert abs((z1**3).mean()) < 6 * np.sqrt(15 / n)  # skewness 0
    assert abs((z1**4).mean() - 3) < 6 * np.sqrt(96 / n)  # kurtosis 3
    assert abs(np.corrcoef(z1.ravel(), z2.ravel())[0, 1]) < 6 / np.sqrt(n)
    u = rng.random((200_000,), "float32").get()
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 6 * np.sqrt(1 / 12 / u.size)
    again = CounterRNG(seed=7)
    np.testing.assert_array_equal(again.standard_normal((1000, 100), "float32").get(), z1)
    assert rng.state() == {"seed": 7, "counter": 3}
    resumed = CounterRNG(seed=7, counter=2)
    np.testing.assert_array_equal(resumed.random((200_000,), "float32").get(), u)


@needs_real_gpu
def test_a_captured_draw_gives_new_numbers_at_every_replay(cp):
    from scratchvae.kernels.gpu_random import CounterRNG

    rng = CounterRNG(seed=1)
    out = cp.zeros((4096,), "float64")
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        s.begin_capture()
        out[...] = rng.standard_normal((4096,), "float64")
        graph = s.end_capture()
    draws = []
    for _ in range(3):
        graph.launch(s)
        s.synchronize()
        draws.append(out.get())
    assert not np.array_equal(draws[0], draws[1]) and not np.array_equal(draws[1], draws[2])
    both = np.concatenate(draws)
    assert abs(both.mean()) < 6 / np.sqrt(both.size) and abs(both.var() - 1) < 0.05


# ------------------------------------------------------------------ the captured step
def _trainer(cp, seed=0, n=256, **train):
    from scratchvae.backend import Backend
    from scratchvae.data import dataset_from_array
    from scratchvae.models import VAE
    from scratchvae.train import TrainConfig, Trainer

    x = np.random.default_rng(3).random((n, 12)).astype("float32")
    data = dataset_from_array(x, name="random")
    model = VAE(12, hidden=[16], latent=3, backend=Backend("cupy", "float64", seed=seed))
    train = {"epochs": 2, **train}
    config = TrainConfig(batch_size=32, val_fraction=0, progress=False, **train)
    return Trainer(model, data, config)


@needs_real_gpu
@pytest.mark.parametrize("n", [256, 250], ids=["full-batches", "short-last-batch"])
def test_captured_training_equals_uncaptured_training(cp, n):
    """The same seed, data and steps: the graph's replays and the plain step give the same
    parameters (the same kernels, the same random numbers, in the same order). With a short
    last batch, plain steps of another shape run between the replays: the graph's arrays must
    survive them (a workspace that replaced its arrays on a new shape once freed them, and
    the replays of the next epoch wrote into memory handed out again)."""
    from scratchvae.backend import kernels

    captured = _trainer(cp, n=n, epochs=3)
    captured.fit()
    graph = captured.step_runner
    assert graph.fallback_reason is None and graph.replays > 0
    with kernels(False):  # the readable step, never captured: same numbers to rounding
        plain = _trainer(cp, n=n, epochs=3)
        plain.fit()
    np.testing.assert_allclose(
        captured.model.params.flat.get(), plain.model.params.flat.get(), rtol=1e-9, atol=1e-12
    )
    assert captured.history[-1]["train_loss"] == pytest.approx(
        plain.history[-1]["train_loss"], rel=1e-9
    )


@needs_real_gpu
def test_warm_up_runs_uncaptured_until_the_kl_weight_settles(cp):
    trainer = _trainer(cp, warmup_epochs=1)
    trainer.fit()
    graph = trainer.step_runner
    assert graph.fallback_reason is None
    assert graph.replays == trainer.steps_per_epoch - 2  # epoch 1: warm-up; epoch 2: replays


@needs_real_gpu
@pytest.mark.xfail(
    strict=False,
    reason="unverified on a GPU: clip_by_global_norm's xp.vdot goes through cuBLAS, which CuPy "
    "may refuse inside a capture (then --clip-norm runs uncaptured and the trainer says so)",
)
def test_a_clipped_step_is_captured(cp):
    trainer = _trainer(cp, clip_norm=1.0)
    trainer.fit()
    graph = trainer.step_runner
    assert graph.fallback_reason is None and graph.replays > 0
