"""Issue 15, item 4, for every model kind the batch split serves: the split step gives the
serial step's loss and gradients (float64 to 1e-12, float32 to rounding) for several thread
counts, odd batches, chunks of one row, a batch of fewer rows than threads, a KL weight below
beta (a warm-up's step); and the same numbers for the same seed twice, at the split's real
chunk size too. (tests/test_parallel.py has the split's parts and the sparse AE, never split.)"""

from __future__ import annotations

import importlib

import numpy as np  # numpy-boundary: comparing host arrays
import pytest

from scratchvae.autoencoders import DenoisingAE
from scratchvae.backend import Backend, row_chunks, threads
from scratchvae.models import AE, VAE
from scratchvae.optim import Adam

threads_module = importlib.import_module("scratchvae.backend.threads")

# every model the split serves (rows_independent), each noise it draws
MODELS = {
    "ae-dropout": (AE, {"dropout": 0.2}),
    "ae-gaussian": (AE, {"likelihood": "gaussian", "decoder_std": 0.3}),
    "dae-gaussian": (DenoisingAE, {}),
    "dae-mask": (DenoisingAE, {"noise": "mask", "dropout": 0.1}),
    "vae": (VAE, {}),
    "vae-gaussian": (VAE, {"likelihood": "gaussian", "decoder_std": 0.1}),
    "vae-k3-dropout": (VAE, {"k": 3, "dropout": 0.2}),
    "vae-stl": (VAE, {"estimator": "stl"}),  # eps (1, B, L): the k log-weights path, k = 1
    "iwae-stl": (VAE, {"objective": "iwae", "k": 3, "estimator": "stl"}),
    "iwae-dreg": (VAE, {"objective": "iwae", "k": 4, "estimator": "dreg", "dropout": 0.1}),
}
# (rows, threads, MIN_ROWS): odd chunks; one row a chunk; fewer rows than threads
SPLITS = [(23, 2, 3), (23, 3, 3), (23, 7, 3), (7, 7, 1), (5, 8, 1), (6, 4, 1)]


def _model(name: str, dtype: str, seed: int = 0):
    cls, kw = MODELS[name]
    return cls(20, hidden=[7], latent=3, backend=Backend("numpy", dtype, seed=seed), **kw)


def _step(model, x, noise, n_threads, kl_weight):
    with threads(n_threads):
        terms, grads = model.loss_and_grads(x, noise, kl_weight)
        return {k: float(v) for k, v in terms.items()}, grads.flat.copy()


def _kl_weight(model):
    return None if model.kl_beta is None else 0.3  # a warm-up's weight, below beta (1)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_kind_splits_to_the_serial_step_float64(name, kernels, monkeypatch):
    model = _model(name, "float64")
    for rows, n, min_rows in SPLITS:
        monkeypatch.setattr(threads_module, "MIN_ROWS", min_rows)
        x = model.backend.uniform((rows, 20))
        noise, w = model.draw_noise(rows), _kl_weight(model)
        with threads(n):
            chunks = row_chunks(rows)
        assert chunks is not None and len(chunks) == min(n, rows // min_rows)
        terms, grads = _step(model, x, noise, 1, w)
        t, g = _step(model, x, noise, n, w)
        where = f"{rows} rows on {n} threads"
        np.testing.assert_allclose(
            g, grads, rtol=1e-12, atol=1e-12 * np.abs(grads).max(), err_msg=where
        )
        assert t.keys() == terms.keys()
        for k in terms:
            assert abs(t[k] - terms[k]) <= 1e-12 * max(1.0, abs(terms[k])), (k, where)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_kind_splits_to_the_serial_step_float32_to_rounding(name, monkeypatch):
    monkeypatch.setattr(threads_module, "MIN_ROWS", 3)
    model = _model(name, "float32")
    x = model.backend.uniform((41, 20))
    noise, w = model.draw_noise(41), _kl_weight(model)
    terms, grads = _step(model, x, noise, 1, w)
    scale = np.abs(grads).max()
    for n in (2, 3, 5, 13):
        t, g = _step(model, x, noise, n, w)
        # a few float32 roundings (eps 1.2e-7; 3e-7 seen): the split's sum in another order
        assert np.abs(g - grads).max() <= 2e-6 * scale, n
        for k in terms:
            assert abs(t[k] - terms[k]) <= 2e-6 * max(1.0, abs(terms[k])), (k, n)


@pytest.mark.parametrize("name", list(MODELS))
def test_the_real_split_is_the_serial_step_and_repeats_from_a_seed(name):
    # chunks of the real size (MIN_ROWS 128): 2 * 128 + 1 rows on 2 threads, 3 * 128 + 2 on 3
    def run(n_threads: int, rows: int) -> np.ndarray:
        model, opt = _model(name, "float64", seed=5), Adam(1e-2)
        x = model.backend.uniform((rows, 20))
        with threads(n_threads):
            for _ in range(3):  # the noise drawn in the step, from the model's generator
                opt.step(model.params, model.loss_and_grads(x, kl_weight=_kl_weight(model))[1])
        return model.params.flat.copy()

    for n, rows in ((2, 2 * threads_module.MIN_ROWS + 1), (3, 3 * threads_module.MIN_ROWS + 2)):
        with threads(n):
            assert len(row_chunks(rows)) == n
        split = run(n, rows)
        np.testing.assert_array_equal(run(n, rows), split)  # the same seed twice: bit for bit
        np.testing.assert_allclose(split, run(1, rows), rtol=1e-10, atol=1e-12)
