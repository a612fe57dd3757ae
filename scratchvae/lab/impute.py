"""Filling in missing pixels with a trained VAE (or AE) by iterating encode / decode.

With mask m (True where a pixel is OBSERVED) and a first guess for the missing pixels:

    repeat n_iter times:
        z     ~ q(z | x_cur)            (sample=True: pseudo-Gibbs, Rezende et al. 2014)
        z     = mu(x_cur)               (sample=False: the mean-field / deterministic variant)
        x_hat = decode(z)               (probabilities or means, (B, D))
        x_cur = m * x + (1 - m) * x_hat  (observed pixels stay fixed)

(Rezende et al.'s chain draws x_hat ~ p(x | z) as well, a Markov chain over completions; this
one takes the decoder's mean.)

Each step moves the missing pixels towards what the model finds consistent with the observed
ones. With ``sample=True`` the answer is the average of ``x_hat`` over the last ``n_average``
steps. Both variants tend to settle on ONE plausible completion: when the observed pixels leave
room for several (the top half of a 7 or a 9), a wrong guess costs more squared error than a
blurred average.

:func:`impute_importance` estimates the conditional mean E[x_miss | x_obs] instead, by self-
normalised importance sampling over z, with q(z | x_cur) as the proposal (x_cur: the missing
pixels set to the mean image):

    z_k ~ q(z | x_cur),  log w_k = log p(x_obs | z_k) + log p(z_k) - log q(z_k | x_cur)
    x_miss = sum_k softmax(log w)_k * decode(z_k)_miss           (k = 1..K)

(p(z | x_obs) is proportional to p(x_obs | z) p(z); the weights correct for the proposal).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..backend import Backend, get_xp
from ..inputs import whole
from ..models import AE, VAE
from ..ops.iwae import why_not_finite
from ..ops.losses import log_normal_draw, log_standard_normal
from ..ops.reparam import reparam_forward

Array = Any

__all__ = [
    "impute",
    "impute_importance",
    "make_mask",
    "mean_fill",
    "masked_mse",
    "denoise",
    "MASKS",
]

MASKS = ("bottom-half", "top-half", "left-half", "right-half", "random")


def _fill_value(fill: float | Array, x: Array, name: str = "fill") -> Array:
    """The first guess for missing pixels as an array of x's dtype: a scalar (0.5), or an image
    (D,) such as the training set's mean, or one guess per example (B, D)."""
    fill = get_xp(x).asarray(fill, dtype=x.dtype)
    if fill.shape not in ((), (x.shape[1],), x.shape):
        raise ValueError(f"{name} must be a scalar, ({x.shape[1]},) or {x.shape}, got {fill.shape}")
    if not bool(get_xp(x).isfinite(fill).all()):  # a NaN guess: every imputed pixel NaN
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return fill


def _observed(mask: Array, x: Array) -> Array:
    """``mask`` as a boolean array of x's shape (True where observed): booleans, or the numbers
    0 and 1; anything else (NaN, 0.5) is a one-line ValueError, not silently "observed"."""
    xp = get_xp(x)
    m = xp.asarray(mask)
    if m.shape != x.shape:
        raise ValueError(f"mask must have the shape of x {tuple(x.shape)}, got {m.shape}")
    if m.dtype != bool and not bool(((m == 0) | (m == 1)).all()):
        raise ValueError("mask must be boolean (True where observed) or hold only 0 and 1")
    return m.astype(bool)


def _check_observed(x: Array, observed: Array) -> None:
    """The observed pixels must be finite (the missing ones may hold anything: NaN marks them)."""
    bad = int((observed & ~get_xp(x).isfinite(x)).sum())
    if bad:
        s = "" if bad == 1 else "s"
        raise ValueError(f"x has {bad} observed pixel{s} that {'is' if bad == 1 else 'are'} NaN "
                         "or inf; mark them missing (mask False) or give their values")  # fmt: skip


def _code(model: AE, x: Array, sample: bool, backend: Backend) -> Array:
    """z ~ q(z|x) (VAE, sample=True) or the deterministic code mu(x) / encode(x).   (B, L)"""
    if not isinstance(model, VAE):
        return model.encode(x)
    mu, logvar = model.encode(x)
    if not sample:
        return mu
    return reparam_forward(mu, logvar, backend.normal(mu.shape))[0]  # mu + exp(lv/2) eps


