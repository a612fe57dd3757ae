"""What the models are for, checked where a gradient check cannot see: the corruption's and
dropout's moments over many draws, a VAE's samples (the decoder of z ~ N(0, I)), the sparse
AE's mean activation after training on the digits, and the linear AE's principal subspace
(principal angles, not only the loss)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import subspace_angles

from scratchvae.autoencoders import DenoisingAE, SparseAE
from scratchvae.backend import Backend
from scratchvae.data import load_dataset
from scratchvae.models import AE, VAE
from scratchvae.optim import Adam


# ------------------------------------------------------------------ corruption and dropout
def test_gaussian_corruption_has_mean_zero_and_variance_sigma_squared() -> None:
    """x~ - x = sigma n: over 200k draws the mean is 0 and the variance sigma^2 (6-sigma bounds:
    sd of the mean sigma / sqrt(N), of the variance sigma^2 sqrt(2 / N)); pixels independent."""
    sigma, B, D = 0.7, 20_000, 10
    model = DenoisingAE(D, (4,), 2, noise="gaussian", noise_level=sigma,
                        backend=Backend("numpy", "float64", seed=1))  # fmt: skip
    x = np.full((B, D), 0.25)
    d = model.corrupt(x) - x
    N = d.size
    assert abs(d.mean()) < 6 * sigma / np.sqrt(N)
    assert abs(d.var() - sigma**2) < 6 * sigma**2 * np.sqrt(2 / N)
    corr = np.corrcoef(d[:, 0], d[:, 1])[0, 1]
    assert abs(corr) < 6 / np.sqrt(B)


def test_masking_corruption_keeps_1_minus_p_of_the_pixels_unscaled() -> None:
    """x~ = x * m, m ~ Bernoulli(1 - p): the kept pixels are x itself (no 1/(1-p), as the
    docstring says), so E[x~] = (1 - p) x; and each row gets its own mask."""
    p, B, D = 0.4, 20_000, 10
    model = DenoisingAE(D, (4,), 2, noise="mask", noise_level=p,
                        backend=Backend("numpy", "float64", seed=2))  # fmt: skip
    x = np.full((B, D), 0.8)
    xt = model.corrupt(x)
    assert set(np.unique(xt)) == {0.0, 0.8}
    keep = (xt > 0).mean()
    assert abs(keep - (1 - p)) < 6 * np.sqrt(p * (1 - p) / xt.size)
    assert not np.array_equal(xt[0], xt[1]) or not np.array_equal(xt[1], xt[2])


def test_dropout_in_training_is_unbiased_for_the_evaluation_forward() -> None:
    """Inverted dropout: the masks a model draws keep 1 - p of the units at 1/(1 - p), so the
    mean over many training forwards of a layer's output equals the evaluation forward's (a
    linear net: exactly in expectation). 4000 draws, 6-sigma bound from the draws' own sd."""
    bk = Backend("numpy", "float64", seed=3)
    p, n = 0.3, 4000
    model = AE(5, (6,), 3, activation="identity", dropout=p, backend=bk)
    x = np.tile(bk.uniform((1, 5)), (n, 1))
    noise = model.draw_noise(n)
    mask = noise["encoder.0.dropout"]
    assert set(np.unique(mask)) == {0.0, 1 / (1 - p)}
    assert abs((mask > 0).mean() - (1 - p)) < 6 * np.sqrt(p * (1 - p) / mask.size)
    code_train = model.encoder.forward(model.params, x, noise)[0]  # (n, 3)
    code_eval = model.encode(x[:1])[0]
    sd = code_train.std(axis=0) / np.sqrt(n)
    assert (np.abs(code_train.mean(axis=0) - code_eval) < 6 * sd + 1e-12).all()


# ------------------------------------------------------------------ a VAE's samples
def test_vae_samples_are_the_decoder_of_standard_normal_codes() -> None:
    """A linear Gaussian decoder x = z W + b with z ~ N(0, I) has mean b and covariance W^T W:
    the decoded samples (sample() returns decoder means) show both (50k samples; a sampler
    using another scale, or a mean other than 0, fails); sample(n) is decode of n draws of the
    model's generator."""
    bk = Backend("numpy", "float64", seed=4)
    model = VAE(4, hidden=(), latent=2, activation="identity", likelihood="gaussian", backend=bk)
    W = np.array([[1.0, -0.5, 0.0, 2.0], [0.3, 0.8, -1.2, 0.0]])
    b = np.array([0.5, -1.0, 0.0, 2.0])
    model.params["decoder.0.W"][...] = W
    model.params["decoder.0.b"][...] = b
    n = 50_000
    s = model.sample(n)
    assert s.shape == (n, 4)
    se = np.sqrt(np.diag(W.T @ W) / n)
    assert (np.abs(s.mean(axis=0) - b) < 6 * se).all()
    np.testing.assert_allclose(np.cov(s.T), W.T @ W, atol=0.05)
    same = Backend("numpy", "float64", seed=9)
    model.backend = same
    a = model.sample(3)
    z = Backend("numpy", "float64", seed=9).normal((3, 2))
    np.testing.assert_array_equal(a, model.decode(z))


