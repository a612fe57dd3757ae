"""Losses, each a forward (value) and a hand-written backward (gradient).

Reduction, everywhere: SUM over features, MEAN over the batch, so every value is in nats per
example (as in the published VAE numbers). Backward returns dL/d(input) for that reduced L,
hence the 1/B factors. Shapes: B examples, D features (pixels), L latent units, H hidden units.
"""

from __future__ import annotations

import math
from typing import Any

from . import compiled
from .backend import cupy_kernel, cupy_sum_kernel, get_special, get_xp, is_cupy

Array = Any

LOG_2PI = math.log(2.0 * math.pi)


# ---------------------------------------------------------------------------- Bernoulli NLL
def bernoulli_nll(logits: Array, x: Array) -> Array:
    """-log p(x | logits) for Bernoulli pixels, on LOGITS l (never on clipped probabilities).

    -log p = -[x log s(l) + (1-x) log(1 - s(l))] = softplus(l) - x * l     (s = sigmoid)
    logits, x: (B, D); x in [0, 1] (grey levels allowed). Returns a scalar: sum_D, mean_B.
    """
    B = logits.shape[0]
    per_pixel = get_special(logits).softplus(logits) - x * logits
    return per_pixel.sum() / B


def bernoulli_nll_backward(logits: Array, x: Array) -> Array:
    """dL/dlogits = (sigmoid(l) - x) / B      (d softplus(l)/dl = sigmoid(l)).  (B, D)"""
    B = logits.shape[0]
    return (get_special(logits).expit(logits) - x) / B


# The same two functions, fast: one softplus pass shared by the value and the gradient.
# Same numbers to rounding (tests/test_fastpath.py); the models' training step uses these.
def bernoulli_nll_with_softplus(
    logits: Array, x: Array, out: Array | None = None, work: Array | None = None
) -> tuple[Array, Array]:
    """:func:`bernoulli_nll` and softplus(l) (B, D), the cache of the fast backward.

    sum_{B,D} [softplus(l) - x l] / B = (sum softplus(l) - <x, l>) / B    (<,> a BLAS dot)
    ``out`` (B, D), when given, receives softplus(l); ``work`` (B, D) is scratch for it.
    """
    xp = get_xp(logits)
    sp = get_special(logits).softplus(logits, out=out, work=work)  # (B, D)
    return (sp.sum() - xp.vdot(x, logits)) / logits.shape[0], sp


def bernoulli_nll_backward_from_softplus(
    logits: Array, x: Array, sp: Array, out: Array | None = None
) -> Array:
    """dL/dlogits = (sigmoid(l) - x) / B with sigmoid(l) = exp(l - softplus(l)).  (B, D)

    One exp instead of expit, reusing the forward's softplus: l - softplus(l) = log sigmoid(l)
    <= 0, so the exp cannot overflow, and small sigmoids keep their relative precision.
    On CuPy the whole chain is one fused kernel. ``out`` (B, D) may be ``sp`` itself.
    """
    B = logits.shape[0]
    if is_cupy(logits):
        kernel = cupy_kernel(
            "scratchvae_bce_grad", "T l, T x, T sp, T inv_b", "T d", "d = (exp(l - sp) - x) * inv_b"
        )
        inv_b = logits.dtype.type(1.0 / B)
        return kernel(logits, x, sp, inv_b) if out is None else kernel(logits, x, sp, inv_b, out)
    xp = get_xp(logits)
    d = xp.subtract(logits, sp, out=out)  # log sigmoid(l)
    xp.exp(d, out=d)  # sigmoid(l)
    d -= x
    d *= 1.0 / B
    return d


def bernoulli_nll_and_grad(
    logits: Array, x: Array, out: Array | None = None, work: Array | None = None
) -> tuple[Array, Array]:
    """:func:`bernoulli_nll` and :func:`bernoulli_nll_backward` at once: the training step's
    form (the gradient needs nothing from later in the network, so the forward computes it).

    Returns (loss, dL/dlogits (B, D)): the two functions above, sharing their softplus.
    ``out`` receives the gradient, ``work`` (2, B, D) is scratch; both allocated when not given.
    With Numba, :func:`scratchvae.compiled.bernoulli_nll_and_grad` does it all in one compiled
    pass, exp and log1p included, and ``work`` is not used (:func:`bernoulli_work_needed`).
    """
    xp = get_xp(logits)
    out = xp.empty_like(logits) if out is None else out
    if is_cupy(logits):  # GPU: the loss as one reduction, the gradient as one kernel
        return _cupy_bernoulli_nll_and_grad(logits, x, out)
    if work is not None and work.shape != (2, *logits.shape):
        raise ValueError(f"work must have shape (2, *logits.shape), got {tuple(work.shape)}")
    if compiled.bernoulli_applies(logits, x, out):
        return compiled.bernoulli_nll_and_grad(logits, x, out), out
    loss, sp = bernoulli_nll_with_softplus(
        logits, x, out=out, work=None if work is None else work[0]
    )
    return loss, bernoulli_nll_backward_from_softplus(logits, x, sp, out=sp)


def bernoulli_work_needed(logits: Array) -> bool:
    """Whether :func:`bernoulli_nll_and_grad` would use a ``work`` buffer for these logits:
    only NumPy's path does (not CuPy's kernels, nor the compiled one, which keeps exp and log1p
    in registers)."""
    return not is_cupy(logits) and not compiled.bernoulli_applies(logits)


