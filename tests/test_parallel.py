"""The batch split across CPU threads (scratchvae/parallel.py, scratchvae/backend/threads.py):
the serial step's numbers to rounding, the same numbers every time for a seed and a thread
count, the noise cut as the serial step uses it, and the kernels' slices on threads."""

from __future__ import annotations

import importlib
import time

import numpy as np  # numpy-boundary: comparing host arrays
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchvae import parallel
from scratchvae.autoencoders import DenoisingAE, SparseAE
from scratchvae.backend import Backend, cpu_threads, kernels, row_chunks, run_parallel, threads
from scratchvae.kernels import cpu
from scratchvae.models import AE, VAE
from scratchvae.optim import Adam

threads_module = importlib.import_module("scratchvae.backend.threads")  # its name: the function

MODELS = {
    "vae": (VAE, {}),
    "vae-k3-dropout": (VAE, {"k": 3, "dropout": 0.2}),
    "iwae-dreg": (VAE, {"objective": "iwae", "k": 4, "estimator": "dreg"}),
    "ae-gaussian": (AE, {"likelihood": "gaussian"}),
    "dae-mask": (DenoisingAE, {"noise": "mask"}),
}


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of a few rows, so that small batches split."""
    monkeypatch.setattr(threads_module, "MIN_ROWS", 3)


def _step(model, x, noise, n_threads):
    with threads(n_threads):
        terms, grads = model.loss_and_grads(x, noise)
        return {k: float(v) for k, v in terms.items()}, grads.flat.copy()


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("compiled", [True, False], ids=["kernels", "numpy"])
def test_split_step_is_the_serial_step_float64(name, compiled, small_chunks):
    cls, kw = MODELS[name]
    bk = Backend("numpy", "float64", seed=0)
    model = cls(20, hidden=[7], latent=3, backend=bk, **kw)
    x = bk.uniform((23, 20))
    noise = model.draw_noise(23)
    with kernels(compiled):
        terms, grads = _step(model, x, noise, 1)
        for n in (2, 3, 5, 7):
            with threads(n):
                assert len(row_chunks(23)) == n
            t, g = _step(model, x, noise, n)
            np.testing.assert_allclose(g, grads, rtol=1e-12, atol=1e-12 * np.abs(grads).max())
            for k in terms:
                assert abs(t[k] - terms[k]) <= 1e-12 * max(1.0, abs(terms[k])), k


@pytest.mark.parametrize("name", [*MODELS, "sae"])
def test_split_step_keeps_the_terms_in_the_models_dtype(name, small_chunks):
    """The chunks' terms are weighted and summed in float32: NumPy 1 turned a float32 scalar
    times a Python float (the chunk's share, beta) or plus sum()'s 0 into float64."""
    cls, kw = MODELS.get(name, (SparseAE, {}))
    model = cls(20, hidden=[7], latent=3, backend=Backend("numpy", "float32", seed=0), **kw)
    for n in (1, 3):
        with threads(n):
            terms, grads = model.loss_and_grads(model.backend.uniform((23, 20)), kl_weight=0.3)
        assert {k: v.dtype for k, v in terms.items()} == dict.fromkeys(terms, np.float32)
        assert grads.flat.dtype == np.float32


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(6, 40),
    n_threads=st.integers(2, 6),
    hidden=st.lists(st.integers(1, 9), min_size=0, max_size=2),
    k=st.integers(1, 3),
)
def test_split_matches_serial_over_shapes(rows, n_threads, hidden, k):
    """Hypothesis over batch, thread count, depth and samples per example (float64)."""
    old, threads_module.MIN_ROWS = threads_module.MIN_ROWS, 2
    try:
        bk = Backend("numpy", "float64", seed=rows)
        model = VAE(11, hidden=hidden, latent=2, backend=bk, k=k, objective="iwae")
        x = bk.uniform((rows, 11))
        noise = model.draw_noise(rows)
        _, serial = _step(model, x, noise, 1)
        _, split = _step(model, x, noise, n_threads)
        np.testing.assert_allclose(split, serial, rtol=1e-12, atol=1e-12 * np.abs(serial).max())
    finally:
        threads_module.MIN_ROWS = old


def test_float32_split_is_the_serial_step_to_rounding(small_chunks):
    bk = Backend("numpy", "float32", seed=0)
    model = VAE(64, hidden=[32], latent=4, backend=bk)
    x = bk.uniform((40, 64))
    noise = model.draw_noise(40)
    t1, g1 = _step(model, x, noise, 1)
    t4, g4 = _step(model, x, noise, 4)
    scale = np.abs(g1).max()
    assert np.abs(g4 - g1).max() <= 1e-5 * scale
    assert abs(t4["loss"] - t1["loss"]) <= 1e-5 * abs(t1["loss"])


def test_the_same_seed_and_thread_count_give_the_same_numbers_twice(small_chunks):
    """A few Adam steps, twice from the same seed, with 3 threads: bit for bit."""

    def run():
        bk = Backend("numpy", "float32", seed=7)
        model, opt = VAE(30, hidden=[16], latent=3, backend=bk, dropout=0.1), Adam(1e-2)
        x = bk.uniform((50, 30))
        with threads(3):
            for _ in range(5):
                opt.step(model.params, model.loss_and_grads(x)[1])
        return model.params.flat.copy()

    np.testing.assert_array_equal(run(), run())


def test_a_setting_changed_after_a_split_step_reaches_the_next_one():
    """The replicas that run the chunks follow the model: a VAE whose beta is set after a
    split step (as a user's own warm-up does) splits the next step with the new beta. They
    were copies made at the first split and kept the old one (16.97 against 19.17 nats)."""
    bk = Backend("numpy", "float64", seed=0)
    model = VAE(20, hidden=[7], latent=3, backend=bk)
    rows = 2 * threads_module.MIN_ROWS + 1
    x, noise = bk.uniform((rows, 20)), model.draw_noise(rows)
    _step(model, x, noise, 2)  # the replicas are made here, with beta 1
    model.beta = 3.0
    with threads(2):
        assert row_chunks(rows) is not None
    t_split, g_split = _step(model, x, noise, 2)
    t_serial, g_serial = _step(model, x, noise, 1)
    assert t_split["loss"] == pytest.approx(t_serial["loss"], rel=1e-12)
    np.testing.assert_allclose(g_split, g_serial, rtol=1e-12, atol=1e-12 * np.abs(g_serial).max())


def test_when_the_batch_is_split(monkeypatch):
    rows = 4 * threads_module.MIN_ROWS
    with threads(1):
        assert row_chunks(rows) is None
    with threads(2):
        assert row_chunks(rows) == [(0, rows // 2), (rows // 2, rows)]
        assert row_chunks(2 * threads_module.MIN_ROWS - 1) is None  # chunks too small
    with threads(16):
        assert len(row_chunks(rows)) == 4
    # the sparse AE's penalty is on the batch's mean: never split, the same numbers
    calls = []
    monkeypatch.setattr(parallel, "split_loss_and_grads", lambda *a: calls.append(a))
    sae = SparseAE(8, hidden=[4], latent=2, backend=Backend("numpy", "float64", seed=0))
    with threads(4):
        sae.loss_and_grads(sae.backend.uniform((rows, 8)))
        vae = VAE(8, hidden=[4], latent=2)
        vae.loss_and_grads(vae.backend.uniform((rows, 8)))
    assert len(calls) == 1 and calls[0][0] is vae


def test_split_noise_takes_each_arrays_rows():
    xp = Backend().xp
    B, k = 5, 3
    eps2, eps3 = xp.arange(B * 2.0).reshape(B, 2), xp.arange(k * B * 2.0).reshape(k, B, 2)
    masks = xp.arange(k * B * 4.0).reshape(k * B, 4)  # row j * B + b: draw j of example b
    part = parallel.split_noise({"a": eps2, "b": eps3, "c": masks}, 1, 3, B)
    np.testing.assert_array_equal(part["a"], eps2[1:3])
    np.testing.assert_array_equal(part["b"], eps3[:, 1:3])
    expected = np.concatenate([masks[j * B + 1 : j * B + 3] for j in range(k)])
    np.testing.assert_array_equal(part["c"], expected)
    assert all(p.flags.c_contiguous for p in part.values())


def test_weighted_sum_kernel_and_body_agree_on_threads(monkeypatch):
    monkeypatch.setattr(cpu, "PARALLEL_MIN", 10)  # slices of 10 elements on 4 threads
    rng = np.random.default_rng(0)
    parts, w = rng.standard_normal((3, 57)), np.array([0.25, 0.5, 0.25])
    out_body, out_kernel = np.zeros(57), np.zeros(57)
    with kernels(False):
        parallel.weighted_sum(out_body, parts, w)
    with threads(4):
        parallel.weighted_sum(out_kernel, parts, w)
    np.testing.assert_array_equal(out_kernel, out_body)
    np.testing.assert_allclose(out_body, w @ parts, rtol=1e-14)


@pytest.mark.skipif(cpu.numba is None, reason="the compiled sum needs numba (scratchvae[fast])")
def test_weighted_sum_takes_threads_by_its_work_not_its_length(monkeypatch):
    # 16 chunks of a split batch: the pass reads 16 arrays of P, 8x Adam's work per element
    monkeypatch.setattr(cpu, "PARALLEL_MIN", 100)
    tasks = []

    def recording(batch):
        tasks.append(len(batch))
        return [task() for task in batch]

    monkeypatch.setattr(cpu, "run_parallel", recording)
    rng = np.random.default_rng(2)
    for chunks, expected in ((2, 1), (16, 4)):  # P = 150: 150 // 100 = 1; 150 * 8 // 100 = 12
        parts, w = rng.standard_normal((chunks, 150)), np.full(chunks, 1 / chunks)
        out = np.zeros(150)
        with threads(4):
            cpu.weighted_sum(out, parts, w)
        assert tasks.pop() == expected
        np.testing.assert_allclose(out, w @ parts, rtol=1e-12, atol=1e-14)


@pytest.mark.skipif(cpu.numba is None, reason="the compiled Adam needs numba (scratchvae[fast])")
def test_adam_on_threads_is_adam_in_one_pass(monkeypatch):
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal(1000).astype(np.float32) for _ in range(2)]
    runs = []
    for n, slice_min in ((1, 1 << 18), (4, 100)):
        monkeypatch.setattr(cpu, "PARALLEL_MIN", slice_min)
        p, g = (a.copy() for a in arrays)
        m, v = np.zeros_like(p), np.zeros_like(p)
        with threads(n):
            cpu.adam_update(p, g, m, v, np.asarray(3), 1e-3, 0.9, 0.999, 1e-8)
        runs.append((p, m, v))
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_run_parallel_returns_in_order_and_raises_the_first_error():
    assert run_parallel([lambda i=i: i * i for i in range(5)]) == [0, 1, 4, 9, 16]

    def boom():
        raise KeyError("task 2")

    with pytest.raises(KeyError, match="task 2"):
        run_parallel([lambda: 1, lambda: 2, boom, lambda: 4])
    # the calling thread's own task failing: the pool's tasks still finish before the raise
    # (the kernels' slices write into shared arrays), and the first error in task order wins
    finished = []

    def slow(i):
        time.sleep(0.1 * i)  # task 0 (this thread's) fails at once, the others later
        finished.append(i)
        raise KeyError(f"task {i}")

    with pytest.raises(KeyError, match="task 0"):
        run_parallel([lambda: slow(0), lambda: slow(1), lambda: slow(2)])
    assert sorted(finished) == [0, 1, 2]


def test_threads_setting_and_its_checks(monkeypatch):
    with threads(3):
        assert cpu_threads() == 3
    with pytest.raises(ValueError, match="whole number >= 1"):
        with threads(0):
            pass
    module = threads_module
    monkeypatch.setenv("SCRATCHVAE_THREADS", "two")
    with pytest.raises(ValueError, match="SCRATCHVAE_THREADS"):
        module._from_environment()
    monkeypatch.setenv("SCRATCHVAE_THREADS", "2")
    assert module._from_environment() == 2
    for unset in (" auto ", ""):  # a run picks its count from the free cores
        monkeypatch.setenv("SCRATCHVAE_THREADS", unset)
        assert module._from_environment() is None
    monkeypatch.delenv("SCRATCHVAE_THREADS")
    assert module._from_environment() is None
