"""The user's own arrays, as a user holds real digits: MNIST as uint8 (N, 28, 28) arrays
straight from an archive, trained with fit and scored with evaluate (skipped where the real
MNIST under /work/shared is absent; nothing reads that path but these tests)."""

from __future__ import annotations

import numpy as np
import pytest
from idx_helpers import SHARED

from scratchvae import VAE, Backend, TrainConfig, fit
from scratchvae.data import dataset_from_array
from scratchvae.evaluate import evaluate


@pytest.fixture(scope="module")
def mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    path = SHARED / "data" / "mnist" / "mnist-test.npz"
    if not path.is_file():
        pytest.skip(f"real MNIST not available under {SHARED}")
    with np.load(path) as z:
        return z["x"], z["y"]


def test_fit_and_evaluate_take_the_same_uint8_images(mnist_arrays) -> None:
    """evaluate refused the uint8 images fit had trained on (and (N, H, W) images)."""
    x, _ = mnist_arrays
    assert x.dtype == np.uint8 and x.shape[1:] == (28, 28)
    train, test = x[:1000], x[9000:9500]
    model = VAE(784, hidden=[32], latent=2, backend=Backend("numpy", "float32", seed=0))
    history = fit(model, train, TrainConfig(epochs=1, batch_size=100, progress=False))
    assert history[-1]["train_loss"] < 543.5  # below 784 log 2 (a coin per pixel) after one epoch
    got = evaluate(model, test, iw_samples=5)
    assert got == evaluate(model, dataset_from_array(test), iw_samples=5)
    flat = test.reshape(len(test), -1) / np.float32(255)
    assert got == evaluate(model, flat, iw_samples=5)
    assert 0 < got["neg_elbo"] < 543.5 and got["iw_nll"] <= got["neg_elbo"] + 1e-3