# ------------------------------------------------------------------ the sparse AE on the digits
def test_sparse_ae_training_brings_the_mean_activation_near_rho() -> None:
    """rho = 0.05, beta = 3, 60 epochs of Adam on the embedded digits: the mean activation on
    the test set comes out near 5% (measured 0.066; every unit under 0.15), where the same
    model with beta = 0 has about half its units on (measured 0.53)."""
    bk = Backend("numpy", "float32", seed=0)
    x = bk.asarray(load_dataset("digits", "train").x)  # (1500, 64)
    x_test = bk.asarray(load_dataset("digits", "test").x)
    means = {}
    for beta in (3.0, 0.0):
        model = SparseAE(64, (), 64, rho=0.05, beta=beta, backend=bk)
        opt = Adam(3e-3)
        for _ in range(60):
            perm = bk.permutation(x.shape[0])
            for i in range(0, x.shape[0], 100):
                opt.step(model.params, model.loss_and_grads(x[perm[i : i + 100]])[1])
        h = model.encode(x_test)  # (297, 64), in (0, 1)
        means[beta] = (float(h.mean()), float(h.mean(axis=0).max()))
    assert 0.03 < means[3.0][0] < 0.09 and means[3.0][1] < 0.15, means
    assert means[0.0][0] > 0.3, means


# ------------------------------------------------------------------ the linear AE and PCA
def _low_rank_data(seed: int, n: int = 2000, D: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Centred data with variances 9, 4, 2.5 along three random orthonormal axes and 0.3 .. 0.05
    along the rest (a clear gap after the third), and its top-3 principal axes (D, 3)."""
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.normal(size=(D, D)))[0]
    sd = np.sqrt([9.0, 4.0, 2.5, 0.3, 0.2, 0.1, 0.08, 0.05][:D])
    x = (rng.normal(size=(n, D)) * sd) @ Q.T
    x -= x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x, vt[:3].T


def test_linear_ae_decoder_spans_the_principal_subspace() -> None:
    """AE(D, hidden=(), activation="identity", likelihood="mse"), full-batch Adam: the rows of
    the decoder's W span the top-3 principal subspace (largest principal angle under 1e-6
    degrees; a subspace one axis off is ~90 degrees away), its error per example is PCA's
    (the discarded variance), although W itself is not orthonormal."""
    x, pcs = _low_rank_data(0)
    model = AE(8, hidden=(), latent=3, activation="identity", likelihood="mse",
               backend=Backend("numpy", "float64", seed=5))  # fmt: skip
    opt, steps, lr = Adam(3e-2), 3000, 3e-2  # cosine-decayed, as examples/linear_ae_pca.py
    for t in range(steps):
        opt.lr = 1e-5 + 0.5 * (lr - 1e-5) * (1 + np.cos(np.pi * t / steps))
        opt.step(model.params, model.loss_and_grads(x)[1])
    W_d = model.params["decoder.0.W"]  # (3, 8)
    angles = np.degrees(subspace_angles(W_d.T, pcs))
    assert angles.max() < 1e-6, angles  # measured 7e-12
    sv = np.linalg.svd(x, compute_uv=False)
    pca_error = (sv[3:] ** 2).sum() / len(x)
    assert float(model.loss(x)["loss"]) == pytest.approx(pca_error, rel=1e-9)
    gram = W_d @ W_d.T
    assert np.abs(gram - np.diag(np.diag(gram))).max() > 1e-3  # not the principal axes
    # the check can fail: the top-2 axes and the 4th are a 3-subspace ~90 degrees away
    other = np.column_stack([pcs[:, :2], np.linalg.svd(x, full_matrices=False)[2][3]])
    assert np.degrees(subspace_angles(other, pcs)).max() > 80