def _cupy_bernoulli_nll_and_grad(logits: Array, x: Array, out: Array) -> tuple[Array, Array]:
    """CuPy: sum [softplus(l) - x l] / B in one reduction, (sigmoid(l) - x) / B in one kernel.
    softplus(l) = max(l, 0) + log1p(exp(-|l|)); sigmoid(l) = 1/(1 + e) or e/(1 + e), e = exp(-|l|)
    (no overflow either way)."""
    inv_b = logits.dtype.type(1.0 / logits.shape[0])
    loss = cupy_sum_kernel(
        "scratchvae_bernoulli_nll",
        "T l, T x, T inv_b",
        "max(l, (T)0) + log1p(exp(-fabs(l))) - x * l",
        "a * inv_b",
    )(logits, x, inv_b, axis=1).sum()  # per row, then the B row sums
    grad = cupy_kernel(
        "scratchvae_bernoulli_grad",
        "T l, T x, T inv_b",
        "T d",
        "T e = exp(-fabs(l)); d = ((l >= (T)0 ? (T)1 : e) / ((T)1 + e) - x) * inv_b",
    )
    return loss, grad(logits, x, inv_b, out)


# ---------------------------------------------------------------------------- Gaussian NLL
def gaussian_nll(mean: Array, x: Array, logvar: Array | float) -> Array:
    """-log N(x; mean, exp(logvar)), sum over D, mean over B.

    -log p = 0.5 * [ (x - mean)^2 / exp(logvar) + logvar + log(2 pi) ]   per feature
    mean, x: (B, D); logvar: (B, D) when learned, or a float for a fixed variance.
    """
    B, D = mean.shape
    learned = hasattr(logvar, "shape")
    sq = (x - mean) ** 2 * _inv_var(mean, logvar)
    logvar_sum = logvar.sum() if learned else B * D * logvar
    return 0.5 * (sq.sum() + logvar_sum) / B + 0.5 * D * LOG_2PI


def _inv_var(mean: Array, logvar: Array | float) -> Array | float:
    """exp(-logvar): an array for a learned variance, a Python float for a fixed one (a float
    keeps float32 arrays float32)."""
    return get_xp(mean).exp(-logvar) if hasattr(logvar, "shape") else math.exp(-logvar)


def gaussian_nll_backward(
    mean: Array, x: Array, logvar: Array | float
) -> tuple[Array, Array | None]:
    """Returns (dmean, dlogvar); dlogvar is None for a fixed variance.

    dL/dmean   = (mean - x) / exp(logvar) / B
    dL/dlogvar = 0.5 * (1 - (x - mean)^2 / exp(logvar)) / B
    """
    B = mean.shape[0]
    inv_var = _inv_var(mean, logvar)
    dmean = (mean - x) * inv_var / B
    if not hasattr(logvar, "shape"):
        return dmean, None
    dlogvar = 0.5 * (1 - (x - mean) ** 2 * inv_var) / B
    return dmean, dlogvar


# ---------------------------------------------------------------------------- squared error
def squared_error(y: Array, x: Array) -> Array:
    """sum_D (y - x)^2, mean over B.  (The 'MSE' of an AE, reduced like every other loss.)"""
    return ((y - x) ** 2).sum() / y.shape[0]


def squared_error_backward(y: Array, x: Array) -> Array:
    """dL/dy = 2 (y - x) / B.   (B, D)"""
    return 2 * (y - x) / y.shape[0]


# ---------------------------------------------------------------------------- Gaussian KL
def gaussian_kl(mu: Array, logvar: Array) -> Array:
    """KL( N(mu, diag(exp(logvar))) || N(0, I) ), sum over L, mean over B.

    KL = 0.5 * sum_L ( mu^2 + exp(logvar) - logvar - 1 )         mu, logvar: (B, L)
    """
    if is_cupy(mu):  # the same sum as one GPU reduction
        kernel = cupy_sum_kernel(
            "scratchvae_gaussian_kl",
            "T mu, T lv, T scale",
            "mu * mu + exp(lv) - lv - (T)1",
            "a * scale",
        )
        return kernel(mu, logvar, mu.dtype.type(0.5 / mu.shape[0]), axis=1).sum()
    xp = get_xp(mu)
    return 0.5 * (mu * mu + xp.exp(logvar) - logvar - 1).sum() / mu.shape[0]


def gaussian_kl_backward(mu: Array, logvar: Array) -> tuple[Array, Array]:
    """dKL/dmu = mu / B,   dKL/dlogvar = 0.5 * (exp(logvar) - 1) / B.   Each (B, L)."""
    xp = get_xp(mu)
    B = mu.shape[0]
    return mu / B, 0.5 * (xp.exp(logvar) - 1) / B


# ---------------------------------------------------------------------------- sparsity KL
def sparsity_kl(h: Array, rho: float = 0.05) -> Array:
    """Sparse-AE penalty sum_j KL(rho || rho_hat_j), rho_hat_j = mean_B h_j (h in (0, 1)).

    KL(rho || r) = rho log(rho / r) + (1 - rho) log((1 - rho) / (1 - r))     h: (B, H)
    A batch-level penalty (not per example); multiply by the weight beta outside.
    """
    xp = get_xp(h)
    r = h.mean(axis=0)  # (H,)
    return (rho * xp.log(rho / r) + (1 - rho) * xp.log((1 - rho) / (1 - r))).sum()


def sparsity_kl_backward(h: Array, rho: float = 0.05) -> Array:
    """dP/dh_bj = (-rho / r_j + (1 - rho) / (1 - r_j)) / B  for every b.   (B, H)"""
    B = h.shape[0]
    r = h.mean(axis=0)
    d_r = -rho / r + (1 - rho) / (1 - r)  # (H,)
    return get_xp(h).broadcast_to(d_r / B, h.shape)