def impute(
    model: AE,
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
    Noise comes from ``backend`` (default: the model's). Observed pixels are returned as given;
    they must be finite, the missing ones may hold anything (NaN, say). ``mask``: booleans, or
    the numbers 0 and 1.
    """
    n_iter, n_average = whole(n_iter, "n_iter"), whole(n_average, "n_average")
    bk = backend or model.backend
    x = model.prepare(x)  # (B, D)
    xp = bk.xp
    observed = _observed(mask, x)
    _check_observed(x, observed)
    x_cur = xp.where(observed, x, _fill_value(fill, x))
    n_avg = min(n_average, n_iter) if sample else 1
    total = xp.zeros_like(x)
    for it in range(n_iter):
        x_hat = model.decode(_code(model, x_cur, sample, bk))  # (B, D)
        x_cur = xp.where(observed, x, x_hat)
        if it >= n_iter - n_avg:
            total += x_hat
    return xp.where(observed, x, total / n_avg)


def _softmax_over_samples(log_w: Array) -> Array:
    """The self-normalised weights w~_k = w_k / sum_j w_j of each example from log w (K, b):

        w~_k = exp(log w_k - m) / sum_j exp(log w_j - m),   m = max_j log w_j   (any m: it cancels)

    Shifting by the largest, not by logsumexp_j log w_j: that sum is rounded to the dtype at
    |log w|'s magnitude (float32 at |log w| = 1e6: to 0.06), and every weight inherits its
    error as one common factor, so the weights no longer sum to 1 (the estimate leaves the hull
    of the decoded means: a probability above 1). Here the largest term is exactly 1, the sum is
    in [1, K], and the weights sum to 1 within K rounding errors.

    A weight under the dtype's smallest number (float32: log w_k some 103 nats below the
    largest) is stored as 0. Provably harmless: it removes less than 2^-149 |m_k| from
    sum_k w~_k m_k, all such together less than K 2^-149 max_k |m_k|. For probabilities
    (|m_k| <= 1) that is under float32's smallest normal number 2^-126 for any K below 8e6,
    under the rounding of any result that is not itself subnormal; for means it reaches 1e-7
    only with some |m_k| above 7e37 / K (tests/lab/test_lab_precision.py compares with
    float64, which keeps them).

    An example whose largest log w_k is not finite has no weights: every log w_k -inf (every
    sample impossible under the model: z^2 or a log-likelihood beyond float32's range, from
    extreme parameters; 0/0), one +inf (a density beyond the dtype's range, e.g. eps^2 in
    log q; inf/inf), or NaN (a learned Gaussian variance under e^-88.7 at a pixel equal to
    its mean: 0 * inf). Each is an error, not a NaN estimate, in the words
    (:func:`~scratchvae.ops.iwae.why_not_finite`) ``scratchvae evaluate`` prints beside a
    bound that is not finite."""
    xp = get_xp(log_w)
    top = log_w.max(axis=0)  # (b,)  m, the largest log-weight of each example (NaN if one is)
    if not bool(xp.isfinite(top).all()):
        raise ValueError(f"importance imputation: {why_not_finite(top, log_w.shape[0])}")
    shifted = xp.exp(log_w - top)  # (K, b) in [0, 1], the largest exactly 1
    return shifted / shifted.sum(axis=0)


def _conditional_mean(model: VAE, x: Array, observed: Array, x_cur: Array, eps: Array) -> Array:
    """Self-normalised importance-sampling estimate of E[x | x_obs] for one block of examples.

    x, x_cur: (b, D); observed: (b, D) bool; eps: (K, b, L) -> (b, D)."""
    K, b, L = eps.shape
    mu, logvar = model.encode(x_cur)  # the proposal q(z | x_cur), (b, L) each
    z, _ = reparam_forward(mu, logvar, eps)  # (K, b, L)
    out = model.decoder.forward(model.params, z.reshape(K * b, L))[0].reshape(K, b, -1)
    # log p(x_obs | z): the missing pixels get decoder output 0 and target 0, which adds the
    # same constant to every sample's log-weight of an example, so it cancels in the softmax.
    m = observed.astype(x.dtype)
    if model.lik.kind == "gaussian-learned":
        m = get_xp(x).concatenate([m, m], axis=1)  # mask the [mean | logvar] output
    x_obs = get_xp(x).where(observed, x, 0)  # (not x * m: NaN marks a missing pixel)
    log_w = model.lik.log_prob(out * m, x_obs) + log_standard_normal(z)
    log_w = log_w - log_normal_draw(eps, logvar)  # (K, b)
    weights = _softmax_over_samples(log_w)  # (K, b)
    return (weights[:, :, None] * model.lik.mean(out.reshape(K * b, -1)).reshape(K, b, -1)).sum(0)


def impute_importance(
    model: VAE,
    x: Array,
    mask: Array,
    k: int = 200,
    n_iter: int = 0,
    fill: float | Array = 0.5,
    budget: int = 1 << 22,
    backend: Backend | None = None,
) -> Array:
    """Fill the missing pixels of x (B, D) (``mask`` True where observed) with the importance-
    sampling estimate of their conditional mean under the VAE, k samples per example.

    The proposal is q(z | x_cur), x_cur = x with its missing pixels set to ``fill`` (the
    training set's mean image works well), then ``n_iter`` deterministic (z = mu) iterations of
    :func:`impute`. No iteration (the default) keeps the proposal broad: iterating sharpens it
    around one completion, and the weights cannot recover the others. Work is chunked over
    examples so that a chunk holds at most ``budget`` floats of k * D decoder outputs."""
    if not isinstance(model, VAE):
        raise ValueError(f"importance imputation needs a VAE, got a {type(model).__name__}")
    k, n_iter = whole(k, "k"), whole(n_iter, "n_iter", 0)
    bk = backend or model.backend
    x = model.prepare(x)  # (B, D)
    observed = _observed(mask, x)
    _check_observed(x, observed)
    if n_iter > 0:
        x_cur = impute(model, x, observed, n_iter=n_iter, sample=False, fill=fill)
    else:
        x_cur = bk.xp.where(observed, x, _fill_value(fill, x))
    b = max(1, budget // (k * model.lik.n_out(model.n_features)))
    parts = []
    for start in range(0, x.shape[0], b):
        sl = slice(start, start + b)
        eps = bk.normal((k, x[sl].shape[0], model.latent))
        parts.append(_conditional_mean(model, x[sl], observed[sl], x_cur[sl], eps))
    return bk.xp.where(observed, x, bk.xp.concatenate(parts))


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
    bk, n = backend or Backend(), whole(n, "n", 0)
    if len(image_shape) != 2:
        raise ValueError(f"image_shape must be (height, width), got {tuple(image_shape)}")
    H, W = (whole(s, "image_shape's sizes") for s in image_shape)
    if kind == "random":
        if not 0.0 < missing < 1.0:
            raise ValueError(f"the missing fraction must be in (0, 1), got {missing}")
        return bk.uniform((n, H * W)) >= missing
    across = H if kind in ("bottom-half", "top-half") else W  # the size the mask halves
    if across < 2:  # half of one row is none or all of it: nothing hidden, or everything
        other = "left-half or right-half" if across == H else "bottom-half or top-half"
        raise ValueError(
            f"a {kind} mask halves {'the rows' if across == H else 'the columns'} of an image, "
            f"and these images are {H} x {W}; use {other}, or random"
        )
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
    return get_xp(x).where(_observed(mask, x), x, _fill_value(mean_image, x, "mean image"))


def masked_mse(x_filled: Array, x_true: Array, mask: Array) -> float:
    """Mean squared error over the MISSING pixels only (a host float; for reporting)."""
    xp = get_xp(x_filled)
    missing = ~_observed(mask, x_filled)
    n = int(missing.sum())
    if n == 0:
        raise ValueError("the mask hides no pixel: nothing was imputed")
    err = xp.where(missing, (x_filled - xp.asarray(x_true, dtype=x_filled.dtype)) ** 2, 0)
    return float(err.sum()) / n


def denoise(model: AE, x_noisy: Array) -> Array:
    """The model's reconstruction of a noisy input: decode(encode(x_noisy)) (z = mu for a VAE).

    A denoising AE was trained for exactly this; a plain AE or VAE also pulls a noisy input
    towards the data it has learned, less well."""
    return model.reconstruct(x_noisy)
