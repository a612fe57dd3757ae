"""Filling in missing pixels with a trained VAE (or AE) by iterating encode / decode.

With mask m (True where a pixel is OBSERVED) and a first guess for the missing pixels:

    repeat n_iter times:
        z     ~ q(z | x_cur)            (sample=True: pseudo-Gibbs, Rezende et al. 2014)
        z     = mu(x_cur)               (sample=False: the mean-field / deterministic variant)
        x_hat = decode(z)               (probabilities or means, (B, D))
        x_cur = m * x + (1 - m) * x_hat  (observed pixels stay fixed)

Each step moves the missing pixels towards what the model finds consistent with the observed
ones. With ``sample=True`` the answer is the average of ``x_hat`` over the last ``n_average``
steps (a Monte-Carlo estimate of the missing pixels' conditional mean).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .backend import Backend, get_xp
from .models import VAE, Model
from .reparam import reparam_forward

Array = Any

__all__ = ["impute", "make_mask", "mean_fill", "masked_mse", "denoise", "MASKS"]

MASKS = ("bottom-half", "top-half", "left-half", "right-half", "random")


def _fill_value(fill: float | Array, x: Array) -> Array | float:
    """The first guess for missing pixels: a scalar (0.5) or an image (D,), e.g. the mean."""
    if hasattr(fill, "shape"):
        fill = get_xp(x).asarray(fill, dtype=x.dtype)
        if fill.shape not in ((x.shape[1],), x.shape):
            raise ValueError(
                f"fill must be a scalar, ({x.shape[1]},) or {x.shape}, got {fill.shape}"
            )
    return fill


def _code(model: Model, x: Array, sample: bool, backend: Backend) -> Array:
    """z ~ q(z|x) (VAE, sample=True) or the deterministic code mu(x) / encode(x).   (B, L)"""
    if not isinstance(model, VAE):
        return model.encode(x)
    mu, logvar = model.encode(x)
    if not sample:
        return mu
    return reparam_forward(mu, logvar, backend.normal(mu.shape))[0]  # mu + exp(lv/2) eps


def impute(
    model: Model,
    x: Array,
    mask: Array,
    n_iter: int = 50,
    sample: bool = True,
    fill: float | Array = 0.5,
    n_average: int = 10,
    backend: Backend | None = None,
) -> Array:
    """Fill the pixels of x (B, D) where ``mask`` (B, D) is False; returns the filled (B, D).

    ``fill``: the first guess (0.5, or the training set's mean image (D,)). ``sample``: draw
    z ~ q(z|x) each step (pseudo-Gibbs) or use z = mu (deterministic). With sampling, the
    missing pixels are the mean of the decoded x_hat over the last ``n_average`` steps.
    Noise comes from ``backend`` (default: the model's). Observed pixels are returned as given.
    """
    if n_iter < 1 or n_average < 1:
        raise ValueError(f"n_iter and n_average must be >= 1, got {n_iter} and {n_average}")
    bk = backend or model.backend
    x = model._prepare(x)  # (B, D)
    xp = bk.xp
    observed = xp.asarray(mask, dtype=bool)
    if observed.shape != x.shape:
        raise ValueError(f"mask must have the shape of x {tuple(x.shape)}, got {observed.shape}")
    x_cur = xp.where(observed, x, _fill_value(fill, x))
    n_avg = min(n_average, n_iter) if sample else 1
    total = xp.zeros_like(x)
    for it in range(n_iter):
        x_hat = model.decode(_code(model, x_cur, sample, bk))  # (B, D)
        x_cur = xp.where(observed, x, x_hat)
        if it >= n_iter - n_avg:
            total += x_hat
    return xp.where(observed, x, total / n_avg)


def make_mask(
    n: int,
    image_shape: Sequence[int],
    kind: str = "bottom-half",
    missing: float = 0.5,
    backend: Backend | None = None,
) -> Array:
    """A boolean (n, H*W) mask, True where observed.

    ``bottom-half`` etc. hide half of each image; ``random`` hides each pixel independently
    with probability ``missing`` (drawn from ``backend``'s generator)."""
    if kind not in MASKS:
        raise ValueError(f"unknown mask {kind!r}; choose one of {', '.join(MASKS)}")
    bk = backend or Backend()
    H, W = (int(s) for s in image_shape)
    if kind == "random":
        if not 0.0 < missing < 1.0:
            raise ValueError(f"the missing fraction must be in (0, 1), got {missing}")
        return bk.uniform((n, H * W)) >= missing
    rows, cols = bk.xp.meshgrid(bk.xp.arange(H), bk.xp.arange(W), indexing="ij")  # (H, W)
    keep = {
        "bottom-half": rows < H // 2,  # the top is observed, the bottom missing
        "top-half": rows >= H // 2,
        "left-half": cols >= W // 2,
        "right-half": cols < W // 2,
    }[kind]
    return bk.xp.broadcast_to(keep.reshape(1, H * W), (n, H * W)).copy()


def mean_fill(x: Array, mask: Array, mean_image: Array) -> Array:
    """The baseline: missing pixels set to the training set's mean image (D,)."""
    xp = get_xp(x)
    return xp.where(xp.asarray(mask, dtype=bool), x, xp.asarray(mean_image, dtype=x.dtype))


def masked_mse(x_filled: Array, x_true: Array, mask: Array) -> float:
    """Mean squared error over the MISSING pixels only (a host float; for reporting)."""
    xp = get_xp(x_filled)
    missing = ~xp.asarray(mask, dtype=bool)
    n = int(missing.sum())
    if n == 0:
        raise ValueError("the mask hides no pixel: nothing was imputed")
    err = xp.where(missing, (x_filled - xp.asarray(x_true, dtype=x_filled.dtype)) ** 2, 0)
    return float(err.sum()) / n


def denoise(model: Model, x_noisy: Array) -> Array:
    """The model's reconstruction of a noisy input: decode(encode(x_noisy)) (z = mu for a VAE).

    A denoising AE was trained for exactly this; a plain AE or VAE also pulls a noisy input
    towards the data it has learned, less well."""
    return model.reconstruct(x_noisy)
